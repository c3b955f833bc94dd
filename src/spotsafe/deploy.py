"""`spotsafe deploy`: the orchestrator's side of a retryable clean stop, derived from a pool.

A clean stop (exit 75, state durable) is only half the contract: the orchestrator must give
the flush time before SIGKILL, retry exit 75 without counting it as a failure, and keep the
store off the node. :func:`render` writes that configuration for one orchestrator:

- ``k8s``: a batch/v1 Job (and the PersistentVolumeClaim of a path store): ``podFailurePolicy``
  ignores exit 75 and the ``DisruptionTarget`` condition (node drain, spot reclaim), so
  neither counts against ``backoffLimit`` (the pool's ``max_failures``);
  ``terminationGracePeriodSeconds`` is the pool's ``grace_s`` plus a margin; the store is an
  object store URL or a PVC, never ``emptyDir``.
- ``jobset``: a JobSet for multi-node jobs (``--nodes``, default the pool's ``instances``):
  a preempted or stopped worker fails its Job through the pod failure policy, and the whole
  set restarts without using up ``maxRestarts`` (which counts crashes).
- ``skypilot``: a task with ``use_spot`` and ``job_recovery`` (``recover_on_exit_codes: [75]``).
- ``slurm``: a batch script with ``--requeue`` and ``--signal=B:USR1@GRACE`` whose shell
  forwards the signal and requeues the job when it exits 75.
- ``systemd``: a unit that restarts on failure and gives ``TimeoutStopSec`` for the flush.

Each runs the command under ``spotsafe run`` (one supervisor per job: its retry budget lives
in the store), except the workers of a multi-node JobSet or SkyPilot task, which run it
directly: the orchestrator restarts all of them together.

Example:
    >>> from spotsafe.policy import get_pool
    >>> spec = Spec(command=("python", "train.py"), pool_name="standard",
    ...             pool=get_pool("standard"), store="s3://bucket/run", name="train")
    >>> print(render(Target.SYSTEMD, spec).splitlines()[0])
    # spotsafe deploy systemd --pool standard: grace 25 s + 5 s margin before SIGKILL
"""

from __future__ import annotations

import enum
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from spotsafe.errors import ConfigError
from spotsafe.redact import redact_url

if TYPE_CHECKING:
    from spotsafe.policy.pools import Pool

__all__ = ["Spec", "Target", "grace_with_margin_s", "manifests", "render", "to_yaml"]

EXIT_PREEMPTED = 75  # the clean-stop contract (spotsafe.guard)
CONTAINER = "train"
DEFAULT_PATH_STORE = "/mnt/spotsafe-store"  # where a PVC is mounted when no --store is given
MASTER_PORT = 29500  # torchrun's default rendezvous port
_OBJECT_STORES = ("s3://", "gs://", "gcs://", "az://", "abfs://", "abfss://")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?$")  # a DNS-1123 label, short


class Target(enum.Enum):
    """The orchestrators ``spotsafe deploy`` writes for."""

    K8S = "k8s"
    JOBSET = "jobset"
    SKYPILOT = "skypilot"
    SLURM = "slurm"
    SYSTEMD = "systemd"


def grace_with_margin_s(grace_s: float) -> int:
    """The orchestrator's grace: the pool's plus a margin for the supervisor's own exit
    (recording the attempt's end, releasing the lease): 20%, at least 5 s, whole seconds.

    Example:
        >>> grace_with_margin_s(25.0), grace_with_margin_s(120.0)
        (30, 144)
    """
    return math.ceil(grace_s + max(5.0, 0.2 * grace_s))


