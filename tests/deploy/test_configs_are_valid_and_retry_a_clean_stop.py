"""`spotsafe deploy` writes configurations that the orchestrators accept and that make a clean
stop (exit 75) retryable: Kubernetes objects round-trip through the official client's models
with nothing dropped, the JobSet's job template is a batch/v1 JobTemplateSpec and its own keys
are the documented ones, the SkyPilot task uses only documented keys, systemd accepts the unit
(`systemd-analyze verify`), and the Slurm script requeues on 75 when run by bash with real
signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client as k8s

from spotsafe.cli import cli
from spotsafe.deploy import Spec, Target, grace_with_margin_s, manifests, render
from spotsafe.policy import Pool, get_pool

CMD = ("python", "train.py", "--lr", "3e-4", "--note", "it's a $HOME 100% run")
SLOW_GRACE = Pool(grace_s=90.0, max_failures=5)


def spec(store: str | None = "s3://bucket/run", pool: Pool | None = None, **kw: Any) -> Spec:
    return Spec(command=CMD, pool_name="standard", pool=pool or get_pool("standard"),
                store=store, name="train", **kw)  # fmt: skip


def docs(target: Target, s: Spec) -> list[dict[str, Any]]:
    """The YAML as printed, parsed back; it must equal the data it was written from."""
    parsed = [d for d in yaml.safe_load_all(render(target, s)) if d is not None]
    assert parsed == manifests(target, s)
    return parsed


def roundtrip(doc: dict[str, Any], model: str) -> Any:
    """``doc`` deserialized into the kubernetes client's ``model``; serialized back it must
    be ``doc`` again: a misspelt or misplaced key would be dropped on the way."""
    api = k8s.ApiClient()
    obj = api._ApiClient__deserialize(doc, model)  # type: ignore[attr-defined]
    assert api.sanitize_for_serialization(obj) == doc
    return obj


def no_empty_dir(doc: Any) -> bool:
    if isinstance(doc, dict):
        return "emptyDir" not in doc and all(no_empty_dir(v) for v in doc.values())
    if isinstance(doc, list):
        return all(no_empty_dir(v) for v in doc)
    return True


@pytest.mark.parametrize("store", [None, "/mnt/pv/run", "s3://bucket/run"])
@pytest.mark.parametrize("pool", [get_pool("standard"), SLOW_GRACE])
def test_kubernetes_job_is_valid_and_ignores_clean_stops_and_evictions(
    store: str | None, pool: Pool
) -> None:
    s = spec(store, pool)
    *pvcs, job_doc = docs(Target.K8S, s)
    job = roundtrip(job_doc, "V1Job")
    rules = job.spec.pod_failure_policy.rules
    assert rules[0].action == "Ignore"
    assert rules[0].on_exit_codes.container_name == "train"
    assert (rules[0].on_exit_codes.operator, rules[0].on_exit_codes.values) == ("In", [75])
    assert rules[1].action == "Ignore"
    assert rules[1].on_pod_conditions[0].type == "DisruptionTarget"
    pod = job.spec.template.spec
    assert pod.restart_policy == "Never"  # podFailurePolicy requires it
    assert pod.termination_grace_period_seconds == grace_with_margin_s(pool.grace_s)
    assert pod.termination_grace_period_seconds > pool.grace_s
    assert job.spec.backoff_limit == pool.max_failures
    [container] = pod.containers
    assert container.command == ["spotsafe", "run", "--pool", "standard", "--", *CMD]
    env = {e.name: e.value for e in container.env}
    assert env == {"SPOTSAFE_STORE": store or "/mnt/spotsafe-store", "SPOTSAFE_POOL": "standard"}
    assert no_empty_dir(job_doc)
    if store is not None and store.startswith("s3://"):
        assert pvcs == [] and pod.volumes is None
    else:
        [pvc_doc] = pvcs
        pvc = roundtrip(pvc_doc, "V1PersistentVolumeClaim")
        assert pod.volumes[0].persistent_volume_claim.claim_name == pvc.metadata.name
        assert container.volume_mounts[0].mount_path == env["SPOTSAFE_STORE"]


# The JobSet API (jobset.x-k8s.io/v1alpha2, sigs.k8s.io/jobset api/jobset/v1alpha2
# jobset_types.go): the keys this generator may use, and the failure-policy actions.
JOBSET_SPEC_KEYS = {"replicatedJobs", "network", "successPolicy", "failurePolicy",
                    "startupPolicy", "suspend", "coordinator", "managedBy",
                    "ttlSecondsAfterFinished"}  # fmt: skip
JOBSET_FAILURE_POLICY_KEYS = {"maxRestarts", "restartStrategy", "rules"}
JOBSET_RULE_KEYS = {"name", "action", "onJobFailureReasons", "targetReplicatedJobs"}
JOBSET_ACTIONS = {"FailJobSet", "RestartJobSet", "RestartJobSetAndIgnoreMaxRestarts"}
JOBSET_REPLICATED_JOB_KEYS = {"name", "groupName", "template", "replicas", "dependsOn"}
JOBSET_NETWORK_KEYS = {"enableDNSHostnames", "subdomain", "publishNotReadyAddresses"}


def test_jobset_restarts_every_rank_on_a_clean_stop_without_using_up_restarts() -> None:
    s = spec(nodes=4, pool=SLOW_GRACE)
    [doc] = docs(Target.JOBSET, s)
    assert (doc["apiVersion"], doc["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
    roundtrip(doc["metadata"], "V1ObjectMeta")
    js = doc["spec"]
    assert set(js) <= JOBSET_SPEC_KEYS
    assert set(js["network"]) <= JOBSET_NETWORK_KEYS
    policy = js["failurePolicy"]
    assert set(policy) <= JOBSET_FAILURE_POLICY_KEYS
    assert policy["maxRestarts"] == SLOW_GRACE.max_failures
    [rule] = policy["rules"]
    assert set(rule) <= JOBSET_RULE_KEYS and rule["action"] in JOBSET_ACTIONS
    assert rule == {"action": "RestartJobSetAndIgnoreMaxRestarts",
                    "onJobFailureReasons": ["PodFailurePolicy"]}  # fmt: skip
    [rjob] = js["replicatedJobs"]
    assert set(rjob) <= JOBSET_REPLICATED_JOB_KEYS
    template = roundtrip(rjob["template"], "V1JobTemplateSpec")
    job = template.spec
    assert (job.parallelism, job.completions, job.completion_mode) == (4, 4, "Indexed")
    # A stop or an eviction fails the Job through its pod failure policy: the rule above.
    actions = [
        (r.action, r.on_exit_codes, r.on_pod_conditions) for r in job.pod_failure_policy.rules
    ]
    assert actions[0][0] == "FailJob" and actions[0][1].values == [75]
    assert actions[1][0] == "FailJob" and actions[1][2][0].type == "DisruptionTarget"
    pod = job.template.spec
    assert pod.termination_grace_period_seconds == grace_with_margin_s(90.0)
    [container] = pod.containers
    assert container.command == list(CMD)  # every rank runs it; JobSet restarts them all
    env = {e.name for e in container.env}
    assert {"SPOTSAFE_STORE", "NODE_RANK", "MASTER_ADDR", "NNODES"} <= env


# SkyPilot's task YAML (docs.skypilot.co, "YAML configuration"; resources.job_recovery for
# managed jobs): the keys this generator may use.
SKY_TASK_KEYS = {"name", "workdir", "num_nodes", "resources", "envs", "secrets", "volumes",
                 "file_mounts", "setup", "run", "config"}  # fmt: skip
SKY_RESOURCES_KEYS = {"cloud", "region", "zone", "accelerators", "cpus", "memory",
                      "instance_type", "use_spot", "job_recovery", "disk_size", "disk_tier",
                      "ports", "image_id", "labels", "any_of", "ordered", "infra"}  # fmt: skip
SKY_RECOVERY_KEYS = {"strategy", "max_restarts_on_errors", "recover_on_exit_codes"}


@pytest.mark.parametrize("nodes", [1, 3])
def test_skypilot_task_uses_spot_and_recovers_on_75(nodes: int) -> None:
    [task] = docs(Target.SKYPILOT, spec(nodes=nodes))
    assert set(task) <= SKY_TASK_KEYS
    assert set(task["resources"]) <= SKY_RESOURCES_KEYS
    assert task["resources"]["use_spot"] is True
    recovery = task["resources"]["job_recovery"]
    assert set(recovery) <= SKY_RECOVERY_KEYS
    assert recovery["recover_on_exit_codes"] == [75]
    assert recovery["strategy"] in {"FAILOVER", "EAGER_NEXT_REGION"}
    assert task["envs"]["SPOTSAFE_STORE"] == "s3://bucket/run"
    assert task.get("num_nodes", 1) == nodes
    assert task["run"].startswith("spotsafe run --pool standard --" if nodes == 1 else "python")


def test_skypilot_refuses_a_store_on_the_vms_own_disk() -> None:
    result = CliRunner().invoke(cli, ["deploy", "skypilot", "--store", "/data/run", "--", "x"])
    assert result.exit_code == 2
    assert "object store URL" in result.output


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "spotsafe-train.service"
    unit.write_text(render(Target.SYSTEMD, spec("/mnt/pv/my run", SLOW_GRACE)))
    text = unit.read_text()
    check = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "Restart=on-failure" in text
    assert f"TimeoutStopSec={grace_with_margin_s(90.0)}" in text
    assert 'Environment="SPOTSAFE_STORE=/mnt/pv/my run"' in text
    assert '"it\'s a $$HOME 100%% run"' in text  # systemd reads back the argument as given


FAKE_SPOTSAFE = """#!/bin/bash
echo "$@" > "$FAKE_DIR/args"
trap 'echo term > "$FAKE_DIR/got"; exit 75' TERM
case "$FAKE_MODE" in
  exit75) exit 75 ;;
  crash) exit 3 ;;
  wait) touch "$FAKE_DIR/ready"; while true; do sleep 0.05; done ;;
