"""The ephemeral-destination guard: stores that vanish with the machine are refused.

Each machine is described by fixture text (a mount table) and fake /sys and /dev/disk trees
under tmp_path, so these tests run the same on a laptop, in CI and on a cloud VM.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from spotsafe.errors import ConfigError, EphemeralStoreError, StorageError
from spotsafe.storage.ephemeral import (
    AZURE_ASSET_TAG,
    Cloud,
    Durability,
    check_store_durable,
    classify_location,
    detect_cloud_from_dmi,
    find_mount,
    parse_mountinfo,
    resolve_location,
)

# A VM root on NVMe plus the usual virtual filesystems, as /proc/self/mountinfo writes them.
ROOT = "22 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard"
SHM = "25 24 0:23 / /dev/shm rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,size=24684092k"
TMP_TMPFS = "40 22 0:40 / /tmp rw,nosuid,nodev shared:20 - tmpfs tmpfs rw"


def table(*lines: str) -> str:
    return "\n".join(lines) + "\n"


def add_disk(
    sys_block: Path,
    name: str,
    *,
    dev: str,
    model: str = "",
    vendor: str = "",
    partitions: dict[str, str] | None = None,
    slaves: tuple[str, ...] = (),
) -> None:
    """A /sys/block/<name> entry shaped like the kernel's."""
    disk = sys_block / name
    (disk / "device").mkdir(parents=True)
    (disk / "dev").write_text(dev + "\n")
    if model:
        # sysfs pads NVMe and SCSI model strings with spaces.
        (disk / "device" / "model").write_text(model + "      \n")
    if vendor:
        (disk / "device" / "vendor").write_text(vendor + "   \n")
    for part, part_dev in (partitions or {}).items():
        (disk / part).mkdir()
        (disk / part / "dev").write_text(part_dev + "\n")
        (disk / part / "partition").write_text("1\n")
    (disk / "slaves").mkdir()
    for slave in slaves:
        (disk / "slaves" / slave).mkdir()