@dataclass(frozen=True, slots=True, kw_only=True)
class Spec:
    """What to deploy."""

    command: tuple[str, ...]
    """The training command."""
    pool_name: str
    """The pool's name (passed to ``spotsafe run --pool`` and ``$SPOTSAFE_POOL``)."""
    pool: Pool
    """The pool's settings: grace, budgets, instances."""
    store: str | None = None
    """The store: an object store URL, or a path (a PVC is mounted there); None: a PVC at
    /mnt/spotsafe-store (a URL is required for SkyPilot)."""
    name: str = "spotsafe-job"
    """The job's name (a DNS label: lower case, digits, '-')."""
    image: str = "python:3.11-slim"
    """The container image (k8s, jobset)."""
    nodes: int | None = None
    """Machines per attempt (jobset, skypilot, slurm); None: the pool's ``instances``."""
    storage_size: str = "100Gi"
    """Size of the PersistentVolumeClaim of a path store (k8s, jobset)."""

    def __post_init__(self) -> None:
        if not self.command:
            raise ConfigError("spotsafe deploy: give the training command after --")
        if not _NAME_RE.match(self.name):
            raise ConfigError(
                f"--name {self.name!r}: must be a DNS label (lower-case letters, digits and "
                "'-', at most 52 characters, starting and ending with a letter or digit)"
            )
        if self.store is not None and self.store.startswith("memory://"):
            raise ConfigError(
                f"--store {self.store}: an in-memory store dies with the process; use an "
                "object store (s3://...) or a path on a persistent volume"
            )
        if self.nodes is not None and not 1 <= self.nodes <= 100_000:
            raise ConfigError(f"--nodes {self.nodes}: must be between 1 and 100000")

    @property
    def node_count(self) -> int:
        return self.nodes if self.nodes is not None else self.pool.instances

    @property
    def grace_s(self) -> int:
        return grace_with_margin_s(self.pool.grace_s)

    @property
    def object_store(self) -> bool:
        return self.store is not None and self.store.lower().startswith(_OBJECT_STORES)

    @property
    def path_store(self) -> str:
        return self.store or DEFAULT_PATH_STORE

    def env(self) -> dict[str, str]:
        """The supervisor's environment: the store and the pool."""
        return {
            "SPOTSAFE_STORE": self.path_store,  # the URL itself for an object store
            "SPOTSAFE_POOL": self.pool_name,
        }

    def supervised(self) -> list[str]:
        """The command under the supervisor."""
        return ["spotsafe", "run", "--pool", self.pool_name, "--", *self.command]

    def header(self, target: Target) -> str:
        return (
            f"spotsafe deploy {target.value} --pool {self.pool_name}: grace "
            f"{self.pool.grace_s:g} s + {self.grace_s - self.pool.grace_s:g} s margin before "
            "SIGKILL"
        )


def _pod_spec(spec: Spec, command: list[str], extra_env: list[dict[str, Any]]) -> dict[str, Any]:
    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in spec.env().items()]
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": spec.image,
        "command": command,
        "env": env + extra_env,
    }
    pod: dict[str, Any] = {
        "restartPolicy": "Never",  # podFailurePolicy requires it; the Job makes new pods
        "terminationGracePeriodSeconds": spec.grace_s,
        "containers": [container],
    }
    if not spec.object_store:
        container["volumeMounts"] = [{"name": "store", "mountPath": spec.path_store}]
        pod["volumes"] = [
            {"name": "store", "persistentVolumeClaim": {"claimName": f"{spec.name}-store"}}
        ]
    return pod


def _pvc(spec: Spec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": f"{spec.name}-store", "labels": _labels(spec)},
        "spec": {
            # ReadWriteOnce: one pod at a time writes (spotsafe fences a second writer); use
            # ReadWriteMany storage for a JobSet whose ranks run on several nodes.
            "accessModes": ["ReadWriteMany" if spec.node_count > 1 else "ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage_size}},
        },
    }


def _labels(spec: Spec) -> dict[str, str]:
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "spotsafe"}


def _k8s(spec: Spec) -> list[dict[str, Any]]:
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "backoffLimit": spec.pool.max_failures,  # crashes; preemptions are ignored below
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",  # a clean stop: retry, do not count it
                        "onExitCodes": {
                            "containerName": CONTAINER,
                            "operator": "In",
                            "values": [EXIT_PREEMPTED],
                        },
                    },
                    {
                        "action": "Ignore",  # evicted: node drain, spot reclaim, preemption
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": {
                "metadata": {"labels": _labels(spec)},
                "spec": _pod_spec(spec, spec.supervised(), []),
            },
        },
    }
    return [job] if spec.object_store else [_pvc(spec), job]


