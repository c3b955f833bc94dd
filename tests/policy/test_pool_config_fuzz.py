"""Fuzzed configs: any TOML-shaped input gives pools or a ConfigError, never another error."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spotsafe.errors import ConfigError
from spotsafe.policy.pools import POOL_FIELDS, PRESETS, Pool, load_pools, parse_pools

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
setting = st.one_of(plausible, plausible, values, st.sampled_from([*PRESETS, "nope"]))
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


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(POOL_FIELDS), values, max_size=5))
def test_pool_gives_a_pool_or_config_error(kwargs: dict[str, object]) -> None:
    try:
        pool = Pool(**kwargs)
    except ConfigError:
        return
    assert pool.keep_last >= 2 and 0.0 <= pool.jitter <= 1.0
    assert pool.backoff_max_s >= pool.backoff_initial_s


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
