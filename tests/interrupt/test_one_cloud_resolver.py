"""The durability check and the notice watchers ask one resolver (spotsafe.cloud), so they
never disagree about which cloud this machine is on."""

from __future__ import annotations

from pathlib import Path

import pytest

from spotsafe import cloud
from spotsafe.cloud import Cloud, resolve_cloud
from spotsafe.errors import ConfigError
from spotsafe.interrupt import AwsWatcher, GcpWatcher, watchers_from_env
from spotsafe.storage.ephemeral import Durability, classify_location

from .metadata_servers import AwsImds, closed_port_url

ROOT = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard\n"


def both(env: dict[str, str], dmi: Path) -> tuple[Cloud | None, list[type]]:
    """What the durability check and the watchers concluded from the same machine."""
    verdict = classify_location("/tmp/run", mountinfo_text=ROOT, env=env, sys_class_dmi=dmi,
                                sys_block=dmi / "none", dev_disk=dmi / "none")  # fmt: skip
    watchers = watchers_from_env(env, sys_class_dmi=dmi)
    return verdict.cloud, [type(w) for w in watchers]


def test_a_metadata_service_behind_hidden_firmware_counts_for_both(
    aws_imds: AwsImds, tmp_path: Path
) -> None:
    # A container that hides /sys/class/dmi on an AWS VM: the watchers found AWS by probing,
    # while the durability check (firmware only) called it no cloud and let /tmp pass.
    closed = closed_port_url()
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": aws_imds.url,
           "GCE_METADATA_HOST": closed.removeprefix("http://"),
           "SPOTSAFE_AZURE_METADATA_ENDPOINT": closed}  # fmt: skip
    assert both(env, tmp_path / "no-dmi") == (Cloud.AWS, [AwsWatcher])
    verdict = classify_location("/tmp/run", mountinfo_text=ROOT, env=env,
                                sys_class_dmi=tmp_path / "no-dmi")  # fmt: skip
    assert verdict.kind is Durability.EPHEMERAL


def test_firmware_that_names_a_cloud_counts_for_both(tmp_path: Path) -> None:
    # A GCP VM whose metadata service does not answer this process (blocked by a network
    # policy): the durability check said GCP, the watchers found nothing to watch.
    dmi = tmp_path / "dmi"
    dmi.mkdir()
    (dmi / "product_name").write_text("Google Compute Engine\n")
    closed = closed_port_url()
    env = {"AWS_EC2_METADATA_SERVICE_ENDPOINT": closed,
           "GCE_METADATA_HOST": closed.removeprefix("http://"),
           "SPOTSAFE_AZURE_METADATA_ENDPOINT": closed}  # fmt: skip
    assert both(env, dmi) == (Cloud.GCP, [GcpWatcher])


@pytest.mark.parametrize("value", ["ibm", "aws,gcp"])
def test_a_bad_value_is_the_same_error_for_both(value: str, tmp_path: Path) -> None:
    messages = []
    for ask in (
        lambda: classify_location("/x", mountinfo_text=ROOT, env={"SPOTSAFE_CLOUD": value}),
        lambda: watchers_from_env({"SPOTSAFE_CLOUD": value}),
    ):
        with pytest.raises(ConfigError) as info:
            ask()
        messages.append(str(info.value))
    assert messages[0] == messages[1]
    assert f"SPOTSAFE_CLOUD={value!r}" in messages[0]
    assert "aws, gcp, azure, none, auto" in messages[0]


def test_the_process_environment_is_probed_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    closed = closed_port_url()
    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", closed)
    monkeypatch.setenv("GCE_METADATA_HOST", closed.removeprefix("http://"))
    monkeypatch.setenv("SPOTSAFE_AZURE_METADATA_ENDPOINT", closed)
    monkeypatch.delenv("SPOTSAFE_CLOUD", raising=False)
    probes: list[object] = []

    def counting(env: object, *, timeout_s: float = 0.3) -> Cloud:
        probes.append(env)
        return Cloud.NONE

    monkeypatch.setattr(cloud, "probe_metadata", counting)
    no_dmi = tmp_path / "no-dmi"
    for _ in range(3):
        assert resolve_cloud(sys_class_dmi=no_dmi) is Cloud.NONE
        assert watchers_from_env(sys_class_dmi=no_dmi) == []
    assert len(probes) == 1
    # Another environment (a caller's mapping) is asked afresh: it may name other endpoints.
    assert resolve_cloud(env={}, sys_class_dmi=no_dmi) is Cloud.NONE
    assert len(probes) == 2