def _jobset(spec: Spec) -> list[dict[str, Any]]:
    n = spec.node_count
    rank_env: list[dict[str, Any]] = [
        {"name": "NNODES", "value": str(n)},
        {
            "name": "NODE_RANK",
            "valueFrom": {
                "fieldRef": {
                    "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"
                }
            },
        },
        # JobSet's headless service names pod <jobset>-<replicatedJob>-<job>-<index>.
        {"name": "MASTER_ADDR", "value": f"{spec.name}-workers-0-0.{spec.name}"},
        {"name": "MASTER_PORT", "value": str(MASTER_PORT)},
    ]
    fail_job = {"containerName": CONTAINER, "operator": "In", "values": [EXIT_PREEMPTED]}
    jobset = {
        "apiVersion": "jobset.x-k8s.io/v1alpha2",
        "kind": "JobSet",
        "metadata": {"name": spec.name, "labels": _labels(spec)},
        "spec": {
            "network": {"enableDNSHostnames": True},
            "failurePolicy": {
                "maxRestarts": spec.pool.max_failures,  # crashes
                "rules": [
                    {
                        # A worker stopped cleanly (75) or evicted failed its Job through
                        # the pod failure policy: restart every rank, do not count it.
                        "action": "RestartJobSetAndIgnoreMaxRestarts",
                        "onJobFailureReasons": ["PodFailurePolicy"],
                    }
                ],
            },
            "replicatedJobs": [
                {
                    "name": "workers",
                    "replicas": 1,
                    "template": {
                        "spec": {
                            "parallelism": n,
                            "completions": n,
                            "completionMode": "Indexed",
                            "backoffLimit": 0,
                            "podFailurePolicy": {
                                "rules": [
                                    {"action": "FailJob", "onExitCodes": fail_job},
                                    {
                                        "action": "FailJob",
                                        "onPodConditions": [
                                            {"type": "DisruptionTarget", "status": "True"}
                                        ],
                                    },
                                ]
                            },
                            "template": {
                                "metadata": {"labels": _labels(spec)},
                                "spec": _pod_spec(spec, list(spec.command), rank_env),
                            },
                        }
                    },
                }
            ],
        },
    }
    return [jobset] if spec.object_store else [_pvc(spec), jobset]


def _skypilot(spec: Spec) -> list[dict[str, Any]]:
    if not spec.object_store:
        raise ConfigError(
            "spotsafe deploy skypilot: give --store as an object store URL (s3://bucket/run, "
            "gs://..., az://...): a path on the VM's disk dies with the spot VM"
        )
    task: dict[str, Any] = {
        "name": spec.name,
        "resources": {
            "use_spot": True,
            "job_recovery": {
                "strategy": "FAILOVER",
                "max_restarts_on_errors": spec.pool.max_failures,
                "recover_on_exit_codes": [EXIT_PREEMPTED],
            },
        },
        "envs": spec.env(),
        "setup": "pip install 'spotsafe[s3,gcs,azure]'",
        # One node: under the supervisor. Several: every node runs the command itself (one
        # supervisor per job), and SkyPilot's recovery restarts the whole cluster on 75.
        "run": shlex.join(spec.supervised() if spec.node_count == 1 else spec.command) + "\n",
    }
    if spec.node_count > 1:
        task["num_nodes"] = spec.node_count
    return [task]


def _slurm(spec: Spec) -> str:
    env = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in spec.env().items())
    return f"""#!/bin/bash
# {spec.header(Target.SLURM)}
#SBATCH --job-name={spec.name}
#SBATCH --nodes={spec.node_count}
#SBATCH --requeue
#SBATCH --signal=B:USR1@{spec.grace_s}
#SBATCH --open-mode=append
{env}

# The supervisor runs in the background so that this shell can take Slurm's signals: USR1
# ({spec.grace_s} s before the time limit) and TERM (preemption) become a clean stop.
# (Several nodes: make the command an srun that starts one task per node.)
{shlex.join(spec.supervised())} &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' USR1 TERM
while true; do
    wait "$child"
    rc=$?
    kill -0 "$child" 2>/dev/null || break  # wait returns early when a trap runs
done
if [ "$rc" -eq {EXIT_PREEMPTED} ]; then
    # Stopped cleanly, state durable: queue the same job again; it resumes from the store.
    scontrol requeue "$SLURM_JOB_ID"
    exit 0
fi
exit "$rc"
"""


