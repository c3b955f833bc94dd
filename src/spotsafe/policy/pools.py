"""Named pools: one set of retry, checkpoint and cost settings per class of workload.

A pool says how much a job may be interrupted, how often it may crash, how much work it may
lose and what its capacity costs. Four presets cover the common cases; a TOML file may add pools
or override single keys of a preset::

    # spotsafe.toml (or [tool.spotsafe] in pyproject.toml)
    [pools.critical]
    on_demand_after = 1          # the rest of `critical` stays as the preset says

    [pools.nightly]
    extends = "critical"         # a new pool starts from a preset (default: `standard`)
    max_lost_work_s = 300

Merge rule: a table named like a preset starts from that preset; any other table starts from the
preset named by its ``extends`` key, or from ``standard``. Only the keys it sets change.

Example:
    >>> pools = parse_pools({"pools": {"nightly": {"max_failures": 1}}}, source="inline")
    >>> pools["nightly"].max_failures, pools["nightly"].keep_last
    (1, 3)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from spotsafe.env import ChildEnv
from spotsafe.errors import ConfigError
from spotsafe.policy.retry import MAX_BUDGET, MAX_DELAY_S, MAX_MULTIPLIER

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

__all__ = [
    "DEFAULT_MTBI_PRIOR_S",
    "DEFAULT_POOL",
    "PRESETS",
    "Pool",
    "Prices",
    "find_config",
    "format_pools",
    "get_pool",
    "load_pools",
    "parse_pools",
    "pool_from_env",
]

DEFAULT_POOL = "standard"

# A deliberately pessimistic prior for GPU spot capacity: 4 h between interruptions. Providers
# publish only coarse figures (AWS Spot Instance Advisor: share of instances interrupted per
# month in buckets up to ">20 %"; GCP preemptible VMs always stop within 24 h), and busy GPU
# types are interrupted far more often than those averages. A short prior errs towards saving
# too often, the cheap side; observed interruptions replace it (`interval.mtbi_estimate`). The
# Daly interval grows with sqrt(M), so a 4x error in M is only a 2x error in the interval, and
# the expected waste is flat near the optimum.
DEFAULT_MTBI_PRIOR_S = 4 * 3600.0

# The top-level keys a config file may hold. Other parts of spotsafe that add sections to
# spotsafe.toml add their key here, so that a typo such as `[pool.x]` stays an error.
TOP_LEVEL_KEYS = frozenset({"pools"})

# A pool name travels in SPOTSAFE_POOL and in TOML table headers: keep it plain.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")

_EXTENDS = "extends"


@dataclass(frozen=True, slots=True, kw_only=True)
class Prices:
    """What one instance of a pool's capacity costs per hour, spot and on-demand.

    Any currency, the same for both; None where unknown. The supervisor records the price
    of each attempt's capacity in the job record (``price_per_hour`` in its start object),
    which is what a cost report adds up.

    Example:
        >>> p = Prices(spot_per_hour=1.0, on_demand_per_hour=4.0)
        >>> p.per_hour(on_demand=False), p.savings_fraction
        (1.0, 0.75)
    """

    spot_per_hour: float | None = None
    """Price of one spot instance per hour; None: unknown."""
    on_demand_per_hour: float | None = None
    """Price of one on-demand instance per hour; None: unknown."""

    def per_hour(self, *, on_demand: bool) -> float | None:
        """The hourly price of the capacity an attempt runs on (None: unknown)."""
        return self.on_demand_per_hour if on_demand else self.spot_per_hour

    @property
    def savings_fraction(self) -> float | None:
        """The share of the on-demand price that spot saves, before replayed work; None
        when either price is unknown or on-demand is free."""
        spot, full = self.spot_per_hour, self.on_demand_per_hour
        if spot is None or full is None or full == 0:
            return None
        return 1.0 - spot / full


@dataclass(frozen=True, slots=True, kw_only=True)
class Pool:
    """The retry, checkpoint and cost settings of one class of workload.

    Every field is validated on construction; a bad value raises `ConfigError` naming the
    field, the value and the rule. Defaults are the `standard` pool.

    Example:
        >>> Pool(max_failures=1).max_failures
        1
        >>> Pool(keep_last=1)
        Traceback (most recent call last):
        ...
        spotsafe.errors.ConfigError: keep_last = 1: must be an integer >= 2 and <= 1000 ...
    """

    max_preemptions: int = 100
    """Restarts allowed after preemptions and unclean kills, over the whole job (0 to 10^6)."""
    max_failures: int = 3
    """Restarts allowed after crashes: the command runs at most max_failures + 1 times (<= 10^6)."""
    max_no_progress: int = 3
    """Restarts allowed in a row after attempts that did not advance the newest step (<= 10^6)."""
    backoff_initial_s: float = 10.0
    """Delay before the first restart of a streak, in seconds, before jitter (0 to 86400)."""
    backoff_max_s: float = 600.0
    """Upper bound of any restart delay, in seconds (backoff_initial_s to 86400: a day)."""
    backoff_multiplier: float = 2.0
    """Growth of the delay per further restart in the same streak (1 to 100)."""
    jitter: float = 0.5
    """Fraction of the delay drawn at random and taken off, in [0, 1]; 1 is full jitter."""
    max_lost_work_s: float = 1800.0
    """Most wall-clock seconds of training an unclean interruption may lose (> 0, <= 7 days)."""
    keep_last: int = 3
    """Committed checkpoints retention keeps (2 to 1000; 2 leaves a fallback if one is corrupt)."""
    grace_s: float = 25.0
    """Seconds between a forwarded SIGTERM and SIGKILL of the child (> 0, at most 3600)."""
    lease_ttl_s: float = 60.0
    """Seconds a supervisor's lease stays valid without a heartbeat (> 0, at most 86400)."""
    on_demand_after: int | None = None
    """Interruptions after which restarts ask for on-demand capacity (0 to 10^6); None: never."""
    on_demand_command: str | None = None
    """Shell command run once when falling back to on-demand; None: only the env flag."""
    spot_price_per_hour: float | None = None
    """Price of one spot instance per hour (any currency, 0 to 10^6); None: unknown."""
    on_demand_price_per_hour: float | None = None
    """Price of one on-demand instance per hour (same currency, 0 to 10^6); None: unknown."""
    mtbi_prior_s: float = DEFAULT_MTBI_PRIOR_S
    """Prior mean time between interruptions in seconds, before any is observed (<= 1 year)."""
    max_stall_s: float = 1800.0
    """Seconds without a step, once one came, before the attempt is stopped as hung (<= 7 d)."""
    instances: int = 1
    """Instances (machines) one attempt occupies, for the cost report (1 to 100000)."""
    deadline_h: float | None = None
    """Hours from a job's start by which it must finish (<= 1 year), for simulate --compare."""

    def __post_init__(self) -> None:
        for spec in fields(self):
            value = getattr(self, spec.name)
            checked = _check_field(spec.name, value)
            if checked is not value:
                # Normalise ints given for float fields (TOML `grace_s = 30`) to float.
                object.__setattr__(self, spec.name, checked)
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"backoff_max_s = {self.backoff_max_s!r}: must be >= backoff_initial_s "
                f"({self.backoff_initial_s!r}), or the first delay already breaks the cap"
            )

    @property
    def prices(self) -> Prices:
        """The pool's spot and on-demand prices per hour (`spot_price_per_hour`,
        `on_demand_price_per_hour`), for the job record and the cost report.

        Example:
            >>> Pool(spot_price_per_hour=1.1, on_demand_price_per_hour=3.67).prices.spot_per_hour
            1.1
        """
        return Prices(
            spot_per_hour=self.spot_price_per_hour,
            on_demand_per_hour=self.on_demand_price_per_hour,
        )


