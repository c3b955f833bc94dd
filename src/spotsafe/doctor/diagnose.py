"""`spotsafe doctor`: run the checks a request asks for and gather their findings.

What is checked depends on what is given:

- ``--checkpoint PATH``: that checkpoint's contents (weights-only, inexact-loader) and where
  it lies (ephemeral-store);
- ``--store URL`` (only read): the newest checkpoint's contents, the store's location, and the
  job's history: its stop flushes against the pool's grace, its interval against the
  advisor's;
- ``-- CMD``: the command run twice in a scratch store (`spotsafe.doctor.probe`): no
  checkpoint, no signal handling, grace, restart from scratch, and the static checks on what
  it wrote and where;
- ``--fleet PREFIX``: one policy for every workload.

Example:
    >>> import tempfile
    >>> Request(checkpoint=tempfile.mkdtemp()).asked
    ('checkpoint',)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from spotsafe.doctor import checks, history
from spotsafe.doctor.contents import Contents, inspect_checkpoint
from spotsafe.doctor.findings import IDS, Finding
from spotsafe.doctor.probe import ProbeSettings, probe
from spotsafe.errors import ConfigError

__all__ = ["Diagnosis", "Request", "diagnose"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What to examine, and how."""

    command: tuple[str, ...] = ()
    """The training command to run (in a scratch store); empty: none."""
    store: str | None = None
    """The job's real store, only read."""
    fleet: str | None = None
    """A prefix holding many jobs' stores."""
    checkpoint: str | None = None
    """One checkpoint file or folder to inspect."""
    pool: str | None = None
    """The pool the job runs under (default: ``$SPOTSAFE_POOL`` or the job's, else standard)."""
    config: str | None = None
    """The config file with the pools (default: ./spotsafe.toml or ./pyproject.toml)."""
    grace_s: float | None = None
    """The orchestrator's grace before SIGKILL; None: the pool's ``grace_s``."""
    timeout_s: float = 600.0
    """Most seconds the command may take to write its first checkpoint."""
    stop_code: int = 75
    """The exit code that means "stopped on request, state saved"."""
    cwd: str | None = None
    """Where the command runs (default: here)."""

    @property
    def asked(self) -> tuple[str, ...]:
        """Which inputs were given, in a fixed order."""
        given = (
            ("command", bool(self.command)),
            ("store", self.store is not None),
            ("fleet", self.fleet is not None),
            ("checkpoint", self.checkpoint is not None),
        )
        return tuple(name for name, on in given if on)


