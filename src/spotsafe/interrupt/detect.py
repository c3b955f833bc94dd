"""Pick the notice watchers for this machine from the environment (``SPOTSAFE_CLOUD``).

Which cloud this is comes from :func:`spotsafe.cloud.resolve_cloud`, the resolver the
durability check uses too, so the two never disagree: ``$SPOTSAFE_CLOUD``, then the
firmware's strings, then (``auto``, the default, on a machine whose firmware names no cloud)
the three metadata services probed in parallel with short timeouts; on a laptop nothing
answers at 169.254.169.254 and the probes end within about ``probe_timeout_s``.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from spotsafe import cloud
from spotsafe.cloud import CLOUD_ENV, CLOUDS, SYS_CLASS_DMI, Cloud, Prober, resolve_cloud
from spotsafe.interrupt import aws, azure, gcp
from spotsafe.interrupt.signals import DEFAULT_GRACE_S
from spotsafe.interrupt.stopfile import StopFileWatcher
from spotsafe.interrupt.watcher import Watcher, logger

__all__ = ["CLOUDS", "CLOUD_ENV", "detect_cloud", "watchers_from_env"]

PROBE_TIMEOUT_S = cloud.PROBE_TIMEOUT_S


def detect_cloud(
    env: Mapping[str, str] = os.environ, *, probe_timeout_s: float = PROBE_TIMEOUT_S
) -> str:
    """Which cloud's metadata service answers here: ``"aws"``, ``"gcp"``, ``"azure"`` or ``"none"``.

    Only the probe (:func:`spotsafe.cloud.probe_metadata`), asked afresh; the watchers ask
    :func:`spotsafe.cloud.resolve_cloud`, which looks at ``$SPOTSAFE_CLOUD`` and the firmware
    first.

    Example:
        >>> detect_cloud({"AWS_EC2_METADATA_SERVICE_ENDPOINT": "http://127.0.0.1:1",
        ...               "GCE_METADATA_HOST": "127.0.0.1:1",
        ...               "SPOTSAFE_AZURE_METADATA_ENDPOINT": "http://127.0.0.1:1"})
        'none'
    """
    return cloud.probe_metadata(env, timeout_s=probe_timeout_s).value


def watchers_from_env(
    env: Mapping[str, str] = os.environ,
    *,
    timeout_s: float = 2.0,
    probe_timeout_s: float = PROBE_TIMEOUT_S,
    grace_s: float = DEFAULT_GRACE_S,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    sys_class_dmi: Path = SYS_CLASS_DMI,
    probe: Prober | None = None,
) -> list[Watcher]:
    """The watchers this environment asks for: one for the cloud this machine is on (per
    :func:`spotsafe.cloud.resolve_cloud`) and the stop file (``SPOTSAFE_STOP_FILE``), if set.

    Args:
        env: Environment to read.
        timeout_s: HTTP timeout of each poll, in seconds.
        probe_timeout_s: Timeout of each ``auto`` probe, in seconds.
        grace_s: Deadline of a stop-file request, seconds after it appears.
        clock: Monotonic clock, in seconds.
        wall_clock: Wall clock, seconds since the epoch.
        sys_class_dmi: Where the kernel exposes the firmware's strings.
        probe: How the metadata services are asked when the firmware names no cloud.

    Raises:
        ConfigError: ``SPOTSAFE_CLOUD`` is not one of aws, gcp, azure, none, auto.

    Example:
        >>> watchers_from_env({"SPOTSAFE_CLOUD": "none"})
        []
    """
    if probe is None and probe_timeout_s != PROBE_TIMEOUT_S:
        probe = functools.partial(cloud.probe_metadata, timeout_s=probe_timeout_s)
    where = resolve_cloud(env=env, sys_class_dmi=sys_class_dmi, probe=probe)
    logger.debug("%s: watching %s", CLOUD_ENV, where.value)
    watchers: list[Watcher] = []
    if where is Cloud.AWS:
        watchers.append(
            aws.AwsWatcher.from_env(env, timeout_s=timeout_s, clock=clock, wall_clock=wall_clock)
        )
    elif where is Cloud.GCP:
        watchers.append(gcp.GcpWatcher.from_env(env, timeout_s=timeout_s, clock=clock))
    elif where is Cloud.AZURE:
        watchers.append(
            azure.AzureWatcher.from_env(
                env, timeout_s=timeout_s, clock=clock, wall_clock=wall_clock
            )
        )
    stop_file = StopFileWatcher.from_env(env, grace_s=grace_s, clock=clock)
    if stop_file is not None:
        watchers.append(stop_file)
    return watchers