POOL_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Pool))

# Upper bounds. Nothing sensible lies beyond them, and a huge finite value is not harmless:
# a lease TTL of 1e300 s overflows the heartbeat thread's wait, a backoff of 1e300 s waits
# forever, a budget of 10^300 hides a stuck job for ever.
# Budgets (10^6 restarts), backoff delays (a day) and the multiplier (100) are the retry
# policy's bounds (spotsafe.policy.retry); spotsafe.lease checks MAX_LEASE_TTL_S too.
MAX_LOST_WORK_S = 7 * 86400.0  # a week of training
MAX_KEEP_LAST = 1000
MAX_GRACE_S = 3600.0  # an hour: clouds give 30 s to 2 min, Slurm's --signal is minutes
MAX_LEASE_TTL_S = 86400.0  # a day without a heartbeat is a dead supervisor
MAX_PRICE_PER_HOUR = 1e6
MAX_MTBI_PRIOR_S = 365 * 86400.0  # a year
MAX_STALL_S = 7 * 86400.0  # a week without a step is no training
MAX_INSTANCES = 100_000
MAX_DEADLINE_H = 365 * 24.0  # a year

# (kind, minimum, maximum, why). Kinds: "int" (a TOML integer), "float" (integer or float,
# finite), "opt_*" the same or None. Minimums are inclusive unless the kind ends in ">"
# (exclusive); maximums are inclusive.
_RULES: dict[str, tuple[str, float, float, str]] = {
    "max_preemptions": ("int", 0, MAX_BUDGET, "restarts after preemptions"),
    "max_failures": ("int", 0, MAX_BUDGET, "restarts after crashes"),
    "max_no_progress": ("int", 0, MAX_BUDGET, "restarts in a row without progress"),
    "backoff_initial_s": ("float", 0, MAX_DELAY_S, "a delay in seconds"),
    "backoff_max_s": ("float", 0, MAX_DELAY_S, "a delay in seconds"),
    "backoff_multiplier": (
        "float",
        1,
        MAX_MULTIPLIER,
        "a delay must not shrink along a streak",
    ),
    "jitter": ("float", 0, 1, "a fraction of the delay"),
    "max_lost_work_s": (
        "float>",
        0,
        MAX_LOST_WORK_S,
        "seconds of work; 0 would mean saving continuously",
    ),
    "keep_last": ("int", 2, MAX_KEEP_LAST, "retention keeps a fallback behind the newest"),
    "grace_s": ("float>", 0, MAX_GRACE_S, "the child needs time to flush its checkpoint"),
    "lease_ttl_s": ("float>", 0, MAX_LEASE_TTL_S, "a lease that expires at once fences nobody"),
    "on_demand_after": ("opt_int", 0, MAX_BUDGET, "interruptions before the on-demand fallback"),
    "on_demand_command": ("opt_str", 0, 0, "a shell command"),
    "spot_price_per_hour": ("opt_float", 0, MAX_PRICE_PER_HOUR, "a price"),
    "on_demand_price_per_hour": ("opt_float", 0, MAX_PRICE_PER_HOUR, "a price"),
    "mtbi_prior_s": ("float>", 0, MAX_MTBI_PRIOR_S, "a mean time in seconds"),
    "max_stall_s": ("float>", 0, MAX_STALL_S, "seconds without a step before a hang is declared"),
    "instances": ("int", 1, MAX_INSTANCES, "machines one attempt runs on"),
    "deadline_h": ("opt_float>", 0, MAX_DEADLINE_H, "hours from the job's start"),
}


