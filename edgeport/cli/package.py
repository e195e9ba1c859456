"""`edgeport package`: turn a .tflite (or a convert output directory) into what a device target needs.

The target comes from the registry (edgeport.targets); its options model gives the target's flags, so a
new target brings its flags with it. A flag that belongs to another target is refused, naming the target.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from edgeport.cli.options import given_options, option_from_field, spell_flags
from edgeport.errors import EdgeportError
from edgeport.targets import get_target, parse_options, target_names

EXAMPLES = """\b
Examples:
  edgeport package out/kws --target cortex-m --board nucleo-h743zi2 -o out/kws_fw
  edgeport package model.tflite --board mps2-an386 -o out/fw --force   # a QEMU board
  edgeport package --target cortex-m --list-boards
  edgeport package out/kws --target android --labels labels.txt -o out/kws_android
"""


def target_options() -> dict[str, click.Option]:
    """One flag per options field over all registered targets (targets sharing a field share its flag)."""
    flags: dict[str, click.Option] = {}
    kinds: dict[str, tuple[str, object]] = {}
    for name in target_names():
        for field, info in get_target(name).options.model_fields.items():
            if field in kinds and kinds[field][1] != info.annotation:
                raise TypeError(
                    f"option {field} is {kinds[field][1]} in target {kinds[field][0]} but {info.annotation} "
                    f"in {name}: one flag cannot be both; rename one"
                )
            kinds.setdefault(field, (name, info.annotation))
            flags.setdefault(field, option_from_field(field, info))
    return flags


TARGET_FLAGS = target_options()
_spell = spell_flags(TARGET_FLAGS)


@click.command(epilog=EXAMPLES)
@click.argument("model", type=click.Path(path_type=Path), required=False)
@click.option(
    "--target",
    default="cortex-m",
    show_default=True,
    metavar="|".join(target_names()),
    help="Device target: " + "; ".join(f"{n} ({get_target(n).title})" for n in target_names()) + ".",
)
@click.option(
    "-o",
    "--output",
    "outdir",
    type=click.Path(path_type=Path),
    help="Output directory (refused if not empty).",
)
@click.option("--force", is_flag=True, help="Replace a non-empty output directory.")
@click.option("--list-boards", is_flag=True, help="List the target's boards and exit.")
@click.pass_context
def package(
    ctx: click.Context,
    model: Path | None,
    target: str,
    outdir: Path | None,
    force: bool,
    list_boards: bool,
    **target_flags: Any,
) -> None:
    """Package MODEL (.tflite, or an `edgeport convert` output directory) for a device target.

    For cortex-m: model_data.h/.cc, model_ops.h, model_settings.h (kTensorArenaSize measured in the
    TFLite Micro interpreter), a self-test firmware project, README.md and edgeport.json in OUTDIR.
    For android: the model variants with TFLite metadata, metadata.json, README.md, edgeport.json and
    android/, a Gradle module with the variants as assets and a Kotlin wrapper class (--no-bundle: without).
    """
    chosen = get_target(target)
    if list_boards:
        boards = chosen.boards()
        if not boards:
            click.echo(f"target {chosen.name} has no boards")
        for board in boards:
            click.echo(board.describe())
        return
    if model is None:
        raise EdgeportError("no model given", "pass a .tflite file or an `edgeport convert` output directory")
    if outdir is None:
        raise EdgeportError("no output directory given", "pass -o OUTDIR")
    options = parse_options(chosen, given_options(ctx, list(target_flags)), spell=_spell)
    from edgeport.quiet import silenced  # native converter/runtime logs, as convert hides them

    with silenced(not (ctx.obj and ctx.obj.get("debug"))):
        result = chosen.package(
            model,
            outdir,
            options,
            force=force,
            command="edgeport " + shlex.join(sys.argv[1:]) if sys.argv else "edgeport package",
        )
    click.echo(result.summary())


package.params[2:2] = TARGET_FLAGS.values()  # after MODEL and --target
