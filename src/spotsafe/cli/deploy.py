"""``spotsafe deploy k8s|jobset|skypilot|slurm|systemd [--pool NAME] [--store URL] -- CMD``:
print the orchestrator's configuration for a job, derived from its pool.

Example:
    >>> from click.testing import CliRunner
    >>> from spotsafe.cli import cli
    >>> out = CliRunner().invoke(cli, ["deploy", "k8s", "--store", "s3://b/r", "--", "python",
    ...                                "train.py"]).output
    >>> "terminationGracePeriodSeconds: 30" in out
    True
"""

from __future__ import annotations

import click

from spotsafe.cli._params import Number


# Options may follow TARGET; the command comes after `--`, so its own flags stay its own.
@click.command("deploy")
@click.argument("target", type=click.Choice(["k8s", "jobset", "skypilot", "slurm", "systemd"]))
@click.option("--pool", default="standard", show_default=True, help="The job's pool.")
@click.option(
    "--store",
    default=None,
    help="The job's store: an object store URL (s3://...) or a path on a persistent volume "
    "(Kubernetes: a PersistentVolumeClaim is mounted there). Default: a PVC at "
    "/mnt/spotsafe-store.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default ./spotsafe.toml, or [tool.spotsafe] in ./pyproject.toml).",
)
@click.option("--name", default="spotsafe-job", show_default=True, help="The job's name.")
@click.option(
    "--image", default="python:3.11-slim", show_default=True, help="Container image (k8s, jobset)."
)
@click.option(
    "--nodes",
    type=Number(int, 1, 100_000),
    default=None,
    help="Machines per attempt (jobset, skypilot, slurm); default the pool's instances.",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def command(
    target: str,
    pool: str,
    store: str | None,
    config: str | None,
    name: str,
    image: str,
    nodes: int | None,
    command: tuple[str, ...],
) -> None:
    """Print a ready configuration for TARGET that makes a clean stop (exit 75) retryable:
    the grace before SIGKILL is the pool's plus a margin, exit 75 and evictions are retried
    without counting as failures, and the store is never on the node's own disk."""
    from spotsafe.deploy import Spec, Target, render
    from spotsafe.policy import get_pool, load_pools

    spec = Spec(
        command=command,
        pool_name=pool,
        pool=get_pool(pool, load_pools(config)),
        store=store,
        name=name,
        image=image,
        nodes=nodes,
    )
    click.echo(render(Target(target), spec), nl=False)