def _check_field(name: str, value: object) -> object:
    """Return `value` checked (and an int made float for float fields), or raise ConfigError."""
    kind, minimum, maximum, why = _RULES[name]
    optional = kind.startswith("opt_")
    if optional:
        if value is None:
            return None
        kind = kind[4:]
    exclusive = kind.endswith(">")
    kind = kind.rstrip(">")
    none_hint = " or absent (None)" if optional else ""

    def bad(rule: str) -> ConfigError:
        return ConfigError(f"{name} = {value!r}: must be {rule}{none_hint} ({why})")

    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise bad("a non-empty string")
        return value
    noun = "an integer" if kind == "int" else "a finite number"
    rule = f"{noun} {'>' if exclusive else '>='} {minimum:g} and <= {maximum:g}"
    # bool is an int subclass; `max_failures = true` is a mistake, not 1.
    if isinstance(value, bool):
        raise bad(rule)
    if kind == "int":
        if not isinstance(value, int) or not minimum <= value <= maximum:
            raise bad(rule)
        return value
    if not isinstance(value, (int, float)):
        raise bad(rule)
    try:
        number = float(value)
    except OverflowError:
        raise bad(rule) from None
    if not math.isfinite(number) or not minimum <= number <= maximum:
        raise bad(rule)
    if exclusive and number == minimum:
        raise bad(rule)
    return number if isinstance(value, int) else value


