"""Looking at a store without torch: what ``spotsafe ls`` and ``spotsafe verify`` need.

:class:`StoreView` lists checkpoints (spotsafe.checkpoint.discovery), verifies every byte
against its hash (spotsafe.checkpoint.fetch) and checks that each state tree decodes
(spotsafe.checkpoint.tree, with numpy only), and lifts a quarantine on request. It never
writes otherwise, records no events, and starts in a fraction of a second: torch is never
imported. The Checkpointer's own ``verify`` is :func:`verify_checkpoints` too.
"""

from __future__ import annotations

import dataclasses
import os

from spotsafe.checkpoint import fetch, quarantine
from spotsafe.checkpoint.discovery import (
    CheckpointListing,
    Discovery,
    Status,
    check_sizes,
    discover,
    short,
    still_committed,
)
from spotsafe.checkpoint.manifest import Manifest
from spotsafe.env import ChildEnv
from spotsafe.errors import CheckpointCorrupt, CheckpointNotFound
from spotsafe.storage import Store, store_from_env

DEFAULT_THREADS = 4  # files read at once, as the Checkpointer's default io_threads


class StoreView:
    """A read-only, torch-free look at the checkpoints in a store.

    Args:
        store: a local path, an fsspec URL or a Store; None means ``$SPOTSAFE_STORE``.
        job_id: the job whose checkpoints these are; others are shown as foreign. Default
            ``$SPOTSAFE_JOB_ID`` (as the Checkpointer); unset: nothing is foreign.
        threads: files read at once by :meth:`verify`.

    Example:
        >>> import tempfile
        >>> view = StoreView(tempfile.mkdtemp())
        >>> view.checkpoints(), view.verify()
        ([], [])
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | Store | None = None,
        *,
        job_id: str | None = None,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        self.store = store_from_env(store)
        self.job_id = job_id if job_id is not None else ChildEnv.from_environ().job_id
        self.threads = threads
        self._manifests: dict[str, Manifest] = {}  # manifests never change: cache them

    def checkpoints(self, *, verify_sizes: bool = True) -> list[CheckpointListing]:
        """Every checkpoint directory, newest first, from one listing (no data read)."""
        return self._discover(verify_sizes=verify_sizes).checkpoints

    def verify(self, step: int | None = None) -> list[CheckpointListing]:
        """Check every byte of every committed checkpoint (or the one at ``step``).

        Raises:
            CheckpointNotFound: ``step`` is given and no checkpoint has it.
        """
        found = self._discover(verify_sizes=False)
        return verify_checkpoints(self.store, found, step=step, threads=self.threads)

    def release(self, step: int) -> list[CheckpointListing]:
        """Lift the quarantine of the checkpoints at ``step``; the ones released.

        Raises:
            CheckpointNotFound: no quarantined checkpoint has that step.
        """
        held = [c for c in self.checkpoints() if c.step == step and c.status is Status.QUARANTINED]
        if not held:
            raise CheckpointNotFound(f"{self.store.url}: no quarantined checkpoint at step {step}")
        for c in held:
            quarantine.release(self.store, c.path)
        return held

    def _discover(self, *, verify_sizes: bool) -> Discovery:
        return discover(
            self.store, job_id=self.job_id, cache=self._manifests, verify_sizes=verify_sizes
        )


def verify_checkpoints(
    store: Store, found: Discovery, *, step: int | None = None, threads: int
) -> list[CheckpointListing]:
    """``found``'s checkpoints with each committed one's status set to VALID or CORRUPT after
    a full check. Read-only: nothing is quarantined. A checkpoint pruned while it was read
    is left out: it is gone, not corrupt.

    Raises:
        CheckpointNotFound: ``step`` is given and no checkpoint has it.
    """
    listing = found.checkpoints
    if step is not None:
        listing = [c for c in listing if c.step == step]
        if not listing:
            raise CheckpointNotFound(f"{store.url}: no checkpoint at step {step}")
    out = []
    for c in listing:
        if c.status is Status.VALID and c.manifest is not None:
            where = f"{store.url}/{c.path}"
            try:
                check_checkpoint(store, c.manifest, c.path, found.sizes, threads=threads)
            except CheckpointCorrupt as e:
                if not still_committed(store, c.path):
                    continue  # pruned while we read it: gone, not corrupt
                c = dataclasses.replace(c, status=Status.CORRUPT, reason=short(e, where))
        out.append(c)
    return out


def check_checkpoint(
    store: Store, manifest: Manifest, directory: str, sizes: dict[str, int], *, threads: int
) -> None:
    """Whether every file of the checkpoint is there with its size, every tensor's bytes
    match their hash, and the state tree decodes; raises CheckpointCorrupt if not."""
    from spotsafe.checkpoint import tree  # numpy: only a full check needs it, not `ls`

    check_sizes(manifest, sizes, f"{store.url}/{directory}")
    tree.check_decodes(manifest)
    fetch.fetch(
        fetch.Source(store, directory),
        manifest,
        fetch.plan_runs(manifest),
        threads=threads,
        buffer_for=lambda run: None,  # check only: stream, keep nothing
        verified=lambda run, index, at: None,
    )
