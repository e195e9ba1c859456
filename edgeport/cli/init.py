"""`edgeport init`: write a commented edgeport.toml that runs as it is on a bundled example."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(short_help="Write a commented edgeport.toml (and the example model it runs on).")
@click.option(
    "--example", "name", default="kws_dscnn", show_default=True, help="Bundled example to start from."
)
@click.option(
    "-o",
    "--output",
    "config",
    type=click.Path(path_type=Path),
    default=Path("edgeport.toml"),
    show_default=True,
    help="Config file to write; the example's model goes beside it.",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@click.option("--list", "list_examples", is_flag=True, help="List the bundled examples and exit.")
def init(name: str, config: Path, force: bool, list_examples: bool) -> None:
    """Write CONFIG (edgeport.toml) for a bundled example, and the example's model beside it, so that
    `edgeport run edgeport.toml` runs as it is. Edit it for your model: its comments say how."""
    from edgeport.run.init import example_names, write_example

    if list_examples:
        click.echo("\n".join(example_names()))
        return
    written = write_example(name, config, force=force)
    click.echo(f"wrote {', '.join(str(p) for p in written)}; run it with: edgeport run {config}")
