"""Whether a checkpoint destination survives the machine: the ephemeral-destination guard.

A checkpoint that disappears with the node was never a checkpoint: the next machine must find
it. This module decides, from the mount table, the block devices and the cloud the process runs
on, whether a store location is

- ``EPHEMERAL``: it vanishes with the machine, the container or the pod (tmpfs, a container's
  overlay root, a Kubernetes ``emptyDir``, AWS instance store, GCP local SSD, the Azure
  temporary disk, ``/tmp`` on a cloud VM, the process-local ``memory://`` store). Refused
  unless ``SPOTSAFE_ALLOW_EPHEMERAL=1``.
- ``DURABLE``: an object store, a network filesystem, a Kubernetes CSI volume, or a local disk
  on a machine that is not a detected cloud VM.
- ``UNKNOWN``: spotsafe could not tell; the caller logs a warning. On a cloud VM this includes
  network block devices such as EBS and persistent disks: they survive a reboot, but a spot
  VM's root volume is deleted with the VM by default, so whether the *next* machine sees the
  checkpoint depends on settings spotsafe cannot read.

Where ``/tmp`` is concerned the rule depends on the machine: on a detected cloud VM it is
EPHEMERAL (it dies with the VM and is cleaned at boot); on a machine that is not a detected
cloud VM (a laptop, CI, on-premises) it is UNKNOWN with a warning, because it usually survives
the process but may be cleaned at reboot. A tmpfs ``/tmp`` is EPHEMERAL everywhere.

Everything read from the machine (``/proc/self/mountinfo``, ``/sys/block``, ``/dev/disk``,
``/sys/class/dmi/id``, the metadata probe) is a parameter, so tests describe a machine with
fixture text and directories. Which cloud the machine is on comes from
:func:`spotsafe.cloud.resolve_cloud`, the resolver the notice watchers use too: where the
firmware names no cloud it asks the metadata services, once per process. Standard library
only.

What the device rules rest on (checked against public sources, not on real VMs here):

- AWS instance store NVMe reports the model ``Amazon EC2 NVMe Instance Storage``; EBS reports
  ``Amazon Elastic Block Store`` (sysfs pads the model with spaces).
- GCP local SSD over NVMe reports the model ``nvme_card``; NVMe persistent disks report
  ``nvme_card-pd``. GCP's udev rules (GoogleCloudPlatform/guest-configs,
  65-gce-disk-naming.rules) link local SSDs as ``/dev/disk/by-id/google-local-nvme-ssd-N``;
  SCSI local SSDs have vendor ``Google`` and model ``EphemeralDisk`` (``google-local-ssd-N``).
- Azure: the chassis asset tag ``7783-7084-3265-9085-8269-3286-77`` marks an Azure VM;
  cloud-init's 66-azure-ephemeral.rules links the temporary (resource) disk as
  ``/dev/disk/cloud/azure_resource`` and the Azure agent as ``/dev/disk/azure/resource``;
  cloud-init mounts it at ``/mnt`` (older agents at ``/mnt/resource``). Local NVMe disks report
  ``Microsoft NVMe Direct Disk`` (seen in third-party tooling only). The ``Temporary Storage``
  label is the Windows-formatted default and is matched in ``/dev/disk/by-label`` in case it
  survives; that one is an assumption.
- Old Xen-based AWS instance stores (``/dev/xvdb`` without a model) are not recognised; on a
  cloud VM they end as UNKNOWN, i.e. a warning rather than a refusal.
"""

from __future__ import annotations

import enum
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

# Which cloud the machine is on is decided in one place for all of spotsafe (the notice
# watchers ask the same resolver); the names are re-exported here for this module's users.
from spotsafe.cloud import (
    AZURE_ASSET_TAG,
    SYS_CLASS_DMI,
    Cloud,
    Prober,
    detect_cloud_from_dmi,
    resolve_cloud,
)
from spotsafe.errors import ConfigError, EphemeralStoreError
from spotsafe.storage.base import redact_url

__all__ = [
    "AZURE_ASSET_TAG",
    "Cloud",
    "Durability",
    "Mount",
    "Verdict",
    "allow_ephemeral_from_env",
    "check_store_durable",
    "classify_location",
    "detect_cloud_from_dmi",
    "find_mount",
    "parse_mountinfo",
    "resolve_cloud",
    "resolve_location",
]