esac
"""
FAKE_SCONTROL = '#!/bin/bash\necho "$@" >> "$FAKE_DIR/scontrol"\n'


def run_batch(tmp_path: Path, mode: str, *, signal_after_ready: int | None = None) -> int:
    """Run the generated batch script with bash, a fake `spotsafe` and a fake `scontrol`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("spotsafe", FAKE_SPOTSAFE), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(render(Target.SLURM, spec("s3://bucket/run")))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DIR": str(tmp_path),
           "FAKE_MODE": mode, "SLURM_JOB_ID": "4242"}  # fmt: skip
    proc = subprocess.Popen(["bash", str(script)], env=env)
    if signal_after_ready is not None:
        deadline = time.monotonic() + 30
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal_after_ready)
    return proc.wait(timeout=30)


def test_slurm_script_requeues_when_the_job_stops_cleanly(tmp_path: Path) -> None:
    text = render(Target.SLURM, spec())
    assert "#SBATCH --requeue" in text
    assert f"#SBATCH --signal=B:USR1@{grace_with_margin_s(25.0)}" in text
    assert run_batch(tmp_path, "exit75") == 0
    assert (tmp_path / "scontrol").read_text() == "requeue 4242\n"
    assert (tmp_path / "args").read_text().split() == [
        "run", "--pool", "standard", "--", "python", "train.py", "--lr", "3e-4", "--note",
        "it's", "a", "$HOME", "100%", "run"]  # fmt: skip


