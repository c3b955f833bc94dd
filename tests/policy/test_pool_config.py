"""Pools: presets, validation, loading from spotsafe.toml / pyproject.toml / --config."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import pytest

from spotsafe.errors import ConfigError
from spotsafe.policy.pools import (
    DEFAULT_POOL,
    POOL_FIELDS,
    PRESETS,
    Pool,
    find_config,
    format_pools,
    get_pool,
    load_pools,
    parse_pools,
)


def test_presets_exist_and_standard_is_the_default() -> None:
    assert set(PRESETS) == {"critical", "standard", "experiment", "long-run"}
    assert DEFAULT_POOL == "standard"
    assert PRESETS["standard"] == Pool()


def test_presets_say_what_each_workload_values() -> None:
    critical, standard = PRESETS["critical"], PRESETS["standard"]
    experiment, long_run = PRESETS["experiment"], PRESETS["long-run"]
    assert critical.on_demand_after is not None and critical.on_demand_after <= 2
    assert critical.max_lost_work_s < standard.max_lost_work_s
    assert experiment.max_failures < standard.max_failures
    assert experiment.max_preemptions > standard.max_preemptions
    assert long_run.keep_last > standard.keep_last
    assert long_run.max_lost_work_s < standard.max_lost_work_s


def test_every_field_has_a_one_line_docstring() -> None:
    import ast
    import inspect

    from spotsafe.policy import pools

    tree = ast.parse(inspect.getsource(pools))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Pool")
    documented = set()
    for prev, node in itertools.pairwise(cls.body):
        if isinstance(prev, ast.AnnAssign) and isinstance(node, ast.Expr):
            assert isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            assert "\n" not in node.value.value
            assert isinstance(prev.target, ast.Name)
            documented.add(prev.target.id)
    assert documented == set(POOL_FIELDS)


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("keep_last", 1, ">= 2"),
        ("max_failures", -1, ">= 0"),
        ("max_failures", True, "integer"),
        ("max_failures", 2.0, "integer"),
        ("jitter", 1.5, ">= 0 and <= 1"),
        ("backoff_multiplier", 0.5, ">= 1"),
        ("grace_s", 0, "> 0"),
        ("max_lost_work_s", math.nan, "finite"),
        ("lease_ttl_s", "60", "number"),
        ("on_demand_command", "", "non-empty"),
        ("spot_price_per_hour", -0.1, ">= 0"),
        ("mtbi_prior_s", 10**400, "finite"),
    ],
)
def test_bad_values_name_field_value_and_rule(field: str, value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as info:
        Pool(**{field: value})
    assert str(info.value).startswith(f"{field} = {value!r}")


@pytest.mark.parametrize(
    ("field", "value", "bound"),
    [
        ("lease_ttl_s", 1e300, "86400"),  # overflowed the heartbeat thread's wait
        ("backoff_initial_s", 1e300, "86400"),
        ("backoff_max_s", 1e300, "86400"),  # waited forever before the next attempt
        ("backoff_multiplier", 1e6, "100"),
        ("grace_s", 1e300, "3600"),
        ("max_lost_work_s", 1e12, "604800"),
        ("mtbi_prior_s", 1e300, "3.1536e+07"),
        ("max_preemptions", 10**300, "1e+06"),
        ("max_failures", 10**6 + 1, "1e+06"),
        ("max_no_progress", 10**9, "1e+06"),
        ("on_demand_after", 10**9, "1e+06"),
        ("keep_last", 10**5, "1000"),
        ("spot_price_per_hour", 1e300, "1e+06"),
        ("on_demand_price_per_hour", 1e9, "1e+06"),
    ],
)
def test_huge_finite_values_are_refused_naming_the_bound(
    field: str, value: object, bound: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Pool(**{field: value})
    message = str(info.value)
    assert message.startswith(f"{field} = {value!r}: must be")
    assert f"<= {bound}" in message


def test_values_at_the_bounds_are_accepted() -> None:
    pool = Pool(lease_ttl_s=86400, grace_s=3600, backoff_initial_s=86400, backoff_max_s=86400,
                backoff_multiplier=100, max_preemptions=10**6, keep_last=1000,
                max_lost_work_s=7 * 86400, mtbi_prior_s=365 * 86400)  # fmt: skip
    assert pool.lease_ttl_s == 86400.0 and pool.max_preemptions == 10**6


def test_the_file_names_the_pool_field_value_and_bound(tmp_path: Path) -> None:
    config = tmp_path / "spotsafe.toml"
    config.write_text("[pools.fast]\nlease_ttl_s = 1e300\n")
    with pytest.raises(ConfigError) as info:
        load_pools(config)
    message = str(info.value)
    assert str(config) in message and "[pools.fast]" in message
    assert "lease_ttl_s = 1e+300" in message and "<= 86400" in message


def test_backoff_cap_below_initial_is_an_error() -> None:
    with pytest.raises(ConfigError, match="backoff_max_s"):
        Pool(backoff_initial_s=100.0, backoff_max_s=10.0)


def test_ints_for_float_fields_become_floats() -> None:
    pool = Pool(grace_s=30, spot_price_per_hour=1)
    assert isinstance(pool.grace_s, float) and pool.grace_s == 30.0
    assert isinstance(pool.spot_price_per_hour, float)


def test_get_pool_lists_valid_names_and_suggests_one() -> None:
    assert get_pool("critical") is PRESETS["critical"]
    with pytest.raises(ConfigError) as info:
        get_pool("critcal")
    message = str(info.value)
    assert "did you mean 'critical'" in message
    assert "critical, experiment, long-run, standard" in message


def test_partial_table_overrides_only_its_keys() -> None:
    pools = parse_pools({"pools": {"critical": {"keep_last": 4}}}, source="f.toml")
    assert pools["critical"] == dataclasses.replace(PRESETS["critical"], keep_last=4)
    assert pools["standard"] is PRESETS["standard"]


def test_new_pool_starts_from_standard_or_from_extends() -> None:
    pools = parse_pools(
        {"pools": {"team": {"max_failures": 0}, "nightly": {"extends": "critical", "grace_s": 60}}},
        source="f.toml",
    )
    assert pools["team"] == dataclasses.replace(PRESETS["standard"], max_failures=0)
    assert pools["nightly"] == dataclasses.replace(PRESETS["critical"], grace_s=60.0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"pools": {"team": {"max_failurs": 1}}},
            r"\[pools.team\]: unknown key 'max_failurs'.*"
            r"did you mean 'max_failures'",
        ),
        ({"pools": {"team": {"keep_last": 1}}}, r"f.toml: \[pools.team\]: keep_last = 1"),
        ({"pool": {}}, r"f.toml: unknown key 'pool'; did you mean 'pools'"),
        ({"pools": {"team": {"extends": "critcal"}}}, r"extends = 'critcal'.*did you mean"),
        ({"pools": {"critical": {"extends": "standard"}}}, "a preset cannot extend"),
        ({"pools": {"bad name": {}}}, "bad pool name"),
        ({"pools": {"team": 3}}, "must be a table"),
        ({"pools": []}, "must be a table"),
    ],
)
def test_config_errors_name_file_pool_and_key(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_pools(data, source="f.toml")


def test_load_prefers_spotsafe_toml_then_pyproject(tmp_path: Path) -> None:
    assert load_pools(cwd=tmp_path) == dict(PRESETS)
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.spotsafe.pools.critical]\nkeep_last = 7\n'
    )
    assert load_pools(cwd=tmp_path)["critical"].keep_last == 7
    (tmp_path / "spotsafe.toml").write_text("[pools.critical]\nkeep_last = 9\n")
    assert find_config(cwd=tmp_path) == tmp_path / "spotsafe.toml"
    assert load_pools(cwd=tmp_path)["critical"].keep_last == 9


def test_pyproject_without_a_spotsafe_section_gives_the_presets(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_pools(cwd=tmp_path) == dict(PRESETS)


def test_explicit_config_wins_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "spotsafe.toml").write_text("[pools.critical]\nkeep_last = 9\n")
    other = tmp_path / "other.toml"
    other.write_text("[pools.critical]\nkeep_last = 5\n")
    assert load_pools(other, cwd=tmp_path)["critical"].keep_last == 5
    with pytest.raises(ConfigError, match="not found"):
        load_pools(tmp_path / "missing.toml")


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "spotsafe.toml"
    bad.write_text("[pools.critical\nkeep_last = ")
    with pytest.raises(ConfigError, match=r"spotsafe.toml: invalid TOML"):
        load_pools(cwd=tmp_path)


def test_bad_value_in_a_file_names_the_file_pool_and_key(tmp_path: Path) -> None:
    (tmp_path / "spotsafe.toml").write_text('[pools.nightly]\ngrace_s = "soon"\n')
    with pytest.raises(ConfigError) as info:
        load_pools(cwd=tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'spotsafe.toml'}: [pools.nightly]: grace_s")


def test_format_pools_shows_every_setting_of_every_pool() -> None:
    custom = {**PRESETS, "nightly": Pool(on_demand_command="scale-up.sh")}
    text = format_pools(custom, source="spotsafe.toml")
    lines = text.splitlines()
    assert lines[0] == "pools from spotsafe.toml; default: standard"
    assert lines[1].split() == ["setting", *custom]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert set(rows) == set(POOL_FIELDS)
    assert rows["on_demand_command"] == ["-", "-", "-", "-", "scale-up.sh"]
    assert rows["keep_last"] == ["3", "3", "2", "5", "3"]


def test_an_explicit_pyproject_is_read_under_tool_spotsafe(tmp_path: Path) -> None:
    config = tmp_path / "sub" / "pyproject.toml"
    config.parent.mkdir()
    config.write_text("[tool.spotsafe.pools.team]\nmax_failures = 0\n[pools.team]\nkeep_last = 1\n")
    assert load_pools(config)["team"].max_failures == 0


def test_pool_names_are_plain(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bad pool name"):
        parse_pools({"pools": {"team\n": {}}}, source="f.toml")