logger = logging.getLogger("spotsafe.storage")
_warned: set[str] = set()  # stores already warned about in this process

ENV_ALLOW_EPHEMERAL = "SPOTSAFE_ALLOW_EPHEMERAL"

PROC_MOUNTINFO = Path("/proc/self/mountinfo")
SYS_BLOCK = Path("/sys/block")
DEV_DISK = Path("/dev/disk")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}

# Memory-backed: their contents are gone at reboot, let alone on another machine.
_MEMORY_FS = {"tmpfs", "ramfs", "devtmpfs"}
# The writable layer of a container image: deleted with the container.
_CONTAINER_FS = {"overlay", "aufs"}
# Filesystems served by other machines: they outlive this one.
_NETWORK_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
    "afs", "fuse.gcsfuse", "fuse.s3fs", "fuse.mountpoint-s3", "fuse.goofys", "fuse.blobfuse",
    "fuse.blobfuse2", "fuse.juicefs", "fuse.rclone", "fuse.sshfs", "fuse.glusterfs",
    "fuse.ceph-fuse", "fuse.lustre",
}  # fmt: skip
# Directories the OS clears at boot (or that are tmpfs on most systems).
_TMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")
# URL schemes of stores that live on other machines (fsspec protocol names).
_REMOTE_PROTOCOLS = {
    "s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oci", "hdfs", "webhdfs",
}  # fmt: skip

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")
_HEX_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_MAX_STACK = 8  # md on dm on partition is 3 deep; 8 guards against a sysfs loop.


class Durability(enum.Enum):
    """Whether a location survives the machine it is on."""

    DURABLE = "durable"
    EPHEMERAL = "ephemeral"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What spotsafe concluded about a store location, and why.

    Example:
        >>> v = check_store_durable("s3://bucket/run")
        >>> v.kind.name, v.reason
        ('DURABLE', 'object store (s3://): it lives outside this machine')
    """

    #: Whether the location survives the machine.
    kind: Durability
    #: One human sentence explaining the verdict.
    reason: str
    #: The location as classified: the resolved local path, or the redacted URL.
    location: str
    #: Mount point of the filesystem holding the path; None for URLs or an unread mount table.
    mount_point: str | None = None
    #: Filesystem type of that mount (``ext4``, ``tmpfs``, ``overlay``, ...).
    fstype: str | None = None
    #: The mount's source (``/dev/nvme1n1``, ``overlay``, ``server:/export``).
    device: str | None = None
    #: The cloud the machine was taken to be on; None where it did not matter (URLs).
    cloud: Cloud | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    #: ``major:minor`` of the filesystem's device (``0:NN`` for virtual ones and btrfs).
    dev: str
    #: The directory of the filesystem that is mounted (not ``/`` for bind mounts).
    root: str
    #: Where it is mounted.
    mount_point: str
    #: Filesystem type.
    fstype: str
    #: The mount source, usually a device path.
    source: str


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as \040, \011, \012, \134.
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts listed in ``text`` (the format of ``/proc/self/mountinfo``), in order.

    Lines that do not parse are skipped: the kernel never writes them, and one odd line must
    not stop a training job from opening its store.

    Example:
        >>> line = "27 1 254:0 / /my\\\\040data rw - ext4 /dev/vda rw"
        >>> parse_mountinfo(line)[0].mount_point
        '/my data'
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        # id parent major:minor root mount-point options [optional...] - fstype source super
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if sep < 6 or len(fields) < sep + 3:
            logger.debug("skipping a mountinfo line that does not parse: %r", line)
            continue
        mounts.append(
            Mount(
                dev=fields[2],
                root=_unescape(fields[3]),
                mount_point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
            )
        )
    return mounts


def _is_within(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or lies below it."""
    if directory == "/":
        return path.startswith("/")
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def find_mount(path: str, mounts: Sequence[Mount]) -> Mount | None:
    """The mount that holds the absolute ``path``: the longest mount point containing it.

    Of mounts stacked on the same point the last one wins, as it hides the others.

    Example:
        >>> ms = parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/sda1 rw\\n"
        ...                      "2 1 0:5 / /tmp rw - tmpfs tmpfs rw")
        >>> find_mount("/tmp/run", ms).fstype
        'tmpfs'
    """
    best: Mount | None = None
    for mount in mounts:
        if _is_within(path, mount.mount_point) and (
            best is None or len(mount.mount_point) >= len(best.mount_point)
        ):
            best = mount
    return best