def _systemd_arg(arg: str, *, exec_line: bool = True) -> str:
    """One word of an ExecStart= (or, with ``exec_line=False``, an Environment=) line, quoted
    as systemd reads it: ``%`` is a specifier everywhere, ``$`` a variable in ExecStart."""
    text = arg.replace("%", "%%")
    if exec_line:
        text = text.replace("$", "$$")
    if re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _systemd(spec: Spec) -> str:
    env = "\n".join(f"Environment={_systemd_arg(f'{k}={v}')}" for k, v in spec.env().items())
    exec_start = " ".join(_systemd_arg(a) for a in ["/usr/bin/env", *spec.supervised()])
    return f"""# {spec.header(Target.SYSTEMD)}
[Unit]
Description=spotsafe job {spec.name}
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
{env}
ExecStart={exec_start}
# 75 (stopped cleanly) and crashes restart; the supervisor's budgets live in the store.
Restart=on-failure
RestartSec={max(1, math.ceil(spec.pool.backoff_initial_s))}
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec={spec.grace_s}

[Install]
WantedBy=multi-user.target
"""


def manifests(target: Target, spec: Spec) -> list[dict[str, Any]]:
    """The YAML documents for ``k8s``, ``jobset`` and ``skypilot``, as data.

    Raises:
        ConfigError: a target without YAML documents, or a store it cannot use.
    """
    if target is Target.K8S:
        return _k8s(spec)
    if target is Target.JOBSET:
        return _jobset(spec)
    if target is Target.SKYPILOT:
        return _skypilot(spec)
    raise ConfigError(f"spotsafe deploy {target.value} writes a script, not YAML documents")


def render(target: Target, spec: Spec) -> str:
    """The configuration for ``target``, ready to save and apply."""
    if target is Target.SLURM:
        return _slurm(spec)
    if target is Target.SYSTEMD:
        return _systemd(spec)
    docs = manifests(target, spec)
    head = f"# {spec.header(target)}\n"
    if spec.store is not None:
        head += f"# store: {redact_url(spec.store)}\n"
    return head + "---\n".join(to_yaml(d) for d in docs)


_PLAIN = re.compile(r"^[A-Za-z_/][A-Za-z0-9_./@+-]*$")
_YAML_WORDS = frozenset(
    {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
)  # fmt: skip


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar


def to_yaml(data: Any, indent: int = 0) -> str:
    """Block-style YAML for dicts, lists and scalars; multi-line strings as literal blocks.

    Example:
        >>> print(to_yaml({"a": [1, "x y"], "b": {"c": True}}), end="")
        a:
          - 1
          - "x y"
        b:
          c: true
        >>> print(to_yaml({"l": [{"k": 1, "m": [2]}]}), end="")
        l:
          - k: 1
            m:
              - 2
    """
    pad = " " * indent
    lines: list[str] = []
    if isinstance(data, Mapping):
        for k, v in data.items():
            key = _scalar(k)
            if isinstance(v, (Mapping, list)) and v:
                lines.append(f"{pad}{key}:\n{to_yaml(v, indent + 2)}".rstrip("\n"))
            elif isinstance(v, str) and "\n" in v:
                body = "".join(f"{pad}  {line}\n" for line in v.rstrip("\n").split("\n"))
                lines.append(f"{pad}{key}: |\n{body}".rstrip("\n"))
            else:
                lines.append(f"{pad}{key}: {_empty(v) if _is_empty(v) else _scalar(v)}")
    elif isinstance(data, list):
        for item in data:
            if isinstance(item, (Mapping, list)) and item:
                inner = to_yaml(item, indent + 2).rstrip("\n")
                lines.append(f"{pad}- {inner[indent + 2 :]}")
            else:
                lines.append(f"{pad}- {_empty(item) if _is_empty(item) else _scalar(item)}")
    else:
        lines.append(pad + _scalar(data))
    return "\n".join(lines) + "\n"


def _is_empty(value: Any) -> bool:
    return isinstance(value, (Mapping, list)) and not value


def _empty(value: Sequence[Any] | Mapping[str, Any]) -> str:
    return "{}" if isinstance(value, Mapping) else "[]"
