"""`edgeport package`: turn a .tflite (or a convert output directory) into what a device target needs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from edgeport.errors import EdgeportError

TARGETS = ("cortex-m",)


@click.command()
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option("--target", type=click.Choice(TARGETS), default="cortex-m", show_default=True)
@click.option(
    "--board", default=None, help="Board to check the fit against and build for (see --list-boards)."
)
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(path_type=Path),
    help="Output directory (refused if not empty).",
)
@click.option("--name", default=None, help="C identifier of the model array [default: g_model].")
@click.option("--section", default=None, help="Linker section for the model array, e.g. .model_data.")
@click.option(
    "--no-fit-check", is_flag=True, help="Write the package even if the model does not fit the board."
)
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option("--list-boards", is_flag=True, help="List the known boards and exit.")
def package(
    model: Path | None,
    target: str,
    board: str | None,
    outdir: Path | None,
    name: str | None,
    section: str | None,
    no_fit_check: bool,
    force: bool,
    list_boards: bool,
) -> None:
    """Package MODEL (.tflite, or an `edgeport convert` output directory) for a device target.

    For cortex-m: model_data.h/.cc, model_ops.h, model_settings.h (kTensorArenaSize measured in the
    TFLite Micro interpreter), a self-test firmware project, README.md and edgeport.json in OUTDIR.
    """
    from edgeport.targets.cortex_m import boards
    from edgeport.targets.cortex_m import packager as cortex_m

    if list_boards:
        for row in boards.BOARDS:
            click.echo(
                f"{row.name:18} {row.core:14} flash {row.flash_bytes // 1024:>5} KB  "
                f"largest RAM {row.largest_ram.size // 1024:>5} KB  {row.title}"
            )
        return
    if model is None:
        raise EdgeportError("no model given", "pass a .tflite file or an `edgeport convert` output directory")
    if outdir is None:
        raise EdgeportError("no output directory given", "pass -o OUTDIR")
    result = cortex_m.package(
        model,
        outdir,
        board=board or cortex_m.DEFAULT_BOARD,
        name=name or cortex_m.DEFAULT_NAME,
        section=section,
        fit_check=not no_fit_check,
        force=force,
        command="edgeport " + shlex.join(sys.argv[1:]) if sys.argv else "edgeport package",
    )
    click.echo(result.summary())