def resolve_location(path: str | os.PathLike[str]) -> str:
    """``path`` made absolute with symlinks resolved, as far as it exists.

    A store directory is often created on first save, so a path that does not exist yet is
    resolved through its nearest existing ancestor and the missing tail is kept: that
    ancestor's filesystem is where the directory will be created.

    Example:
        >>> resolve_location("/no/such/dir/run")
        '/no/such/dir/run'
    """
    # realpath resolves the symlinks of the existing part and keeps the missing tail as is.
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _read(path: Path) -> str:
    """The stripped text of a sysfs/procfs file, or "" when it cannot be read."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Disk:
    name: str
    model: str
    vendor: str


def _device_name(mount: Mount, sys_block: Path) -> str | None:
    """The kernel name (``nvme1n1p1``, ``md0``, ``dm-2``) of the mount's block device."""
    entries = _block_entries(sys_block)
    for name, dev in entries.items():
        if dev == mount.dev:
            return name
    # btrfs reports an anonymous 0:NN device, so fall back to the source's name (realpath
    # turns /dev/mapper/vg-lv into /dev/dm-N); without a sysfs entry the /dev/disk links
    # may still recognise that name.
    if mount.source.startswith("/dev/"):
        return Path(os.path.realpath(mount.source)).name
    return None


def _block_entries(sys_block: Path) -> dict[str, str]:
    """Every disk and partition under ``sys_block``, name -> ``major:minor``."""
    entries: dict[str, str] = {}
    try:
        disks = sorted(sys_block.iterdir())
    except OSError:
        return entries
    for disk in disks:
        entries[disk.name] = _read(disk / "dev")
        try:
            children = sorted(disk.iterdir())
        except OSError:
            continue
        for child in children:
            if (child / "partition").exists():
                entries[child.name] = _read(child / "dev")
    return entries


def _parent_disk(name: str, sys_block: Path) -> str:
    """The disk that holds partition ``name``, or ``name`` when it is a whole disk."""
    if (sys_block / name).exists():
        return name
    try:
        for disk in sys_block.iterdir():
            if (disk / name).is_dir():
                return disk.name
    except OSError:
        pass  # no sysfs: the name is all we have
    return name


def _stack(name: str, sys_block: Path, seen: set[str], depth: int = 0) -> Iterator[_Disk]:
    """The physical disks under block device ``name``, through md and device-mapper layers.

    Every name passed through is added to ``seen``, so links to a partition or a RAID member
    can be matched too.
    """
    seen.add(name)
    disk = _parent_disk(name, sys_block)
    seen.add(disk)
    try:
        slaves = sorted(p.name for p in (sys_block / disk / "slaves").iterdir())
    except OSError:
        slaves = []
    if slaves and depth < _MAX_STACK:
        for slave in slaves:
            yield from _stack(slave, sys_block, seen, depth + 1)
        return
    device = sys_block / disk / "device"
    yield _Disk(name=disk, model=_read(device / "model"), vendor=_read(device / "vendor"))


def _link_targets(directory: Path, prefix: str) -> set[str]:
    """Names of the devices linked from ``directory`` by entries whose name starts with
    ``prefix``, udev's ``\\x20`` escapes decoded in the entry names."""
    try:
        entries = list(directory.iterdir())
    except OSError:
        return set()
    targets = set()
    for entry in entries:
        name = _HEX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), entry.name)
        if not name.startswith(prefix):
            continue
        try:
            targets.add(PurePosixPath(os.readlink(entry)).name)
        except OSError:
            continue  # not a link, or gone between listing and reading
    return targets