def test_slurm_script_turns_usr1_into_a_clean_stop_and_a_requeue(tmp_path: Path) -> None:
    assert run_batch(tmp_path, "wait", signal_after_ready=signal.SIGUSR1) == 0
    assert (tmp_path / "got").read_text() == "term\n"  # the supervisor was asked to stop
    assert (tmp_path / "scontrol").read_text() == "requeue 4242\n"


def test_slurm_script_does_not_requeue_a_crash(tmp_path: Path) -> None:
    assert run_batch(tmp_path, "crash") == 3
    assert not (tmp_path / "scontrol").exists()


def test_deploy_cli_prints_what_render_writes_for_the_pool_in_the_config(tmp_path: Path) -> None:
    config = tmp_path / "spotsafe.toml"
    config.write_text("[pools.nightly]\nextends = 'critical'\ngrace_s = 100\n")
    result = CliRunner().invoke(cli, ["deploy", "k8s", "--pool", "nightly", "--config",
                                      str(config), "--store", "gs://b/r", "--", *CMD])  # fmt: skip
    assert result.exit_code == 0, result.output
    [job] = [d for d in yaml.safe_load_all(result.output) if d]
    assert job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    assert job["spec"]["backoffLimit"] == get_pool("critical").max_failures


def test_an_in_memory_store_or_a_bad_name_is_a_user_error() -> None:
    for args in (["--store", "memory://x"], ["--name", "Bad_Name"]):
        result = CliRunner().invoke(cli, ["deploy", "k8s", *args, "--", "python", "t.py"])
        assert result.exit_code == 2, result.output
