"""`edgeport flash`: build a packaged firmware project and flash it (or print the commands)."""

from __future__ import annotations

from pathlib import Path

import click

EXAMPLES = """\b
Examples:
  edgeport flash out/kws_fw --board nucleo-h743zi2 --dry-run     # print the build and flash commands
  edgeport flash out/fw --board mps2-an386 --tflm-root ~/tflite-micro   # build, then run in QEMU
"""


@click.command(epilog=EXAMPLES)
@click.argument("outdir", type=click.Path(path_type=Path))
@click.option("--board", required=True, help="The board OUTDIR was packaged for.")
@click.option(
    "--probe",
    type=click.Choice(["pyocd", "openocd", "probe-rs", "arduino-cli", "uf2", "qemu"]),
    default=None,
    help="Flashing tool [default: the board's usual one].",
)
@click.option("--port", default=None, help="Serial port, for arduino-cli.")
@click.option(
    "--tflm-root",
    default=None,
    help="TFLite Micro checkout to build against [default: $TFLM_ROOT; a dry run needs none].",
)
@click.option("--dry-run", is_flag=True, help="Print the exact commands instead of running them.")
def flash(
    outdir: Path, board: str, probe: str | None, port: str | None, tflm_root: str | None, dry_run: bool
) -> None:
    """Build the firmware in OUTDIR (when a toolchain and TFLM are there) and flash it to BOARD."""
    from edgeport.targets.cortex_m import flash as flashing

    steps = flashing.flash(outdir, board, probe=probe, port=port, tflm_root=tflm_root, dry_run=dry_run)
    for step in steps:
        click.echo(step.shell() if dry_run else f"done: {step.what}")
