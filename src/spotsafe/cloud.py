"""Which cloud this process runs on: the one resolver every part of spotsafe asks.

The durability check (``spotsafe.storage.ephemeral``: is ``/tmp`` on a cloud VM?) and the
notice watchers (``spotsafe.interrupt.detect``: whose termination notices to poll) both ask
`resolve_cloud`, so they cannot disagree about the machine. The answer, in order:

1. ``$SPOTSAFE_CLOUD`` (or an explicit ``cloud=``): ``aws``, ``gcp``, ``azure`` or ``none``
   is taken as said; ``auto`` (or unset) goes on.
2. The firmware's SMBIOS strings (``/sys/class/dmi/id``): offline, a few small file reads,
   and a cloud VM cannot hide them from a process that can read them.
3. When the firmware names no cloud (a laptop, or a container or sandbox that hides
   ``/sys/class/dmi``), the metadata services are probed in parallel with short timeouts
   (`probe_metadata`; the conventional endpoint overrides count). A process asks this once:
   the answer for the process's own environment is kept.

Torch-free and standard library only, below ``storage`` and ``interrupt``.

Example:
    >>> resolve_cloud(env={"SPOTSAFE_CLOUD": "GCP"})
    <Cloud.GCP: 'gcp'>
    >>> resolve_cloud("none")
    <Cloud.NONE: 'none'>
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from spotsafe._http import Client
from spotsafe.errors import ConfigError, MetadataUnavailable

__all__ = [
    "CLOUDS",
    "CLOUD_ENV",
    "Cloud",
    "cloud_setting",
    "detect_cloud_from_dmi",
    "probe_metadata",
    "resolve_cloud",
]

logger = logging.getLogger("spotsafe")

CLOUD_ENV = "SPOTSAFE_CLOUD"
CLOUDS = ("aws", "gcp", "azure", "none", "auto")

SYS_CLASS_DMI = Path("/sys/class/dmi/id")
# The SMBIOS chassis asset tag every Azure VM carries; on-premises Hyper-V shares Azure's
# vendor and product strings, so this is what tells them apart.
AZURE_ASSET_TAG = "7783-7084-3265-9085-8269-3286-77"

# Where each cloud's metadata service is, and the variables that move it (the names the
# clouds' own SDKs honour; Azure's has none, so it is ours). The watchers use the same.
AWS_ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
AWS_DEFAULT_ENDPOINT = "http://169.254.169.254"
AWS_TOKEN_PATH = "/latest/api/token"
GCP_HOST_ENV = "GCE_METADATA_HOST"  # host[:port]
GCP_DEFAULT_HOST = "metadata.google.internal"
# google-auth probes the IP, not metadata.google.internal: a DNS lookup on a laptop can hang
# for seconds and is not bounded by a socket timeout.
GCP_PROBE_HOST = "169.254.169.254"
AZURE_ENDPOINT_ENV = "SPOTSAFE_AZURE_METADATA_ENDPOINT"
AZURE_DEFAULT_ENDPOINT = "http://169.254.169.254"
AZURE_NAME_PATH = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"

PROBE_TIMEOUT_S = 0.3  # per probe request; a metadata service answers in a few ms


class Cloud(enum.Enum):
    """The cloud a machine runs on."""

    AWS = "aws"
    GCP = "gcp"
    AZURE = "azure"
    NONE = "none"


Prober = Callable[[Mapping[str, str]], Cloud]
"""Asks the metadata services named by an environment which cloud answers."""


def cloud_setting(value: Cloud | str | None, *, source: str = f"${CLOUD_ENV}=") -> Cloud | None:
    """`value` as a Cloud; None for ``auto`` or unset (look at the machine).

    Raises:
        ConfigError: not one of aws, gcp, azure, none, auto (case and spaces ignored).

    Example:
        >>> cloud_setting(" AWS "), cloud_setting("auto"), cloud_setting(None)
        (<Cloud.AWS: 'aws'>, None, None)
    """
    if isinstance(value, Cloud):
        return value
    text = (value or "").strip().lower()
    if text in ("", "auto"):
        return None
    try:
        return Cloud(text)
    except ValueError:
        raise ConfigError(
            f"{source}{(value or '').strip()!r} is not a cloud spotsafe knows; valid values: "
            f"{', '.join(CLOUDS)}"
        ) from None


def _read(path: Path) -> str:
    """The stripped text of a sysfs file, or "" when it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def detect_cloud_from_dmi(sys_class_dmi: Path = SYS_CLASS_DMI) -> Cloud:
    """The cloud this machine runs on, from the SMBIOS strings the kernel exposes.

    Cheap (a few small file reads) and offline: no metadata service is asked. Returns
    ``Cloud.NONE`` where the strings are missing or unrecognised (a laptop, a container
    without ``/sys/class/dmi``, another cloud).

    Example:
        >>> detect_cloud_from_dmi(Path("/nonexistent"))
        <Cloud.NONE: 'none'>
    """
    sys_vendor = _read(sys_class_dmi / "sys_vendor")
    product_name = _read(sys_class_dmi / "product_name")
    bios_vendor = _read(sys_class_dmi / "bios_vendor")
    bios_version = _read(sys_class_dmi / "bios_version")
    asset_tag = _read(sys_class_dmi / "chassis_asset_tag")
    # Nitro instances say "Amazon EC2"; older Xen ones only end their BIOS version in ".amazon".
    if "Amazon EC2" in (sys_vendor, bios_vendor) or bios_version.lower().endswith(".amazon"):
        return Cloud.AWS
    if product_name == "Google Compute Engine" or sys_vendor == "Google":
        return Cloud.GCP
    if asset_tag == AZURE_ASSET_TAG:
        return Cloud.AZURE
    # Without a readable asset tag, Hyper-V's strings are the best hint left; they also match
    # on-premises Hyper-V, which only costs a warning or a /tmp refusal there.
    if (
        not asset_tag
        and sys_vendor == "Microsoft Corporation"
        and product_name == "Virtual Machine"
    ):
        return Cloud.AZURE
    return Cloud.NONE