# The presets. Numbers are starting points that say what each workload values; every one can
# be overridden per key in spotsafe.toml.
PRESETS: Mapping[str, Pool] = {
    # Scheduled retraining whose output someone waits for: few surprises, fall back to
    # on-demand after the second interruption, lose at most 10 min per unclean kill.
    "critical": Pool(
        max_preemptions=20,
        max_failures=2,
        max_no_progress=2,
        backoff_initial_s=30.0,
        backoff_max_s=900.0,
        max_lost_work_s=600.0,
        on_demand_after=2,
    ),
    "standard": Pool(),
    # Sweeps and trials: cheap capacity matters more than any one run, and a crashing trial
    # is usually a bug, so retry crashes once and interruptions almost without limit.
    "experiment": Pool(
        max_preemptions=1000,
        max_failures=1,
        max_no_progress=2,
        backoff_initial_s=5.0,
        backoff_max_s=300.0,
        max_lost_work_s=3600.0,
        keep_last=2,
    ),
    # Multi-day runs: many interruptions and the odd flaky crash (NCCL timeouts, a bad host)
    # over the run's life; strict lost-work budget and a deeper fallback chain of checkpoints.
    "long-run": Pool(
        max_preemptions=1000,
        max_failures=10,
        max_no_progress=5,
        max_lost_work_s=900.0,
        keep_last=5,
    ),
}


def _hint(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _names(choices: list[str]) -> str:
    return ", ".join(sorted(choices))


def get_pool(name: str, pools: Mapping[str, Pool] | None = None) -> Pool:
    """Return the pool called `name`, or raise ConfigError listing the valid names.

    Args:
        name: the pool's name, e.g. from ``--pool`` or ``$SPOTSAFE_POOL``.
        pools: the pools to look in; `PRESETS` when None.

    Example:
        >>> get_pool("critical").on_demand_after
        2
    """
    pools = PRESETS if pools is None else pools
    try:
        return pools[name]
    except KeyError:
        raise ConfigError(
            f"unknown pool {name!r}{_hint(name, list(pools))} valid pools: {_names(list(pools))}"
        ) from None


def parse_pools(data: Mapping[str, object], *, source: str) -> dict[str, Pool]:
    """Validate parsed TOML into pools: the presets, overridden and extended by `data`.

    Args:
        data: the parsed document (or its ``[tool.spotsafe]`` table).
        source: where `data` came from, for error messages (a path).

    Returns:
        Every preset plus every pool in the file, by name.

    Raises:
        ConfigError: an unknown key (with a "did you mean" hint), a bad value or a bad pool
            name, naming `source`, the pool and the key.

    Example:
        >>> parse_pools({"pools": {"critical": {"keep_last": 4}}}, source="x")["critical"].keep_last
        4
    """
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{source}: unknown key {key!r}{_hint(str(key), sorted(TOP_LEVEL_KEYS))} "
                f"valid keys: {_names(list(TOP_LEVEL_KEYS))}"
            )
    pools: dict[str, Pool] = dict(PRESETS)
    tables = data.get("pools", {})
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{source}: `pools` must be a table of [pools.NAME] tables")
    allowed = [*POOL_FIELDS, _EXTENDS]
    for name, table in tables.items():
        where = f"{source}: [pools.{name}]"
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise ConfigError(
                f"{where}: bad pool name: use letters, digits, '-' and '_' (at most 64)"
            )
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: must be a table of settings, got {table!r}")
        for key in table:
            if key not in allowed:
                raise ConfigError(
                    f"{where}: unknown key {key!r}{_hint(str(key), allowed)} "
                    f"valid keys: {_names(allowed)}"
                )
        base = _base_pool(name, table, where)
        overrides = {k: v for k, v in table.items() if k != _EXTENDS}
        try:
            pools[name] = dataclasses.replace(base, **overrides)
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from e
    return pools


def _base_pool(name: str, table: Mapping[str, object], where: str) -> Pool:
    """The pool a file table starts from: the preset of its name, its `extends`, or standard."""
    extends = table.get(_EXTENDS)
    if name in PRESETS:
        if extends is not None and extends != name:
            raise ConfigError(
                f"{where}: a preset cannot extend another pool ({_EXTENDS} = {extends!r}); "
                f"define a new pool with {_EXTENDS} = {extends!r} instead"
            )
        return PRESETS[name]
    if extends is None:
        return PRESETS[DEFAULT_POOL]
    if not isinstance(extends, str) or extends not in PRESETS:
        raise ConfigError(
            f"{where}: {_EXTENDS} = {extends!r}: must name a preset"
            f"{_hint(str(extends), list(PRESETS))} valid presets: {_names(list(PRESETS))}"
        )
    return PRESETS[extends]


