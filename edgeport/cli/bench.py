"""`edgeport bench`: measure models on a runner (this host, TFLite Micro, QEMU, a device, a board) and print
them side by side with ratios to the first. The flags are made from BenchSettings and RunnerOptions."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from edgeport.bench.harness import bench as run_bench
from edgeport.bench.runner import RunnerOptions, parse_spec, runner_specs
from edgeport.bench.schema import BenchSettings, json_schema
from edgeport.bench.table import bench_table, notes, profile_table
from edgeport.cli.options import given_options, options_from_model, spell_flags
from edgeport.errors import EdgeportError
from edgeport.options import validate_options
from edgeport.outdir import terminate_as_interrupt, write_files

EXAMPLES = """\b
Examples:
  edgeport bench out/kws:float32 out/kws:int8 --on host --runs 200
  edgeport bench model.tflite --on host --no-xnnpack --threads 4 --json host.json
  edgeport bench out/kws_fw --on qemu:mps2-an386 --tflm-root ~/tflite-micro
  edgeport bench a.tflite b.tflite --on qemu:mps2-an500 --profile   (time per op type)
  edgeport bench --schema
MODEL is a .tflite, an `edgeport convert` output directory (its quantized model, else float32; DIR:VARIANT
picks one, e.g. out/kws:float32) or an `edgeport package` output directory.
"""

SETTINGS_FLAGS = {k: v for k, v in options_from_model(BenchSettings).items() if k != "runner"}
RUNNER_FLAGS = options_from_model(RunnerOptions)
_spell = spell_flags({**SETTINGS_FLAGS, **RUNNER_FLAGS, "runner": click.Option(["--on"])})


def check_json_path(path: Path) -> None:
    """Refuse a --json FILE that cannot be written before anything is measured."""
    if path.is_dir():
        raise EdgeportError(f"--json {path} is a directory", "give a file name, e.g. --json bench.json")
    for folder in path.absolute().parents:
        if folder.exists() and not folder.is_dir():
            raise EdgeportError(f"--json {path}: {folder} is a file", "give a path in a folder")
    if not path.parent.is_dir():
        raise EdgeportError(f"--json {path}: folder {path.parent} does not exist", "create it first")
    try:  # a read-only or pseudo file system (/proc) refuses a new file: found now, not after measuring
        with tempfile.NamedTemporaryFile(prefix=f".{path.name}.", dir=path.parent):
            pass
    except OSError as exc:
        raise EdgeportError(
            f"--json {path}: cannot write in {path.parent} ({exc.strerror or type(exc).__name__})",
            "give --json a path on a writable file system",
        ) from None


@click.command(epilog=EXAMPLES)
@click.argument("models", nargs=-1, metavar="MODEL [MODEL...]")
@click.option("--on", "on", metavar="RUNNER", help="Where to measure: " + ", ".join(runner_specs()) + ".")
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    metavar="FILE",
    help="Also write the report (every sample) as JSON to FILE.",
)
@click.option("--schema", is_flag=True, help="Print the JSON Schema of the report and exit.")
@click.option("--progress", is_flag=True, help="Show a progress bar even when stderr is not a terminal.")
@click.pass_context
def bench(
    ctx: click.Context,
    models: tuple[str, ...],
    on: str | None,
    json_path: Path | None,
    schema: bool,
    progress: bool,
    **flags: Any,
) -> None:
    """Measure the latency (median and percentiles) and memory of MODELs on a runner, side by side.

    Several models are measured in one run, interleaved where the runner allows it, and each median is
    compared with the first model's: on a noisy machine a ratio from one run is the honest comparison.
    """
    if schema:
        click.echo(json_schema(), nl=False)
        return
    if on is None:
        raise EdgeportError("no runner given", f"pass --on with one of: {', '.join(runner_specs())}")
    parse_spec(on)
    if not models:
        raise EdgeportError("no model given", "pass one or more .tflite files or edgeport output directories")
    settings = validate_options(
        BenchSettings, {"runner": on, **given_options(ctx, SETTINGS_FLAGS)}, spell=_spell
    )
    options = validate_options(RunnerOptions, given_options(ctx, RUNNER_FLAGS), spell=_spell)
    if json_path is not None:
        check_json_path(json_path)
    with terminate_as_interrupt():
        report = run_bench(list(models), on, settings, options, progress=progress or None)
    console = Console(width=None if sys.stdout.isatty() else 200, highlight=False)
    console.print(bench_table(report))
    per_op = profile_table(report)
    if per_op is not None:
        console.print(per_op)
    for line in notes(report):
        console.print(f"note: {line}")
    if json_path is not None:
        write_files({json_path: report.to_json()}, flag="--json")
        click.echo(f"wrote {json_path}")


bench.params[2:2] = [*SETTINGS_FLAGS.values(), *RUNNER_FLAGS.values()]  # after MODEL... and --on
