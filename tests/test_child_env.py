"""The supervisor -> child environment is one frozen type (spotsafe.env.ChildEnv): the only
place that spells the variables, read once, validated, written whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import spotsafe
from spotsafe.env import ENV_NAMES, ChildEnv
from spotsafe.errors import ConfigError
from spotsafe.policy import pool_from_env

SRC = Path(spotsafe.__file__).parent


def test_it_round_trips_and_writes_only_what_is_set() -> None:
    full = ChildEnv(store="s3://b/run", job_id="j-1", attempt=7, pool="critical",
                    config="/etc/spotsafe.toml", on_demand=True,
                    progress="/tmp/spotsafe-progress-x/board")  # fmt: skip
    assert ChildEnv.from_environ(full.to_environ()) == full
    assert set(full.to_environ()) == set(ENV_NAMES)
    assert ChildEnv().to_environ() == {}
    assert ChildEnv.from_environ({"SPOTSAFE_ATTEMPT": " ", "SPOTSAFE_POOL": ""}) == ChildEnv()


@pytest.mark.parametrize("attempt", ["0", "-1", "two", "1.5", "١", "99999999999999999999"])
def test_an_attempt_no_supervisor_writes_is_an_error_naming_the_variable(attempt: str) -> None:
    # It was read as "not supervised" (and fenced nothing), or as attempt 0.
    with pytest.raises(ConfigError, match="SPOTSAFE_ATTEMPT"):
        ChildEnv.from_environ({"SPOTSAFE_ATTEMPT": attempt})


def test_the_on_demand_flag_is_a_yes_no_value() -> None:
    assert ChildEnv.from_environ({"SPOTSAFE_ON_DEMAND": "1"}).on_demand
    assert not ChildEnv.from_environ({"SPOTSAFE_ON_DEMAND": "0"}).on_demand
    with pytest.raises(ConfigError, match="SPOTSAFE_ON_DEMAND"):
        ChildEnv.from_environ({"SPOTSAFE_ON_DEMAND": "maybe"})


def test_apply_replaces_the_whole_contract() -> None:
    outer = {"PATH": "/bin", "SPOTSAFE_CONFIG": "/old.toml", "SPOTSAFE_ATTEMPT": "9",
             "SPOTSAFE_CLOUD": "none"}  # fmt: skip
    assert ChildEnv(attempt=2, pool="fast").apply(outer) == {
        "PATH": "/bin", "SPOTSAFE_CLOUD": "none", "SPOTSAFE_ATTEMPT": "2", "SPOTSAFE_POOL": "fast",
    }  # fmt: skip


def test_the_pool_of_a_child_comes_from_its_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[pools.nightly]\nextends = 'critical'\nkeep_last = 7\n")
    env = ChildEnv(pool="nightly", config=str(config))
    assert pool_from_env(env).keep_last == 7
    assert pool_from_env(env.to_environ()).max_lost_work_s == 600.0
    assert pool_from_env({}).keep_last == 3  # outside the supervisor: standard
    with pytest.raises(ConfigError, match="unknown pool 'nighty'"):
        pool_from_env({"SPOTSAFE_POOL": "nighty", "SPOTSAFE_CONFIG": str(config)})


def test_only_the_contract_module_spells_the_variables_in_my_modules() -> None:
    # The Checkpointer, TrainState and the Guard switch to ChildEnv with their owners'
    # changes; these modules must already not spell the names.
    mine = ["supervisor", "policy", "cli", "jobrecord.py", "lease.py", "events.py",
            "storage/open.py"]  # fmt: skip
    for part in mine:
        paths = [SRC / part] if part.endswith(".py") else list((SRC / part).rglob("*.py"))
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in ENV_NAMES:
                    raise AssertionError(f"{path.relative_to(SRC)} spells {node.value}")
