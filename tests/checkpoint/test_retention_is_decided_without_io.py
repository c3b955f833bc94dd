"""Retention is a pure decision over one listing (spotsafe.checkpoint.retention): these tests
build listings by hand, no store, and check what the plan keeps, why, and what it deletes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from spotsafe.checkpoint.discovery import CheckpointListing, Status
from spotsafe.checkpoint.manifest import MANIFEST_NAME, QUARANTINE_NAME, Manifest, checkpoint_dir
from spotsafe.checkpoint.retention import (
    Delete,
    Hold,
    Keep,
    Prune,
    RetentionState,
    carry_out,
    plan_retention,
)
from spotsafe.errors import StorageError
from spotsafe.storage import open_store


def path(step: int) -> str:
    return checkpoint_dir(step, f"{step:08x}")


def data(step: int) -> str:
    return f"{path(step)}/data-000.bin"


def manifest(step: int, uses: tuple[int, ...] = ()) -> Manifest:
    """A manifest at ``step`` whose tensors are in its own data file and those of ``uses``."""
    files = {data(s): 128 for s in (step, *uses)}
    return Manifest(step=step, epoch=0, created_at=float(step), writer="w", job_id=None,
                    attempt=None, generation=None, world_size=1, versions={},
                    config_fingerprint=None, files=files, tensors=[], tree=None)  # fmt: skip


def entry(
    step: int, status: Status = Status.VALID, uses: tuple[int, ...] = ()
) -> CheckpointListing:
    with_manifest = status in (Status.VALID, Status.FOREIGN)
    return CheckpointListing(
        path=path(step),
        step=step,
        status=status,
        size=256,
        manifest=manifest(step, uses) if with_manifest else None,
    )


def sizes_of(listing: list[CheckpointListing]) -> dict[str, int]:
    """The files each directory would hold: its data, plus its manifest or quarantine marker."""
    out = {}
    for c in listing:
        out[f"{c.path}/data-000.bin"] = 128
        if c.status in (Status.VALID, Status.FOREIGN, Status.CORRUPT, Status.NEWER):
            out[f"{c.path}/{MANIFEST_NAME}"] = 100
        if c.status is Status.QUARANTINED:
            out[f"{c.path}/{MANIFEST_NAME}"] = 100
            out[f"{c.path}/{QUARANTINE_NAME}"] = 50
    return out


def plan(listing: list[CheckpointListing], **kw: object) -> Prune:
    listing = sorted(listing, key=lambda c: c.step, reverse=True)
    decided = plan_retention(
        RetentionState(listing=listing, sizes=sizes_of(listing), **kw)  # type: ignore[arg-type]
    )
    assert isinstance(decided, Prune), decided
    return decided


def deleted_steps(p: Prune) -> list[int]:
    return sorted(int(d.path.split("-")[1]) for d in p.deletes)


def test_keeps_the_newest_keep_last_and_deletes_the_rest_manifest_first() -> None:
    p = plan([entry(s) for s in range(1, 6)], keep_last=2, newest_ours=5)
    assert deleted_steps(p) == [1, 2, 3]
    assert p.kept == {path(5): Keep.NEWEST, path(4): Keep.NEWEST}
    assert p.deletes[0] == Delete(
        path=path(3), manifest=f"{path(3)}/{MANIFEST_NAME}", files=(data(3),)
    )


def test_keeps_what_this_process_resumed_from_or_builds_on() -> None:
    p = plan([entry(s) for s in range(1, 6)], keep_last=2, held=frozenset({path(1)}))
    assert deleted_steps(p) == [2, 3]
    assert p.kept[path(1)] is Keep.HELD


def test_keeps_what_is_being_written() -> None:
    listing = [entry(s) for s in range(1, 4)] + [entry(9, Status.PARTIAL)]
    p = plan(listing, keep_last=2, writing=frozenset({path(1)}), newest_ours=10)
    assert p.kept[path(1)] is Keep.WRITING
    assert deleted_steps(p) == [9]  # unfinished, older than ours, not being written: a dead write


def test_keeps_another_jobs_checkpoints() -> None:
    listing = [entry(s) for s in range(3, 6)] + [entry(1, Status.FOREIGN)]
    p = plan(listing, keep_last=2, newest_ours=5)
    assert p.kept[path(1)] is Keep.FOREIGN
    assert deleted_steps(p) == [3]


def test_holds_everything_while_a_newer_format_is_present() -> None:
    listing = [entry(s) for s in range(1, 6)] + [entry(6, Status.NEWER)]
    decided = plan_retention(RetentionState(listing=listing, sizes=sizes_of(listing), keep_last=2))
    assert isinstance(decided, Hold) and "newer spotsafe" in decided.reason


def test_an_unfinished_write_newer_than_ours_is_left_alone() -> None:
    listing = [entry(s) for s in range(1, 4)] + [entry(7, Status.PARTIAL), entry(8, Status.SHARED)]
    assert plan(listing, keep_last=2, newest_ours=3).kept[path(7)] is Keep.MAYBE_WRITING
    assert plan(listing, keep_last=2, newest_ours=3).kept[path(8)] is Keep.MAYBE_WRITING
    assert plan(listing, keep_last=2).kept[path(7)] is Keep.MAYBE_WRITING  # nothing of ours yet
    assert deleted_steps(plan(listing, keep_last=2, newest_ours=9)) == [1, 7, 8]


def test_recent_bad_checkpoints_stay_for_inspection_old_ones_go() -> None:
    listing = [
        entry(1, Status.CORRUPT),
        entry(2, Status.QUARANTINED),
        entry(3),
        entry(4, Status.QUARANTINED),
        entry(5),
        entry(6, Status.CORRUPT),
    ]
    p = plan(listing, keep_last=2, newest_ours=6)
    assert p.kept[path(4)] is Keep.INSPECT and p.kept[path(6)] is Keep.INSPECT
    assert deleted_steps(p) == [1, 2]
    quarantined = next(d for d in p.deletes if d.path == path(2))
    assert f"{path(2)}/{QUARANTINE_NAME}" in quarantined.files


def test_files_a_surviving_manifest_uses_are_never_deleted() -> None:
    # 5 reuses 1's file (an unchanged tensor); 2's file is used by the doomed 3 only.
    listing = [entry(1), entry(2), entry(3, uses=(2,)), entry(4), entry(5, uses=(1,))]
    p = plan(listing, keep_last=2, newest_ours=5)
    by_path = {d.path: d for d in p.deletes}
    assert by_path[path(1)].manifest is not None and by_path[path(1)].files == ()
    assert by_path[path(2)].files == (data(2),)
    assert by_path[path(3)].files == (data(3),)


@st.composite
def listings(draw: st.DrawFn) -> RetentionState:
    steps = draw(st.lists(st.integers(1, 40), min_size=1, max_size=12, unique=True))
    statuses = st.sampled_from(
        [
            Status.VALID,
            Status.VALID,
            Status.PARTIAL,
            Status.CORRUPT,
            Status.QUARANTINED,
            Status.FOREIGN,
            Status.SHARED,
        ]
    )
    listing = []
    for s in sorted(steps, reverse=True):
        uses = tuple(draw(st.lists(st.sampled_from(steps), max_size=2, unique=True)))
        listing.append(entry(s, draw(statuses), tuple(u for u in uses if u != s)))
    paths = [c.path for c in listing]
    subset = st.frozensets(st.sampled_from(paths), max_size=2)
    return RetentionState(
        listing=listing,
        sizes=sizes_of(listing),
        keep_last=draw(st.integers(2, 4)),
        held=draw(subset),
        writing=draw(subset),
        newest_ours=draw(st.none() | st.sampled_from(steps)),
    )


@settings(max_examples=300, deadline=None)
@given(state=listings())
def test_no_plan_breaks_an_invariant(state: RetentionState) -> None:
    decided = plan_retention(state)
    assert isinstance(decided, Prune)
    doomed = {d.path for d in decided.deletes}
    every = {c.path for c in state.listing}
    assert doomed | set(decided.kept) == every and not doomed & set(decided.kept)
    valid = [c for c in state.listing if c.status is Status.VALID]
    assert not {c.path for c in valid[: state.keep_last]} & doomed, "deleted a newest one"
    assert not (state.held | state.writing) & doomed
    assert not {c.path for c in state.listing if c.status is Status.FOREIGN} & doomed
    survivors = [c for c in state.listing if c.path not in doomed and c.manifest is not None]
    used = {f for c in survivors for f in c.manifest.files}  # type: ignore[union-attr]
    for d in decided.deletes:
        assert not used & set(d.files), "deleted a file a surviving manifest uses"
        assert all(f.startswith(d.path + "/") for f in d.files)


class OneDeleteFails:
    """A memory store whose deletes under one directory fail."""

    def __init__(self, root: str, failing: str) -> None:
        self.inner = open_store(root)
        self.failing = failing

    def delete(self, paths: list[str]) -> None:
        paths = list(paths)
        if any(p.startswith(self.failing) for p in paths):
            raise StorageError("permission denied")
        self.inner.delete(paths)


def test_one_failed_delete_does_not_stop_the_others(tmp_path) -> None:
    store = OneDeleteFails(str(tmp_path), failing=path(2))
    listing = sorted([entry(s) for s in range(1, 6)], key=lambda c: c.step, reverse=True)
    sizes = sizes_of(listing)
    for f in sizes:
        store.inner.write_bytes(f, b"x")
    decided = plan_retention(RetentionState(listing=listing, sizes=sizes, keep_last=2))
    assert isinstance(decided, Prune)
    done = carry_out(store, decided)  # type: ignore[arg-type]
    assert [p for p, _ in done.failed] == [path(2)]
    left = set(store.inner.list("checkpoints"))
    assert not any(f.startswith((path(1), path(3))) for f in left)
    assert {f for f in left if f.startswith(path(2))} == {data(2), f"{path(2)}/{MANIFEST_NAME}"}
