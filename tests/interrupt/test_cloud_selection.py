"""SPOTSAFE_CLOUD picks the watcher; auto probes and finds the cloud, or none."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from spotsafe.errors import ConfigError
from spotsafe.interrupt import (
    AwsWatcher,
    AzureWatcher,
    GcpWatcher,
    StopFileWatcher,
    detect_cloud,
    watchers_from_env,
)

from .metadata_servers import AwsImds, AzureImds, GcpMetadata, closed_port_url

# The firmware of a machine that names no cloud: `auto` then probes the services below, on
# a laptop and on a cloud VM alike.
NO_FIRMWARE = Path("/nonexistent/sys/class/dmi/id")


def env_for(aws: str, gcp_host: str, azure: str, **extra: str) -> dict[str, str]:
    return {
        "AWS_EC2_METADATA_SERVICE_ENDPOINT": aws,
        "GCE_METADATA_HOST": gcp_host,
        "SPOTSAFE_AZURE_METADATA_ENDPOINT": azure,
        **extra,
    }


def nowhere(**extra: str) -> dict[str, str]:
    closed = closed_port_url()
    return env_for(closed, closed.removeprefix("http://"), closed, **extra)


def test_auto_finds_nothing_quickly_when_nothing_answers() -> None:
    started = time.monotonic()
    assert detect_cloud(nowhere()) == "none"
    assert watchers_from_env(nowhere(), sys_class_dmi=NO_FIRMWARE) == []
    assert time.monotonic() - started < 2.0


def test_auto_gives_up_on_a_silent_service_within_the_probe_timeout() -> None:
    with AwsImds() as silent:
        silent.delay_s = 10.0
        started = time.monotonic()
        cloud = detect_cloud(env_for(silent.url, silent.host, silent.url), probe_timeout_s=0.2)
        assert cloud == "none"
        assert time.monotonic() - started < 1.5


def test_auto_picks_aws(aws_imds: AwsImds) -> None:
    closed = closed_port_url()
    env = env_for(aws_imds.url, closed.removeprefix("http://"), closed)
    (w,) = watchers_from_env(env, sys_class_dmi=NO_FIRMWARE)
    assert isinstance(w, AwsWatcher) and w.endpoint == aws_imds.url


def test_auto_picks_gcp(gcp_metadata: GcpMetadata) -> None:
    # GCP's server answers the AWS and Azure probes too (404 with Metadata-Flavor): not them.
    env = env_for(gcp_metadata.url, gcp_metadata.host, gcp_metadata.url)
    (w,) = watchers_from_env(env, sys_class_dmi=NO_FIRMWARE)
    assert isinstance(w, GcpWatcher)
    assert w.base == f"http://{gcp_metadata.host}/computeMetadata/v1/"


def test_auto_picks_azure(azure_imds: AzureImds) -> None:
    env = env_for(azure_imds.url, azure_imds.host, azure_imds.url)  # AWS's PUT gets a 400 there
    (w,) = watchers_from_env(env, sys_class_dmi=NO_FIRMWARE)
    assert isinstance(w, AzureWatcher) and w.endpoint == azure_imds.url


@pytest.mark.parametrize(
    ("value", "kind"), [("aws", AwsWatcher), ("GCP", GcpWatcher), (" azure ", AzureWatcher)]
)
def test_explicit_choice_does_not_probe(value: str, kind: type) -> None:
    (w,) = watchers_from_env(nowhere(SPOTSAFE_CLOUD=value))
    assert isinstance(w, kind)


def test_none_and_stop_file(tmp_path: Path) -> None:
    env = nowhere(SPOTSAFE_CLOUD="none", SPOTSAFE_STOP_FILE=str(tmp_path / "stop"))
    (w,) = watchers_from_env(env, sys_class_dmi=NO_FIRMWARE)
    assert isinstance(w, StopFileWatcher)


def test_unknown_cloud_lists_the_valid_names() -> None:
    with pytest.raises(ConfigError) as e:
        watchers_from_env({"SPOTSAFE_CLOUD": "oracle"})
    assert "'oracle'" in str(e.value)
    for name in ("aws", "gcp", "azure", "none", "auto"):
        assert name in str(e.value)