def _ephemeral_device(mount: Mount, sys_block: Path, dev_disk: Path) -> str | None:
    """Why the mount's block device vanishes with the machine, or None if it is not known to."""
    name = _device_name(mount, sys_block)
    if name is None:
        return None
    names: set[str] = set()
    for disk in _stack(name, sys_block, names):
        if disk.model == "Amazon EC2 NVMe Instance Storage":
            return f"AWS instance store ({disk.name}): it is erased when the instance stops"
        if disk.model == "nvme_card" or (disk.vendor == "Google" and disk.model == "EphemeralDisk"):
            return f"GCP local SSD ({disk.name}): it is lost when the VM is preempted or stops"
        if disk.model.startswith("Microsoft NVMe Direct Disk"):
            return f"Azure local NVMe disk ({disk.name}): it is lost when the VM is deallocated"
    if names & _link_targets(dev_disk / "by-id", "google-local-"):
        return "GCP local SSD (linked as /dev/disk/by-id/google-local-*): it is lost with the VM"
    azure_temp = _link_targets(dev_disk / "cloud", "azure_resource")
    azure_temp |= _link_targets(dev_disk / "azure", "resource")
    azure_temp |= _link_targets(dev_disk / "by-label", "Temporary Storage")
    if names & azure_temp:
        return "Azure temporary (resource) disk: it is lost when the VM is deallocated"
    return None


def _persistent_device(mount: Mount, sys_block: Path) -> str | None:
    """What network block device holds the mount (EBS, a persistent disk), if one does."""
    name = _device_name(mount, sys_block)
    if name is None:
        return None
    for disk in _stack(name, sys_block, set()):
        if disk.model == "Amazon Elastic Block Store":
            return "an EBS volume"
        if disk.model == "nvme_card-pd" or (
            disk.vendor == "Google" and disk.model == "PersistentDisk"
        ):
            return "a GCP persistent disk"
    return None


def _tmp_dir_of(path: str, mount: Mount, env: Mapping[str, str]) -> str | None:
    """The temporary directory ``path`` lies in, unless a volume is mounted inside it."""
    tmp_dirs = list(_TMP_DIRS)
    # Batch systems point TMPDIR at job-scoped scratch that is wiped when the job ends.
    if env.get("TMPDIR", "").rstrip("/"):
        tmp_dirs.append(os.path.normpath(env["TMPDIR"]))
    for tmp in tmp_dirs:
        volume_inside = mount.mount_point != tmp and _is_within(mount.mount_point, tmp)
        if _is_within(path, tmp) and not volume_inside:
            return tmp
    return None