def find_config(path: str | Path | None = None, *, cwd: str | Path | None = None) -> Path | None:
    """The config file `load_pools` reads: `path`, else ./spotsafe.toml, else ./pyproject.toml.

    Args:
        path: an explicit ``--config FILE``; it must exist.
        cwd: the directory searched for the defaults; the process's working directory if None.

    Returns:
        The file to read, or None when there is none (the presets apply).

    Example:
        >>> find_config(cwd="/nonexistent") is None
        True
    """
    if path is not None:
        explicit = Path(path)
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found (given with --config)")
        return explicit
    base = Path.cwd() if cwd is None else Path(cwd)
    for candidate in (base / "spotsafe.toml", base / "pyproject.toml"):
        if candidate.is_file():
            return candidate
    return None


def load_pools(path: str | Path | None = None, *, cwd: str | Path | None = None) -> dict[str, Pool]:
    """Load the pools in effect: the presets, overridden by the config file if there is one.

    The file is `path` (``--config FILE``), else ``./spotsafe.toml``, else
    ``./pyproject.toml``. In a file named ``pyproject.toml`` the settings live under
    ``[tool.spotsafe]`` (absent: the presets apply); in any other file at the top level.

    Args:
        path: an explicit config file, or None to search `cwd`.
        cwd: the directory searched when `path` is None; the working directory if None.

    Raises:
        ConfigError: a missing explicit file, unreadable file, invalid TOML, unknown key or bad
            value, naming the file, the pool and the key.

    Example:
        >>> sorted(load_pools(cwd="/nonexistent"))
        ['critical', 'experiment', 'long-run', 'standard']
    """
    config = find_config(path, cwd=cwd)
    if config is None:
        return dict(PRESETS)
    try:
        with config.open("rb") as f:
            document = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{config}: invalid TOML: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{config}: cannot read the config file: {e}") from e
    if config.name == "pyproject.toml":
        tool = document.get("tool", {})
        section = tool.get("spotsafe", {}) if isinstance(tool, dict) else {}
        if not isinstance(section, dict):
            raise ConfigError(f"{config}: [tool.spotsafe] must be a table")
        return parse_pools(section, source=f"{config} [tool.spotsafe]")
    return parse_pools(document, source=str(config))


def pool_from_env(env: ChildEnv | Mapping[str, str] | None = None) -> Pool:
    """The pool a supervised child runs under: ``$SPOTSAFE_POOL`` (default `DEFAULT_POOL`),
    from ``$SPOTSAFE_CONFIG`` (default: ./spotsafe.toml or ./pyproject.toml, else the
    presets). Outside the supervisor, that is the ``standard`` pool unless the user set them.

    The Checkpointer takes its ``keep_last`` from it and the Guard its interval, grace and
    MTBI prior, so the pool the supervisor was given governs its child too.

    Args:
        env: the child environment, or a mapping to read it from; None: ``os.environ``.

    Raises:
        ConfigError: an unknown pool name (listing the valid ones) or a bad config file.

    Example:
        >>> pool_from_env({"SPOTSAFE_POOL": "long-run"}).keep_last
        5
    """
    child = env if isinstance(env, ChildEnv) else ChildEnv.from_environ(env)
    return get_pool(child.pool or DEFAULT_POOL, load_pools(child.config))


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def format_pools(pools: Mapping[str, Pool], *, source: Path | str | None = None) -> str:
    """A plain-text table of the effective settings: one row per setting, one column per pool.

    Args:
        pools: the pools to show, e.g. from `load_pools`.
        source: the config file they came from, shown in the heading; None: presets only.

    Example:
        >>> print(format_pools({"standard": PRESETS["standard"]}).splitlines()[1])
        setting                   standard
    """
    origin = (
        f"from {source}"
        if source is not None
        else "(built-in presets: no --config, ./spotsafe.toml or ./pyproject.toml)"
    )
    heading = f"pools {origin}; default: {DEFAULT_POOL}"
    names = list(pools)
    rows = [["setting", *names]]
    rows += [[f, *(_cell(getattr(pools[n], f)) for n in names)] for f in POOL_FIELDS]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[0] = max(widths[0], 24)
    lines = [heading]
    for row in rows:
        lines.append(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return "\n".join(lines)