@dataclass(slots=True, kw_only=True)
class Diagnosis:
    """The findings, and what was checked to reach them."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)
    """The checks that ran (ids), so that no finding is not mistaken for not looking."""
    facts: dict[str, Any] = field(default_factory=dict)
    """Measurements worth showing even without a finding (flush seconds, checkpoints)."""

    def add(self, finding: Finding | None) -> None:
        if finding is not None and finding not in self.findings:
            self.findings.append(finding)

    def to_json(self) -> dict[str, Any]:
        """``{"findings": [...], "checked": [...], "facts": {...}}``."""
        order = {id_: i for i, id_ in enumerate(IDS)}
        ranked = sorted(self.findings, key=lambda f: (-f.severity.rank, order[f.id]))
        return {
            "findings": [f.to_json() for f in ranked],
            "checked": sorted(set(self.checked), key=lambda c: order.get(c, len(order))),
            "facts": self.facts,
        }


def _contents(d: Diagnosis, contents: Contents) -> None:
    d.checked += ["weights-only", "inexact-loader"]
    d.add(checks.weights_only(contents))
    d.add(checks.inexact_loader(contents))
    d.facts.setdefault("checkpoint", {
        "path": contents.path,
        "format": contents.format,
        "step": contents.step,
        "holds": sorted(p.value for p in contents.parts),
    })  # fmt: skip


def diagnose(
    request: Request, *, run: Callable[..., Any] = probe, environ: dict[str, str] | None = None
) -> Diagnosis:
    """Run the checks ``request`` asks for.

    Raises:
        ConfigError: nothing to examine, or a --checkpoint path with no checkpoint.
        StorageError: a store or fleet could not be read.
    """
    from spotsafe.policy.pools import DEFAULT_POOL, get_pool, load_pools

    env = dict(os.environ) if environ is None else environ
    if not request.asked:
        raise ConfigError(
            "spotsafe doctor: nothing to examine; give a command (spotsafe doctor -- python "
            "train.py), --store URL, --checkpoint PATH or --fleet PREFIX"
        )
    pools = load_pools(request.config)
    pool_name = request.pool or env.get("SPOTSAFE_POOL") or DEFAULT_POOL
    pool = get_pool(pool_name, pools)
    grace_s = request.grace_s if request.grace_s is not None else pool.grace_s
    d = Diagnosis()
    d.facts["pool"] = pool_name
    d.facts["grace_s"] = grace_s

    if request.checkpoint is not None:
        found = inspect_checkpoint(request.checkpoint)
        if found is None:
            raise ConfigError(
                f"{request.checkpoint}: no checkpoint there (looked for spotsafe stores, "
                "torch.save files, Lightning .ckpt, Hugging Face checkpoint-N folders and DCP "
                "directories); check the path"
            )
        _contents(d, found)
        d.checked.append("ephemeral-store")
        d.add(checks.ephemeral_store(request.checkpoint, source="--checkpoint"))

    if request.store is not None:
        _store(d, request.store, pools, grace_s)

    if request.command:
        real = env.get("SPOTSAFE_STORE")
        if request.store is None and real:
            d.checked.append("ephemeral-store")
            d.add(checks.ephemeral_store(real, source="$SPOTSAFE_STORE"))
        settings = ProbeSettings(
            grace_s=grace_s,
            timeout_s=request.timeout_s,
            stop_code=request.stop_code,
            pool=pool_name,
            config=request.config,
            cwd=request.cwd,
        )
        result = run(list(request.command), settings)
        d.checked += ["no-checkpoint", "no-signal-handling", "grace", "restart-from-scratch"]
        for f in result.findings:
            d.add(f)
        if result.flush_s is not None:
            d.facts["flush_s"] = round(result.flush_s, 3)
        if result.checkpoint is not None and request.checkpoint is None:
            _contents(d, result.checkpoint)
        d.checked.append("ephemeral-store")
        for location in result.locations:
            d.add(checks.ephemeral_store(location, source="written by the command"))
        if result.locations:
            d.facts["written_to"] = list(result.locations)

    if request.fleet is not None:
        from spotsafe.report.fleet import account_fleet

        fleet = account_fleet(request.fleet)
        d.checked.append("one-policy")
        d.facts["fleet_jobs"] = len(fleet.jobs)
        d.add(history.one_policy(list(fleet.jobs), pools))
    return d


def _store(d: Diagnosis, store: str, pools: dict[str, Any], grace_s: float) -> None:
    """The checks on a real store: read only."""
    from spotsafe.events import read_events
    from spotsafe.report.accounting import account_job
    from spotsafe.storage import open_store

    d.checked.append("ephemeral-store")
    d.add(checks.ephemeral_store(store, source="--store"))
    found = inspect_checkpoint(store)
    if found is not None:
        _contents(d, found)
    opened = open_store(store)
    flushes = checks.stop_flushes([{"kind": e.kind, **e.fields} for e in read_events(opened)])
    d.checked.append("grace")
    if flushes:
        worst = max(flushes)
        d.facts["stop_flush_s_max"] = round(worst, 3)
        d.add(checks.grace(worst, grace_s, source=f"slowest of {len(flushes)} recorded stops"))
    if opened.list("job"):
        d.checked.append("interval")
        facts = history.interval_facts(account_job(opened), pools)
        if facts is not None:
            d.facts["interval"] = facts.evidence()
            d.add(history.interval(facts))