def classify_location(
    path: str | os.PathLike[str],
    *,
    mountinfo_text: str | None = None,
    cloud: Cloud | str | None = None,
    env: Mapping[str, str] = os.environ,
    sys_block: Path = SYS_BLOCK,
    dev_disk: Path = DEV_DISK,
    sys_class_dmi: Path = SYS_CLASS_DMI,
    probe: Prober | None = None,
) -> Verdict:
    """Whether the local ``path`` survives this machine, from its mount and device.

    Never raises for what it cannot read (that yields ``UNKNOWN``); raises
    :class:`~spotsafe.errors.ConfigError` for a bad ``cloud`` / ``$SPOTSAFE_CLOUD``.

    Args:
        path: A local path; it need not exist yet.
        mountinfo_text: The mount table; None reads ``/proc/self/mountinfo``.
        cloud: The cloud to assume; None asks :func:`spotsafe.cloud.resolve_cloud`
            (``$SPOTSAFE_CLOUD``, then the firmware, then the metadata services): the same
            answer the notice watchers get.
        env: Environment variables (``SPOTSAFE_CLOUD``, ``TMPDIR``, metadata endpoints).
        sys_block: Where the kernel lists block devices.
        dev_disk: Where udev links disks by id and label.
        sys_class_dmi: Where the kernel exposes the firmware's strings.
        probe: How the metadata services are asked (see ``resolve_cloud``).

    Example:
        >>> table = "1 0 0:5 / /dev/shm rw - tmpfs tmpfs rw"
        >>> classify_location("/dev/shm/run", mountinfo_text=table, cloud="none").kind
        <Durability.EPHEMERAL: 'ephemeral'>
    """
    location = resolve_location(path)
    where = resolve_cloud(cloud, env=env, sys_class_dmi=sys_class_dmi, probe=probe)
    on_cloud = where is not Cloud.NONE
    vm = f"{where.name} VM" if on_cloud else ""
    if mountinfo_text is None:
        try:
            mountinfo_text = PROC_MOUNTINFO.read_text()
        except OSError as e:  # not Linux, or /proc not mounted
            return Verdict(
                kind=Durability.UNKNOWN,
                reason=f"the mount table could not be read ({e.strerror or e})",
                location=location,
                cloud=where,
            )
    mount = find_mount(location, parse_mountinfo(mountinfo_text))
    if mount is None:
        return Verdict(
            kind=Durability.UNKNOWN,
            reason="no mount in the mount table holds this path",
            location=location,
            cloud=where,
        )

    def verdict(kind: Durability, reason: str) -> Verdict:
        return Verdict(
            kind=kind,
            reason=reason,
            location=location,
            mount_point=mount.mount_point,
            fstype=mount.fstype,
            device=mount.source,
            cloud=where,
        )

    at = f"at {mount.mount_point}"
    if mount.fstype in _MEMORY_FS:
        return verdict(
            Durability.EPHEMERAL,
            f"memory-backed filesystem ({mount.fstype} {at}): it is lost at reboot and with "
            "the machine",
        )
    if "/kubernetes.io~empty-dir/" in mount.root:
        return verdict(
            Durability.EPHEMERAL, f"Kubernetes emptyDir volume ({at}): it is deleted with the pod"
        )
    if mount.fstype in _CONTAINER_FS:
        if mount.mount_point == "/":
            return verdict(
                Durability.EPHEMERAL,
                "container overlay filesystem; it disappears with the container: mount a volume",
            )
        return verdict(Durability.UNKNOWN, f"{mount.fstype} filesystem {at} of unknown lifetime")
    ephemeral_device = _ephemeral_device(mount, sys_block, dev_disk)
    if ephemeral_device:
        return verdict(Durability.EPHEMERAL, ephemeral_device)
    # cloud-init mounts the Azure resource disk at /mnt, the older agent at /mnt/resource; a
    # separate filesystem there on Azure is that disk unless the links above said otherwise.
    if where is Cloud.AZURE and mount.mount_point in ("/mnt", "/mnt/resource"):
        return verdict(
            Durability.EPHEMERAL,
            f"Azure temporary disk ({at}): it is lost when the VM is deallocated",
        )
    tmp = _tmp_dir_of(location, mount, env)
    if tmp is not None:
        if on_cloud:
            return verdict(
                Durability.EPHEMERAL,
                f"temporary directory {tmp} on a {vm}: it is cleaned at boot and lost with the VM",
            )
        return verdict(
            Durability.UNKNOWN,
            f"temporary directory {tmp}: it may be cleaned at reboot or by a tmp cleaner",
        )
    if mount.fstype in _NETWORK_FS:
        return verdict(
            Durability.DURABLE,
            f"network filesystem ({mount.fstype} {at}): it lives outside this machine",
        )
    if "/kubernetes.io~csi/" in mount.root:
        return verdict(
            Durability.DURABLE,
            f"Kubernetes persistent volume ({at}): it is re-attached to the next pod",
        )
    if on_cloud:
        persistent = _persistent_device(mount, sys_block)
        if persistent:
            return verdict(
                Durability.UNKNOWN,
                f"{persistent} ({mount.source} {at}): it survives a reboot, but a spot VM's "
                "volumes are deleted with it unless configured to be kept and re-attached",
            )
        return verdict(
            Durability.UNKNOWN,
            f"a local disk ({mount.source} {at}) on a {vm} that spotsafe could not identify",
        )
    return verdict(
        Durability.DURABLE,
        f"local disk ({mount.fstype} {at}) on a machine that is not a detected cloud VM",
    )


def allow_ephemeral_from_env(env: Mapping[str, str] = os.environ) -> bool:
    """Whether ``$SPOTSAFE_ALLOW_EPHEMERAL`` allows ephemeral stores (1/true/yes/on).

    Example:
        >>> allow_ephemeral_from_env({"SPOTSAFE_ALLOW_EPHEMERAL": "yes"})
        True
    """
    text = env.get(ENV_ALLOW_EPHEMERAL, "").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(
        f"${ENV_ALLOW_EPHEMERAL}={text!r} is not a yes/no value: use 1 (allow) or 0 (refuse)"
    )


