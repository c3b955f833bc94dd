"""``spotsafe pools``: the effective settings of every pool, and where they came from."""

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
    """Print the effective settings of every pool (presets plus your config), and which
    config file was read."""
    from spotsafe.policy import format_pools, load_pools
    from spotsafe.policy.pools import find_config

    path = find_config(config)
    pools = load_pools(path)
    source = None
    if path is not None:
        table = " [tool.spotsafe]" if path.name == "pyproject.toml" else ""
        source = f"{path.resolve()}{table}"
    click.echo(format_pools(pools, source=source))
