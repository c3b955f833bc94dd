"""``spotsafe pools``: the effective settings of every pool."""

from __future__ import annotations

import click


@click.command("pools")
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default ./spotsafe.toml, or [tool.spotsafe] in ./pyproject.toml).",
)
def command(config: str | None) -> None:
    """Print the effective settings of every pool (presets plus your config)."""
    from spotsafe.policy import format_pools, load_pools

    click.echo(format_pools(load_pools(config), source=config))