def _classify_url(url: str) -> Verdict | None:
    """The verdict for a store URL, or None for a ``file://`` URL (a local path)."""
    # fsspec chains ("simplecache::s3://b/run") keep the data in the last link.
    last = url.rsplit("::", 1)[-1]
    protocol = last.split("://", 1)[0].lower() if "://" in last else "file"
    shown = redact_url(url)
    if protocol in ("file", "local"):
        return None
    if protocol == "memory":
        return Verdict(
            kind=Durability.EPHEMERAL,
            reason="in-memory store (memory://): it lives in this process and dies with it",
            location=shown,
        )
    if protocol in _REMOTE_PROTOCOLS:
        return Verdict(
            kind=Durability.DURABLE,
            reason=f"object store ({protocol}://): it lives outside this machine",
            location=shown,
        )
    return Verdict(
        kind=Durability.UNKNOWN,
        reason=f"spotsafe does not know where {protocol}:// stores live",
        location=shown,
    )


def check_store_durable(
    url_or_path: str | os.PathLike[str],
    *,
    allow_ephemeral: bool | None = None,
    env: Mapping[str, str] = os.environ,
    mountinfo_text: str | None = None,
    cloud: Cloud | str | None = None,
    sys_block: Path = SYS_BLOCK,
    dev_disk: Path = DEV_DISK,
    sys_class_dmi: Path = SYS_CLASS_DMI,
    probe: Prober | None = None,
) -> Verdict:
    """Refuse a store that would vanish with the machine; warn about one of unknown lifetime.

    Local paths and ``file://`` URLs are classified by :func:`classify_location` (same
    keyword arguments); ``memory://`` is ephemeral; object stores (s3, gs, az, ...) are
    durable. An ``UNKNOWN`` verdict is logged as a warning on the ``spotsafe.storage`` logger,
    once per store and process, and not at all when ephemeral stores are allowed.

    Args:
        url_or_path: The store, as given to ``open_store``.
        allow_ephemeral: Accept an ephemeral store; None reads ``$SPOTSAFE_ALLOW_EPHEMERAL``.
        env: Environment variables.
        mountinfo_text: See :func:`classify_location`.
        cloud: See :func:`classify_location`.
        sys_block: See :func:`classify_location`.
        dev_disk: See :func:`classify_location`.
        sys_class_dmi: See :func:`classify_location`.
        probe: See :func:`classify_location`.

    Returns:
        The verdict, for callers that record it.

    Raises:
        EphemeralStoreError: The store is ephemeral and not allowed.
        ConfigError: ``$SPOTSAFE_ALLOW_EPHEMERAL`` or ``$SPOTSAFE_CLOUD`` is malformed.

    Example:
        >>> check_store_durable("memory://run", allow_ephemeral=True).kind.name
        'EPHEMERAL'
    """
    allowed = allow_ephemeral if allow_ephemeral is not None else allow_ephemeral_from_env(env)
    text = os.fspath(url_or_path)
    verdict = _classify_url(text) if "://" in text else None
    if verdict is None:
        local = text.split("://", 1)[1] if "://" in text else text
        verdict = classify_location(
            local,
            mountinfo_text=mountinfo_text,
            cloud=cloud,
            env=env,
            sys_block=sys_block,
            dev_disk=dev_disk,
            sys_class_dmi=sys_class_dmi,
            probe=probe,
        )
    if verdict.kind is Durability.EPHEMERAL:
        if not allowed:
            raise EphemeralStoreError(
                f"checkpoint store {verdict.location} is ephemeral: {verdict.reason}. Use a "
                "persistent volume or an object store such as s3://bucket/run, or set "
                f"{ENV_ALLOW_EPHEMERAL}=1 (allow_ephemeral=True) if you accept losing "
                "checkpoints with the machine"
            )
        # Allowed on purpose: say it once at debug level, not on every Checkpointer.
        logger.debug(
            "checkpoint store %s is ephemeral (%s); allowed, so its checkpoints are lost with "
            "the machine",
            verdict.location,
            verdict.reason,
        )
    elif verdict.kind is Durability.UNKNOWN and not allowed and verdict.location not in _warned:
        _warned.add(verdict.location)  # once per store and process, not on every Checkpointer
        logger.warning(
            "could not confirm that checkpoint store %s outlives this machine: %s; prefer a "
            "persistent volume or an object store such as s3://bucket/run",
            verdict.location,
            verdict.reason,
        )
    return verdict