def link(directory: Path, name: str, device: str) -> None:
    """A udev-style /dev/disk/<kind>/<name> -> ../../<device> link."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).symlink_to(f"../../{device}")


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Any]:
    """Empty fake /sys/block, /dev/disk and /sys/class/dmi/id trees, and metadata services
    that do not answer (where the firmware names no cloud, the resolver would probe them)."""
    dirs: dict[str, Any] = {
        "sys_block": tmp_path / "sys" / "block",
        "dev_disk": tmp_path / "dev" / "disk",
        "sys_class_dmi": tmp_path / "sys" / "class" / "dmi" / "id",
    }
    for d in dirs.values():
        d.mkdir(parents=True)
    dirs["probe"] = lambda env: Cloud.NONE
    return dirs


# --- memory, containers, pods ---------------------------------------------------------------


def test_tmpfs_is_refused_with_the_reason_and_the_fix(machine: dict[str, Path]) -> None:
    with pytest.raises(EphemeralStoreError) as info:
        check_store_durable(
            "/dev/shm/run1", env={}, mountinfo_text=table(ROOT, SHM), cloud="none", **machine
        )
    message = str(info.value)
    assert "/dev/shm/run1" in message
    assert "tmpfs" in message
    assert "s3://bucket/run" in message
    assert "SPOTSAFE_ALLOW_EPHEMERAL=1" in message
    assert isinstance(info.value, StorageError)
    assert info.value.retryable is False  # retrying cannot make tmpfs durable


def test_tmpfs_tmp_on_a_laptop_is_still_ephemeral(machine: dict[str, Path]) -> None:
    verdict = classify_location(
        "/tmp/run", mountinfo_text=table(ROOT, TMP_TMPFS), cloud="none", env={}, **machine
    )
    assert verdict.kind is Durability.EPHEMERAL
    assert (verdict.mount_point, verdict.fstype) == ("/tmp", "tmpfs")


def test_container_overlay_root_is_refused_but_a_volume_under_it_is_accepted(
    machine: dict[str, Path],
) -> None:
    mounts = table(
        "600 550 0:52 / / rw,relatime master:1 - overlay overlay "
        "rw,lowerdir=/var/lib/docker/overlay2/l/A,upperdir=/u,workdir=/w",
        "610 600 259:1 /var/lib/docker/volumes/ckpt/_data /ckpt rw,relatime - ext4 "
        "/dev/nvme0n1p1 rw",
    )
    add_disk(machine["sys_block"], "nvme0n1", dev="259:0", partitions={"nvme0n1p1": "259:1"})

    overlay = classify_location("/workspace/ckpt", mountinfo_text=mounts, cloud="none", **machine)
    assert overlay.kind is Durability.EPHEMERAL
    assert "mount a volume" in overlay.reason
    with pytest.raises(EphemeralStoreError, match="container overlay"):
        check_store_durable(
            "/workspace/ckpt", env={}, mountinfo_text=mounts, cloud="none", **machine
        )

    volume = check_store_durable(
        "/ckpt/run1", env={}, mountinfo_text=mounts, cloud="none", **machine
    )
    assert volume.kind is Durability.DURABLE
    assert volume.mount_point == "/ckpt"


def test_kubernetes_empty_dir_is_refused_and_a_csi_volume_is_durable(
    machine: dict[str, Path],
) -> None:
    mounts = table(
        "600 550 0:52 / / rw - overlay overlay rw",
        "620 600 259:1 /var/lib/kubelet/pods/4f1c/volumes/kubernetes.io~empty-dir/scratch "
        "/scratch rw - ext4 /dev/nvme0n1p1 rw",
        "621 600 259:5 /var/lib/kubelet/pods/4f1c/volumes/kubernetes.io~csi/pvc-9a/mount "
        "/ckpt rw - ext4 /dev/nvme2n1 rw",
    )
    add_disk(machine["sys_block"], "nvme2n1", dev="259:5", model="Amazon Elastic Block Store")

    scratch = classify_location("/scratch/run", mountinfo_text=mounts, cloud="aws", **machine)
    assert scratch.kind is Durability.EPHEMERAL
    assert "emptyDir" in scratch.reason
    pvc = classify_location("/ckpt/run", mountinfo_text=mounts, cloud="aws", **machine)
    assert pvc.kind is Durability.DURABLE


# --- cloud devices --------------------------------------------------------------------------


def test_aws_instance_store_nvme_is_refused(machine: dict[str, Path]) -> None:
    add_disk(
        machine["sys_block"],
        "nvme0n1",
        dev="259:0",
        model="Amazon Elastic Block Store",
        partitions={"nvme0n1p1": "259:1"},
    )
    add_disk(machine["sys_block"], "nvme1n1", dev="259:2", model="Amazon EC2 NVMe Instance Storage")
    mounts = table(ROOT, "50 22 259:2 / /opt/dlami/nvme rw,relatime - xfs /dev/nvme1n1 rw")

    with pytest.raises(EphemeralStoreError, match="AWS instance store"):
        check_store_durable(
            "/opt/dlami/nvme/ckpt", env={}, mountinfo_text=mounts, cloud="aws", **machine
        )
    # The EBS root of the same VM is not refused: it is only a warning (see below).
    root = classify_location("/home/ubuntu/ckpt", mountinfo_text=mounts, cloud="aws", **machine)
    assert root.kind is Durability.UNKNOWN
    assert "EBS" in root.reason


def test_raid0_over_instance_store_partitions_is_refused(machine: dict[str, Path]) -> None:
    # The common setup: mdadm RAID 0 over every instance-store disk, mounted as scratch.
    for i in (1, 2):
        add_disk(
            machine["sys_block"],
            f"nvme{i}n1",
            dev=f"259:{10 * i}",
            model="Amazon EC2 NVMe Instance Storage",
            partitions={f"nvme{i}n1p1": f"259:{10 * i + 1}"},
        )
    add_disk(machine["sys_block"], "md0", dev="9:0", slaves=("nvme1n1p1", "nvme2n1p1"))
    mounts = table(ROOT, "51 22 9:0 / /scratch rw - ext4 /dev/md0 rw")

    verdict = classify_location("/scratch/run", mountinfo_text=mounts, cloud="aws", **machine)
    assert verdict.kind is Durability.EPHEMERAL
    assert "nvme1n1" in verdict.reason


def test_btrfs_anonymous_device_is_resolved_through_its_source(machine: dict[str, Path]) -> None:
    # btrfs reports 0:NN instead of the disk's major:minor; the source path still names it.
    add_disk(machine["sys_block"], "nvme1n1", dev="259:2", model="nvme_card")
    mounts = table(ROOT, "52 22 0:61 / /mnt/disks/ssd0 rw - btrfs /dev/nvme1n1 rw")
    verdict = classify_location(
        "/mnt/disks/ssd0/ckpt", mountinfo_text=mounts, cloud="gcp", **machine
    )
    assert verdict.kind is Durability.EPHEMERAL
    assert "GCP local SSD" in verdict.reason


@pytest.mark.parametrize(
    ("model", "vendor", "expected"),
    [
        ("nvme_card", "", Durability.EPHEMERAL),  # local SSD over NVMe
        ("EphemeralDisk", "Google", Durability.EPHEMERAL),  # local SSD over SCSI
        ("nvme_card-pd", "", Durability.UNKNOWN),  # NVMe persistent disk: a warning only
        ("PersistentDisk", "Google", Durability.UNKNOWN),  # SCSI persistent disk
    ],
)
def test_gcp_local_ssd_is_refused_and_persistent_disk_is_not(
    machine: dict[str, Path], model: str, vendor: str, expected: Durability
) -> None:
    add_disk(machine["sys_block"], "sdb", dev="8:16", model=model, vendor=vendor)
    mounts = table(ROOT, "53 22 8:16 / /mnt/disks/data rw - ext4 /dev/sdb rw")
    verdict = classify_location(
        "/mnt/disks/data/run", mountinfo_text=mounts, cloud="gcp", **machine
    )
    assert verdict.kind is expected


def test_gcp_local_ssd_is_recognised_by_its_by_id_link(machine: dict[str, Path]) -> None:
    # No model string to go on (e.g. a kernel that reports none): the udev link decides.
    add_disk(machine["sys_block"], "nvme0n2", dev="259:7", partitions={"nvme0n2p1": "259:8"})
    link(machine["dev_disk"] / "by-id", "google-local-nvme-ssd-1-part1", "nvme0n2p1")
    mounts = table(ROOT, "54 22 259:8 / /mnt/ssd rw - ext4 /dev/nvme0n2p1 rw")
    verdict = classify_location("/mnt/ssd/run", mountinfo_text=mounts, cloud="gcp", **machine)
    assert verdict.kind is Durability.EPHEMERAL
    assert "by-id/google-local" in verdict.reason


def test_azure_temporary_disk_is_refused(machine: dict[str, Path]) -> None:
    add_disk(
        machine["sys_block"],
        "sdb",
        dev="8:16",
        model="Virtual Disk",
        vendor="Msft",
        partitions={"sdb1": "8:17"},
    )
    link(machine["dev_disk"] / "cloud", "azure_resource-part1", "sdb1")
    mounts = table(ROOT, "55 22 8:17 / /mnt/scratch rw - ext4 /dev/sdb1 rw")
    verdict = classify_location("/mnt/scratch/run", mountinfo_text=mounts, cloud="azure", **machine)
    assert verdict.kind is Durability.EPHEMERAL
    assert "Azure temporary" in verdict.reason


def test_azure_mnt_and_mnt_resource_are_the_temporary_disk(machine: dict[str, Path]) -> None:
    mounts = table(
        ROOT,
        "56 22 8:17 / /mnt rw - ext4 /dev/sdb1 rw",
        "57 22 8:33 / /mnt/resource rw - ext4 /dev/sdc1 rw",
    )
    for path in ("/mnt/run", "/mnt/resource/run"):
        verdict = classify_location(path, mountinfo_text=mounts, cloud="azure", **machine)
        assert verdict.kind is Durability.EPHEMERAL, path
    # The same layout on another cloud says nothing about /mnt.
    aws = classify_location("/mnt/run", mountinfo_text=mounts, cloud="aws", **machine)
    assert aws.kind is Durability.UNKNOWN


def test_azure_local_nvme_is_refused(machine: dict[str, Path]) -> None:
    add_disk(machine["sys_block"], "nvme0n1", dev="259:0", model="Microsoft NVMe Direct Disk v2")
    mounts = table(ROOT, "58 22 259:0 / /nvme rw - xfs /dev/nvme0n1 rw")
    verdict = classify_location("/nvme/run", mountinfo_text=mounts, cloud="azure", **machine)
    assert verdict.kind is Durability.EPHEMERAL


# --- /tmp and the kind of machine -----------------------------------------------------------


def test_tmp_on_a_cloud_vm_is_refused(machine: dict[str, Path]) -> None:
    for cloud in ("aws", "gcp", "azure"):
        with pytest.raises(EphemeralStoreError, match="temporary directory /tmp"):
            check_store_durable(
                "/tmp/run", env={}, mountinfo_text=table(ROOT), cloud=cloud, **machine
            )


def test_tmp_on_a_machine_that_is_not_a_cloud_vm_is_unknown_and_warned(
    machine: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Decided: a laptop's or CI runner's /tmp usually outlives the process, so it is allowed,
    # but it may be cleaned at reboot, so it is not called durable either.
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        verdict = check_store_durable(
            "/var/tmp/run", env={}, mountinfo_text=table(ROOT), cloud="none", **machine
        )
    assert verdict.kind is Durability.UNKNOWN
    assert any("/var/tmp/run" in r.getMessage() for r in caplog.records)


def test_tmpdir_of_a_batch_job_counts_as_temporary(machine: dict[str, Path]) -> None:
    env = {"TMPDIR": "/local/job-123/"}
    verdict = classify_location(
        "/local/job-123/ckpt", mountinfo_text=table(ROOT), cloud="aws", env=env, **machine
    )
    assert verdict.kind is Durability.EPHEMERAL


def test_a_volume_mounted_inside_tmp_is_judged_by_its_device(machine: dict[str, Path]) -> None:
    mounts = table(ROOT, "59 22 0:70 / /tmp/nfs rw - nfs4 fs-1.efs:/ rw")
    verdict = classify_location("/tmp/nfs/run", mountinfo_text=mounts, cloud="aws", **machine)
    assert verdict.kind is Durability.DURABLE


def test_network_filesystem_is_durable_on_a_cloud_vm(machine: dict[str, Path]) -> None:
    mounts = table(ROOT, "60 22 0:71 / /mnt/efs rw - nfs4 fs-1.efs.us-east-1.amazonaws.com:/ rw")
    verdict = check_store_durable(
        "/mnt/efs/run", env={}, mountinfo_text=mounts, cloud="aws", **machine
    )
    assert verdict.kind is Durability.DURABLE
    assert verdict.fstype == "nfs4"


def test_unknown_local_disk_on_a_cloud_vm_is_warned_not_refused(
    machine: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    mounts = table(ROOT, "61 22 202:16 / /data rw - ext4 /dev/xvdb rw")
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        verdict = check_store_durable(
            "/data/run", env={}, mountinfo_text=mounts, cloud="aws", **machine
        )
    assert verdict.kind is Durability.UNKNOWN
    assert any("could not confirm" in r.getMessage() for r in caplog.records)


def test_local_disk_on_a_machine_that_is_not_a_cloud_vm_is_durable(
    machine: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        verdict = check_store_durable(
            "/home/me/run", env={}, mountinfo_text=table(ROOT), cloud="none", **machine
        )
    assert verdict.kind is Durability.DURABLE
    assert caplog.records == []


# --- overrides ------------------------------------------------------------------------------


def test_env_override_allows_an_ephemeral_store_without_a_warning(
    machine: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Allowed on purpose: a warning on every Checkpointer would only train users to ignore it.
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        verdict = check_store_durable(
            "/dev/shm/run",
            env={"SPOTSAFE_ALLOW_EPHEMERAL": "1"},
            mountinfo_text=table(ROOT, SHM),
            cloud="none",
            **machine,
        )
    assert verdict.kind is Durability.EPHEMERAL
    assert caplog.records == []


def test_an_unconfirmed_store_is_warned_about_once_per_process(
    machine: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    mounts = table(ROOT, "61 22 202:16 / /data2 rw - ext4 /dev/xvdc rw")
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        for _ in range(3):
            check_store_durable(
                "/data2/once", env={}, mountinfo_text=mounts, cloud="aws", **machine
            )
        check_store_durable(
            "/data2/other", env={"SPOTSAFE_ALLOW_EPHEMERAL": "1"}, mountinfo_text=mounts,
            cloud="aws", **machine,
        )  # fmt: skip
    assert [r.getMessage().count("/data2/once") for r in caplog.records] == [1]


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_env_override_accepts_the_usual_yes_values(machine: dict[str, Path], value: str) -> None:
    verdict = check_store_durable("memory://run", env={"SPOTSAFE_ALLOW_EPHEMERAL": value})
    assert verdict.kind is Durability.EPHEMERAL


def test_argument_override_beats_the_environment(machine: dict[str, Path]) -> None:
    allowed = check_store_durable("memory://run", allow_ephemeral=True, env={})
    assert allowed.kind is Durability.EPHEMERAL
    with pytest.raises(EphemeralStoreError):
        check_store_durable(
            "memory://run", allow_ephemeral=False, env={"SPOTSAFE_ALLOW_EPHEMERAL": "1"}
        )
    with pytest.raises(EphemeralStoreError):
        check_store_durable("memory://run", env={"SPOTSAFE_ALLOW_EPHEMERAL": "0"})


def test_a_malformed_override_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SPOTSAFE_ALLOW_EPHEMERAL='maybe'"):
        check_store_durable("s3://bucket/run", env={"SPOTSAFE_ALLOW_EPHEMERAL": "maybe"})


# --- URLs -----------------------------------------------------------------------------------


def test_memory_store_is_ephemeral_and_refused_by_default() -> None:
    with pytest.raises(EphemeralStoreError, match="memory://"):
        check_store_durable("memory://spotsafe-test/run", env={})


@pytest.mark.parametrize(
    "url", ["s3://bucket/run", "gs://bucket/run", "az://container/run", "simplecache::s3://b/r"]
)
def test_object_stores_are_durable(url: str) -> None:
    verdict = check_store_durable(url, env={})
    assert verdict.kind is Durability.DURABLE
    assert verdict.mount_point is None


def test_object_store_credentials_stay_out_of_the_verdict() -> None:
    verdict = check_store_durable("s3://AKIA:secret@bucket/run?token=abc", env={})
    assert "secret" not in verdict.location
    assert "abc" not in verdict.location


def test_file_url_is_classified_as_its_path(machine: dict[str, Path]) -> None:
    with pytest.raises(EphemeralStoreError, match="/dev/shm/run"):
        check_store_durable(
            "file:///dev/shm/run", env={}, mountinfo_text=table(ROOT, SHM), cloud="none", **machine
        )


def test_unknown_protocol_is_warned_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spotsafe.storage"):
        verdict = check_store_durable("ftp://host/run", env={})
    assert verdict.kind is Durability.UNKNOWN
    assert caplog.records


# --- the mount table and paths --------------------------------------------------------------


def test_mount_points_with_escaped_spaces_are_decoded(machine: dict[str, Path]) -> None:
    mounts = table(ROOT, r"62 22 0:80 / /mnt/my\040ram\040disk rw - tmpfs tmpfs rw")
    assert parse_mountinfo(mounts)[1].mount_point == "/mnt/my ram disk"
    verdict = classify_location(
        "/mnt/my ram disk/run", mountinfo_text=mounts, cloud="none", **machine
    )
    assert verdict.kind is Durability.EPHEMERAL
    # A sibling whose name merely starts the same is not inside that mount.
    sibling = classify_location(
        "/mnt/my ram diskette", mountinfo_text=mounts, cloud="none", **machine
    )
    assert sibling.kind is Durability.DURABLE


def test_the_last_of_stacked_mounts_wins() -> None:
    mounts = parse_mountinfo(
        table(
            ROOT, "70 22 0:90 / /data rw - tmpfs tmpfs rw", "71 22 0:91 / /data rw - nfs4 srv:/x rw"
        )
    )
    found = find_mount("/data/run", mounts)
    assert found is not None and found.fstype == "nfs4"


def test_malformed_mountinfo_lines_are_skipped() -> None:
    mounts = parse_mountinfo(table("garbage", "1 2 - x", ROOT))
    assert [m.mount_point for m in mounts] == ["/"]


def test_empty_mount_table_is_unknown(machine: dict[str, Path]) -> None:
    verdict = classify_location("/data/run", mountinfo_text="", cloud="none", **machine)
    assert verdict.kind is Durability.UNKNOWN


def test_a_path_that_does_not_exist_is_judged_by_its_nearest_existing_ancestor(
    tmp_path: Path, machine: dict[str, Path]
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "alias").symlink_to(real)
    path = tmp_path / "alias" / "not" / "yet"
    assert resolve_location(path) == f"{real}/not/yet"
    mounts = table(ROOT, f"80 22 0:95 / {real} rw - tmpfs tmpfs rw")
    verdict = classify_location(path, mountinfo_text=mounts, cloud="none", **machine)
    assert verdict.kind is Durability.EPHEMERAL
    assert verdict.location == f"{real}/not/yet"


# --- cloud detection ------------------------------------------------------------------------


def write_dmi(directory: Path, **strings: str) -> Path:
    for name, value in strings.items():
        (directory / name).write_text(value + "\n")
    return directory


@pytest.mark.parametrize(
    ("strings", "expected"),
    [
        ({"sys_vendor": "Amazon EC2", "product_name": "m5.large"}, Cloud.AWS),
        ({"sys_vendor": "Xen", "bios_version": "4.11.amazon"}, Cloud.AWS),
        ({"sys_vendor": "Google", "product_name": "Google Compute Engine"}, Cloud.GCP),
        (
            {
                "sys_vendor": "Microsoft Corporation",
                "product_name": "Virtual Machine",
                "chassis_asset_tag": AZURE_ASSET_TAG,
            },
            Cloud.AZURE,
        ),
        (
            {
                "sys_vendor": "Microsoft Corporation",
                "product_name": "Virtual Machine",
                "chassis_asset_tag": "0000-0000-0000-0000-0000-0000-00",
            },
            Cloud.NONE,
        ),  # on-premises Hyper-V
        ({"sys_vendor": "LENOVO", "product_name": "20XW"}, Cloud.NONE),
        ({}, Cloud.NONE),
    ],
)
def test_cloud_is_detected_from_dmi(
    machine: dict[str, Path], strings: dict[str, str], expected: Cloud
) -> None:
    assert detect_cloud_from_dmi(write_dmi(machine["sys_class_dmi"], **strings)) is expected


def test_dmi_detection_drives_the_tmp_rule(machine: dict[str, Path]) -> None:
    write_dmi(machine["sys_class_dmi"], sys_vendor="Amazon EC2")
    verdict = classify_location("/tmp/run", mountinfo_text=table(ROOT), env={}, **machine)
    assert verdict.cloud is Cloud.AWS
    assert verdict.kind is Durability.EPHEMERAL


def test_spotsafe_cloud_overrides_dmi(machine: dict[str, Path]) -> None:
    write_dmi(machine["sys_class_dmi"], sys_vendor="Amazon EC2")
    verdict = classify_location(
        "/tmp/run", mountinfo_text=table(ROOT), env={"SPOTSAFE_CLOUD": "none"}, **machine
    )
    assert verdict.cloud is Cloud.NONE
    assert verdict.kind is Durability.UNKNOWN


def test_a_bad_spotsafe_cloud_is_a_config_error(machine: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="SPOTSAFE_CLOUD='ibm'"):
        classify_location(
            "/x", mountinfo_text=table(ROOT), env={"SPOTSAFE_CLOUD": "ibm"}, **machine
        )


# --- the real machine -----------------------------------------------------------------------


def test_the_real_working_directory_can_be_classified() -> None:
    verdict = classify_location(Path.cwd())
    assert isinstance(verdict.kind, Durability)
    assert verdict.reason
    assert verdict.location == os.path.realpath(Path.cwd())
    if verdict.mount_point is not None:  # Linux with /proc: the mount holds the directory
        assert verdict.location.startswith(verdict.mount_point.rstrip("/") + "/") or (
            verdict.location == verdict.mount_point
        )


def test_the_real_machine_accepts_tmp_path_when_allowed(tmp_path: Path) -> None:
    verdict = check_store_durable(tmp_path / "store", allow_ephemeral=True)
    assert verdict.location.endswith("/store")
