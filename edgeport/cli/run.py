"""`edgeport run CONFIG`: convert, package and bench every variant a config describes, with a report."""

from __future__ import annotations

import sys
from pathlib import Path

import click

EXAMPLE = """\b
Example:
  edgeport init                      # writes edgeport.toml (and the example model it runs on)
  edgeport run edgeport.toml -o out/kws
  edgeport run edgeport.toml -o out/kws --force   # after an edit: unchanged stages come from the cache"""


@click.command(
    short_help="Convert, package and bench every variant of a config, with a report.", epilog=EXAMPLE
)
@click.argument("config", type=click.Path(path_type=Path))
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(path_type=Path),
    help="Output directory (else the config's output).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option(
    "-j", "--jobs", type=click.IntRange(min=1), help="Variants converted at once  [default: the cores]"
)
@click.option("--no-cache", is_flag=True, help="Recompute every stage (the cache is refreshed, not read).")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    help="Where stage results are cached  [default: OUTDIR/.cache]",
)
@click.option(
    "--executor",
    type=click.Choice(["process", "ray"]),
    default="process",
    show_default=True,
    help="Run the variants in worker processes, or as Ray tasks (pip install 'edgeport[ray]').",
)
@click.option(
    "--ray-address",
    metavar="ADDR",
    help="Ray cluster to run on (its nodes must share OUTDIR's file system); default: a local Ray instance.",
)
@click.option("--check", is_flag=True, help="Only check the config (every problem at once) and exit.")
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="Do not show the stages (on a terminal a live table, else a line each as they finish; stderr).",
)
@click.option(
    "-v", "--verbose", is_flag=True, help="Structured logs: one JSON object per stage event on stderr."
)
@click.pass_context
def run(
    ctx: click.Context,
    config: Path,
    outdir: Path | None,
    force: bool,
    jobs: int | None,
    no_cache: bool,
    cache_dir: Path | None,
    executor: str,
    ray_address: str | None,
    check: bool,
    quiet: bool,
    verbose: bool,
) -> None:
    """Run CONFIG (an edgeport.toml): convert each variant of its recipe, package it for each target,
    bench it on each runner, and write run.json, report.md and report.html to OUTDIR.

    The config is checked as a whole first: every problem is listed, one line each, before any work.
    Stages are cached by content in OUTDIR/.cache: a rerun after editing only a target re-packages
    without re-converting.
    """
    from edgeport.errors import EdgeportError
    from edgeport.run import load_config
    from edgeport.run import run as run_config
    from edgeport.run.progress import wants_live

    loaded = load_config(config)
    if check:
        names = ", ".join(v.name for v in loaded.variants)
        targets = ", ".join(t.name for t in loaded.targets)
        click.echo(f"{config}: ok; variants: {names}; targets: {targets}")
        return
    outdir = outdir or loaded.output
    if outdir is None:
        raise EdgeportError("no output directory given", f'pass -o OUTDIR or set output = "..." in {config}')
    result = run_config(
        loaded,
        outdir,
        force=force,
        jobs=jobs,
        use_cache=not no_cache,
        cache_dir=cache_dir,
        quiet=quiet,
        json_log=verbose,
        executor=executor,
        ray_address=ray_address,
        live=wants_live(sys.stderr, quiet, verbose),
        debug=bool(ctx.obj and ctx.obj.get("debug")),
    )
    click.echo(result.summary())
    if result.failed:
        raise EdgeportError(
            f"{len(result.failed)} stage{'s' * (len(result.failed) > 1)} failed: " + "; ".join(result.failed),
            f"the others are in {outdir}; the report marks what failed",
        )