def _probe_aws(env: Mapping[str, str], timeout_s: float) -> bool:
    base = (env.get(AWS_ENDPOINT_ENV) or AWS_DEFAULT_ENDPOINT).rstrip("/")
    http = Client(timeout_s=timeout_s)
    resp = http.request(
        "PUT", base + AWS_TOKEN_PATH, headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
    )
    if resp.header("Metadata-Flavor") is not None:
        return False  # GCP's server answers every path with this header
    if resp.status == 200 and resp.body.strip():
        return True
    if resp.status in (403, 404, 405):  # IMDSv1 only: the instance-id GET still answers
        resp = http.request("GET", base + "/latest/meta-data/instance-id")
        return resp.status == 200 and resp.header("Metadata-Flavor") is None
    return False


def _probe_gcp(env: Mapping[str, str], timeout_s: float) -> bool:
    host = env.get(GCP_HOST_ENV) or GCP_PROBE_HOST
    resp = Client(timeout_s=timeout_s).request(
        "GET", f"http://{host}/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"}
    )
    return resp.header("Metadata-Flavor") == "Google"


def _probe_azure(env: Mapping[str, str], timeout_s: float) -> bool:
    base = (env.get(AZURE_ENDPOINT_ENV) or AZURE_DEFAULT_ENDPOINT).rstrip("/")
    resp = Client(timeout_s=timeout_s).request(
        "GET", base + AZURE_NAME_PATH, headers={"Metadata": "true"}
    )
    return resp.status == 200 and bool(resp.body.strip()) and resp.header("Metadata-Flavor") is None


_PROBES: dict[Cloud, Callable[[Mapping[str, str], float], bool]] = {
    Cloud.AWS: _probe_aws,
    Cloud.GCP: _probe_gcp,
    Cloud.AZURE: _probe_azure,
}


