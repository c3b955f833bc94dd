"""Pick the notice watchers for this machine from the environment (``SPOTSAFE_CLOUD``).

``auto`` (the default) probes the three metadata services in parallel with short timeouts; on a
laptop nothing answers at 169.254.169.254 and the probes end within about ``probe_timeout_s``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping

from spotsafe.errors import ConfigError
from spotsafe.interrupt import aws, azure, gcp
from spotsafe.interrupt._http import Client, MetadataUnavailable
from spotsafe.interrupt.signals import DEFAULT_GRACE_S
from spotsafe.interrupt.stopfile import StopFileWatcher
from spotsafe.interrupt.watcher import Watcher, logger

__all__ = ["CLOUDS", "CLOUD_ENV", "detect_cloud", "watchers_from_env"]

CLOUD_ENV = "SPOTSAFE_CLOUD"
CLOUDS = ("aws", "gcp", "azure", "none", "auto")
PROBE_TIMEOUT_S = 0.3  # per probe request; a metadata service answers in a few ms
# google-auth probes the IP, not metadata.google.internal: a DNS lookup on a laptop can hang
# for seconds and is not bounded by a socket timeout.
GCP_PROBE_HOST = "169.254.169.254"


def _probe_aws(env: Mapping[str, str], timeout_s: float) -> bool:
    base = (env.get(aws.ENDPOINT_ENV) or aws.AWS_DEFAULT_ENDPOINT).rstrip("/")
    http = Client(timeout_s=timeout_s)
    resp = http.request(
        "PUT", base + aws.TOKEN_PATH, headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}
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
    host = env.get(gcp.HOST_ENV) or GCP_PROBE_HOST
    resp = Client(timeout_s=timeout_s).request(
        "GET", f"http://{host}/computeMetadata/v1/", headers={"Metadata-Flavor": "Google"}
    )
    return resp.header("Metadata-Flavor") == "Google"


def _probe_azure(env: Mapping[str, str], timeout_s: float) -> bool:
    base = (env.get(azure.ENDPOINT_ENV) or azure.AZURE_DEFAULT_ENDPOINT).rstrip("/")
    resp = Client(timeout_s=timeout_s).request(
        "GET", base + azure.NAME_PATH, headers={"Metadata": "true"}
    )
    return resp.status == 200 and bool(resp.body.strip()) and resp.header("Metadata-Flavor") is None


_PROBES: dict[str, Callable[[Mapping[str, str], float], bool]] = {
    "aws": _probe_aws,
    "gcp": _probe_gcp,
    "azure": _probe_azure,
}


def detect_cloud(
    env: Mapping[str, str] = os.environ, *, probe_timeout_s: float = PROBE_TIMEOUT_S
) -> str:
    """Which cloud's metadata service answers here: ``"aws"``, ``"gcp"``, ``"azure"`` or ``"none"``.

    Probes all three in parallel daemon threads and waits at most about two probe timeouts
    (the AWS probe may need two requests). If several answer, the first of aws, gcp, azure
    wins.

    Example:
        >>> detect_cloud({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1",
        ...               "GCE_METADATA_HOST": "127.0.0.1:1",
        ...               "SPOTSAFE_AZURE_METADATA_ENDPOINT": "http://127.0.0.1:1"})
        'none'
    """
    found: dict[str, bool] = {}

    def run(name: str, probe: Callable[[Mapping[str, str], float], bool]) -> None:
        try:
            found[name] = probe(env, probe_timeout_s)
        except MetadataUnavailable as e:
            logger.debug("probe %s: %s", name, e)
            found[name] = False

    threads = [
        threading.Thread(target=run, args=(n, p), name=f"spotsafe-probe-{n}", daemon=True)
        for n, p in _PROBES.items()
    ]
    for t in threads:
        t.start()
    # The probes run side by side, so this waits for the slowest, bounded by two requests'
    # timeouts plus thread start-up; a probe still stuck after that (e.g. in DNS) is abandoned.
    end = time.monotonic() + 2 * probe_timeout_s + 0.2
    for t in threads:
        t.join(max(0.0, end - time.monotonic()))
    snapshot = dict(found)  # each thread writes one key once; dict.copy is atomic under the GIL
    for name in _PROBES:
        if snapshot.get(name):
            return name
    return "none"


def watchers_from_env(
    env: Mapping[str, str] = os.environ,
    *,
    timeout_s: float = 2.0,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> list[Watcher]:
    """The watchers this environment asks for: one cloud (per ``SPOTSAFE_CLOUD``) and the stop
    file (``SPOTSAFE_STOP_FILE``), if set.

    Args:
        env: Environment to read.
        timeout_s: HTTP timeout of each poll, in seconds.
        probe_timeout_s: Timeout of each ``auto`` probe, in seconds.
        grace_s: Deadline of a stop-file request, seconds after it appears.
        clock: Monotonic clock, in seconds.
        wall_clock: Wall clock, seconds since the epoch.

    Raises:
        ConfigError: ``SPOTSAFE_CLOUD`` is not one of aws, gcp, azure, none, auto.

    Example:
        >>> watchers_from_env({"SPOTSAFE_CLOUD": "none"})
        []
    """
    choice = (env.get(CLOUD_ENV) or "auto").strip().lower()
    if choice not in CLOUDS:
        raise ConfigError(
            f"{CLOUD_ENV}={env.get(CLOUD_ENV)!r} is not a cloud spotsafe watches; "
            f"valid values: {', '.join(CLOUDS)}"
        )
    if choice == "auto":
        choice = detect_cloud(env, probe_timeout_s=probe_timeout_s)
        logger.info("%s=auto: watching %s", CLOUD_ENV, choice)
    watchers: list[Watcher] = []
    if choice == "aws":
        watchers.append(
            aws.AwsWatcher.from_env(env, timeout_s=timeout_s, clock=clock, wall_clock=wall_clock)
        )
    elif choice == "gcp":
        watchers.append(gcp.GcpWatcher.from_env(env, timeout_s=timeout_s, clock=clock))
    elif choice == "azure":
        watchers.append(
            azure.AzureWatcher.from_env(
                env, timeout_s=timeout_s, clock=clock, wall_clock=wall_clock
            )
        )
    stop_file = StopFileWatcher.from_env(env, grace_s=grace_s, clock=clock)
    if stop_file is not None:
        watchers.append(stop_file)
    return watchers
