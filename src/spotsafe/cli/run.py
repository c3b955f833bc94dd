"""``spotsafe run -- CMD``: run a training command under the supervisor."""

from __future__ import annotations

import os

import click

from spotsafe.cli._params import Number
from spotsafe.env import ENV_JOB_ID, ENV_POOL, ENV_STORE


@click.command(
    "run", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@click.option("--store", envvar=ENV_STORE, help=f"The job's store (default ${ENV_STORE}).")
@click.option(
    "--job-id",
    envvar=ENV_JOB_ID,
    help="The job's id (default: the one in the store's job record, or derived from the URL).",
)
@click.option(
    "--pool",
    envvar=ENV_POOL,
    default="standard",
    show_default=True,
    help="The pool whose budgets, backoff, grace and lease TTL apply.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default ./spotsafe.toml, or [tool.spotsafe] in ./pyproject.toml).",
)
@click.option(
    "--metrics-port",
    type=Number(int, 0, 65535),
    default=None,
    help="Serve the job's Prometheus metrics on this port (0: any free one; the URL is printed).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address the metrics port binds (loopback unless you say otherwise).",
)
@click.option(
    "--metrics-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the metrics to this file for node_exporter's textfile collector "
    "(replaced whole, every 15 s and at exit).",
)
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def command(
    ctx: click.Context,
    store: str | None,
    job_id: str | None,
    pool: str,
    config: str | None,
    metrics_port: int | None,
    metrics_host: str,
    metrics_file: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND until it succeeds, resuming from the newest checkpoint after each exit.

    Exit status: 0 the job succeeded; 1 a retry budget is spent (the reason is printed);
    75 the supervisor was stopped (SIGTERM, SIGINT, a cloud notice), or could not start for a
    reason that passes (another supervisor holds the job's lease, the store did not answer):
    run it again, here or on another machine, to continue the same job; 2 a user error (a
    bad flag, pool or config file).
    """
    from spotsafe.cli._status_line import StatusLine
    from spotsafe.errors import ConfigError
    from spotsafe.interrupt import watchers_from_env
    from spotsafe.policy import get_pool, load_pools
    from spotsafe.policy.pools import find_config
    from spotsafe.storage import open_store
    from spotsafe.storage.ephemeral import check_store_durable
    from spotsafe.supervisor import Supervisor

    if not store:
        raise ConfigError(
            f"no store: pass --store URL (a path or s3://bucket/run) or set ${ENV_STORE}"
        )
    config_path = find_config(config)
    settings = get_pool(pool, load_pools(config))
    opened = open_store(store)
    check_store_durable(opened.url, allow_ephemeral=None)
    # The status line: live on a terminal, plain lines in a log (spotsafe.cli._status_line).
    status_line = StatusLine(lambda: supervisor.status)
    supervisor = Supervisor(
        store=opened,
        store_url=store if "://" in store else os.path.abspath(store),
        command=list(command),
        pool=settings,
        pool_name=pool,
        job_id=job_id,
        config=config_path,
        watchers=watchers_from_env(),
        stdout=status_line.child_stdout,
        stderr=status_line.child_stderr,
    )
    exporter = None
    if metrics_port is not None or metrics_file is not None:
        from spotsafe.metrics import serve

        exporter = serve(opened, pool=pool, port=metrics_port, host=metrics_host,
                         file=metrics_file)  # fmt: skip
        if exporter.url is not None:
            click.echo(f"spotsafe run: metrics at {exporter.url}", err=True)
    try:
        with status_line:
            outcome = supervisor.run()
    finally:
        if exporter is not None:
            exporter.close()
    if outcome.exit_code != 0:
        word = "gave up" if outcome.exit_code == 1 else "stopped"
        click.echo(f"spotsafe run: {word}: {outcome.reason}", err=True)
    ctx.exit(outcome.exit_code)