def probe_metadata(
    env: Mapping[str, str] = os.environ, *, timeout_s: float = PROBE_TIMEOUT_S
) -> Cloud:
    """Which cloud's metadata service answers here; ``Cloud.NONE`` when none does.

    Probes all three in parallel daemon threads and waits at most about two probe timeouts
    (the AWS probe may need two requests). If several answer, the first of aws, gcp, azure
    wins. Never raises for a service that is not there.

    Example:
        >>> probe_metadata({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1",
        ...                 "GCE_METADATA_HOST": "127.0.0.1:1",
        ...                 "SPOTSAFE_AZURE_METADATA_ENDPOINT": "http://127.0.0.1:1"})
        <Cloud.NONE: 'none'>
    """
    found: dict[Cloud, bool] = {}

    def run(cloud: Cloud, probe: Callable[[Mapping[str, str], float], bool]) -> None:
        try:
            found[cloud] = probe(env, timeout_s)
        except MetadataUnavailable as e:
            logger.debug("probe %s: %s", cloud.value, e)
            found[cloud] = False

    threads = [
        threading.Thread(target=run, args=(c, p), name=f"spotsafe-probe-{c.value}", daemon=True)
        for c, p in _PROBES.items()
    ]
    for t in threads:
        t.start()
    # The probes run side by side, so this waits for the slowest, bounded by two requests'
    # timeouts plus thread start-up; a probe still stuck after that (e.g. in DNS) is abandoned.
    end = time.monotonic() + 2 * timeout_s + 0.2
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    snapshot = dict(found)  # each thread writes one key once; dict.copy is atomic under the GIL
    for cloud in _PROBES:
        if snapshot.get(cloud):
            return cloud
    return Cloud.NONE


# The probe's answer for this process's own environment, by the endpoints it asked: the
# Checkpointer (durability) and the Guard (watchers) ask once between them.
_PROBED: dict[tuple[str | None, ...], Cloud] = {}
_PROBED_LOCK = threading.Lock()


def _probe_once(env: Mapping[str, str]) -> Cloud:
    if env is not os.environ:
        return probe_metadata(env)  # an environment given by the caller: ask afresh
    key = tuple(env.get(k) for k in (AWS_ENDPOINT_ENV, GCP_HOST_ENV, AZURE_ENDPOINT_ENV))
    with _PROBED_LOCK:
        if key not in _PROBED:
            _PROBED[key] = probe_metadata(env)
        return _PROBED[key]


def resolve_cloud(
    cloud: Cloud | str | None = None,
    *,
    env: Mapping[str, str] = os.environ,
    sys_class_dmi: Path = SYS_CLASS_DMI,
    probe: Prober | None = None,
) -> Cloud:
    """The cloud this process runs on (see the module docstring for the order).

    Args:
        cloud: an explicit choice (a `Cloud` or aws/gcp/azure/none/auto); None reads
            ``$SPOTSAFE_CLOUD`` from `env`.
        env: the environment (``SPOTSAFE_CLOUD`` and the metadata endpoint overrides).
        sys_class_dmi: where the kernel exposes the firmware's strings.
        probe: asks the metadata services when the firmware names no cloud; default
            `probe_metadata`, once per process for ``os.environ``.

    Raises:
        ConfigError: a value that is not a cloud spotsafe knows.

    Example:
        >>> resolve_cloud(env={}, sys_class_dmi=Path("/nonexistent"),
        ...               probe=lambda env: Cloud.AZURE)
        <Cloud.AZURE: 'azure'>
    """
    source = "cloud=" if cloud is not None else f"${CLOUD_ENV}="
    chosen = cloud_setting(cloud if cloud is not None else env.get(CLOUD_ENV), source=source)
    if chosen is not None:
        return chosen
    firmware = detect_cloud_from_dmi(sys_class_dmi)
    if firmware is not Cloud.NONE:
        return firmware
    answered = (probe or _probe_once)(env)
    if answered is not Cloud.NONE:
        logger.info("%s=auto: the %s metadata service answers", CLOUD_ENV, answered.value)
    return answered
