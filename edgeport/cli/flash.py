"""`edgeport flash`: build a packaged firmware project and flash it (or print the commands)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgeport.cli.options import given_options, options_from_model, spell_flags
from edgeport.options import validate_options
from edgeport.targets.cortex_m import flash as flashing

EXAMPLES = """\b
Examples:
  edgeport flash out/kws_fw --board nucleo-h743zi2 --dry-run     # print the build and flash commands
  edgeport flash out/fw --board mps2-an386 --tflm-root ~/tflite-micro   # build, then run in QEMU
  edgeport flash out/kws_fw --board nucleo-h743zi2 --bench-runs 50   # times 50 for bench --on serial:PORT
"""


@click.command(epilog=EXAMPLES)
@click.argument("outdir", type=click.Path(path_type=Path))
@click.pass_context
def flash(ctx: click.Context, outdir: Path, **flags: Any) -> None:
    """Build the firmware in OUTDIR (when a toolchain and TFLM are there) and flash it to BOARD."""
    options = validate_options(
        flashing.FlashOptions, given_options(ctx, FLASH_FLAGS), spell_flags(FLASH_FLAGS)
    )
    steps = flashing.flash(outdir, **dict(options))
    for step in steps:
        click.echo(step.shell() if options.dry_run else f"done: {step.what}")


FLASH_FLAGS = options_from_model(flashing.FlashOptions)
flash.params.extend(FLASH_FLAGS.values())  # after OUTDIR
