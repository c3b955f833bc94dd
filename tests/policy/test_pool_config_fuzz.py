"""Fuzzed configs: any TOML-shaped input gives pools or a ConfigError, never another error."""

from __future__ import annotations

import math
import random
import threading
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotsafe.errors import ConfigError
from spotsafe.lease import Lease
from spotsafe.policy.pools import POOL_FIELDS, PRESETS, Pool, load_pools, parse_pools
from spotsafe.policy.retry import Budget, RetryPolicy
from spotsafe.storage import open_store

# Every number a valid pool may hold stays under these (the documented bounds).
BOUNDS = {
    "max_preemptions": 10**6, "max_failures": 10**6, "max_no_progress": 10**6,
    "on_demand_after": 10**6, "backoff_initial_s": 86400, "backoff_max_s": 86400,
    "backoff_multiplier": 100, "jitter": 1, "max_lost_work_s": 7 * 86400, "keep_last": 1000,
    "grace_s": 3600, "lease_ttl_s": 86400, "spot_price_per_hour": 10**6,
    "on_demand_price_per_hour": 10**6, "mtbi_prior_s": 365 * 86400,
    "instances": 100_000, "max_stall_s": 7 * 86400, "deadline_h": 365 * 24,
}  # fmt: skip


def assert_usable(pool: Pool) -> None:
    """A pool that validated can be carried out: bounded, finite, no overflow anywhere."""
    for name, bound in BOUNDS.items():
        value = getattr(pool, name)
        assert value is None or (math.isfinite(value) and value <= bound), (name, value)
    policy = RetryPolicy.from_pool(pool)
    for budget in Budget:
        delay = policy.backoff(budget).delay_s(10**9, rng=random.Random(0))
        assert 0.0 <= delay <= 86400.0
    # The lease heartbeat waits ttl / 4 in Event.wait, which overflowed for 1e300.
    Lease(open_store(f"memory://fuzz-{uuid.uuid4().hex}"), ttl_s=pool.lease_ttl_s)
    assert pool.lease_ttl_s / 4 < threading.TIMEOUT_MAX


# The values TOML can produce.
scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64) | st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.none(),  # not TOML, but a caller building a dict by hand may pass it
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
known_keys = st.sampled_from([*POOL_FIELDS, "extends"])
keys = st.one_of(known_keys, known_keys, known_keys, st.text(max_size=16))
# Mostly plausible numbers, so that valid pools are common and the checks past parsing run.
plausible = st.integers(min_value=-2, max_value=5000) | st.floats(min_value=-1.0, max_value=5000.0)
# Huge but finite, around every bound: they were accepted and broke the supervisor later.
huge = st.one_of(
    st.sampled_from([1e300, 1.7e308, 10**300, 10**6, 10**6 + 1, 86400, 86400.5, 3600.5, 1e7]),
    st.floats(min_value=1e3, max_value=1e308),
    st.integers(min_value=10**3, max_value=10**400),
)
setting = st.one_of(plausible, plausible, huge, values, st.sampled_from([*PRESETS, "nope"]))
tables = st.dictionaries(keys, setting, max_size=4)
known_names = st.sampled_from([*PRESETS, "team", "nightly"])
names = st.one_of(known_names, known_names, st.text(max_size=10))
pools_documents = st.fixed_dictionaries(
    {"pools": st.dictionaries(names, st.one_of(tables, tables, values), max_size=3)}
)
documents = st.one_of(
    pools_documents,
    pools_documents,
    st.dictionaries(st.text(max_size=8), values, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(documents)
def test_parse_pools_gives_pools_or_config_error(document: dict[str, object]) -> None:
    try:
        pools = parse_pools(document, source="fuzz.toml")
    except ConfigError as e:
        assert str(e).startswith("fuzz.toml")
        return
    assert set(PRESETS) <= set(pools)
    assert all(isinstance(pool, Pool) for pool in pools.values())
    for pool in pools.values():
        assert_usable(pool)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(POOL_FIELDS), values, max_size=5))
def test_pool_gives_a_pool_or_config_error(kwargs: dict[str, object]) -> None:
    try:
        pool = Pool(**kwargs)
    except ConfigError:
        return
    assert pool.keep_last >= 2 and 0.0 <= pool.jitter <= 1.0
    assert pool.backoff_max_s >= pool.backoff_initial_s
    assert_usable(pool)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([f for f in POOL_FIELDS if f != "on_demand_command"]), huge)
def test_a_value_past_its_bound_names_field_value_and_bound(field: str, value: object) -> None:
    kwargs = {field: value}
    if field == "backoff_initial_s":
        kwargs["backoff_max_s"] = 86400  # the cap, so that only the bound can refuse it
    try:
        pool = Pool(**kwargs)
    except ConfigError as e:
        message = str(e)
        assert message.startswith(f"{field} = {value!r}: must be")
        assert f"<= {BOUNDS[field]:g}" in message
        return
    assert_usable(pool)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(max_size=80))
def test_arbitrary_file_text_gives_pools_or_config_error(tmp_path: Path, text: str) -> None:
    config = tmp_path / "spotsafe.toml"
    config.write_text(text, encoding="utf-8")
    try:
        pools = load_pools(config)
    except ConfigError:
        return
    assert set(PRESETS) <= set(pools)
