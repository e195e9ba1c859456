"""`edgeport package`: turn a .tflite (or a convert output directory) into what a device target needs.

The target comes from the registry (edgeport.targets); its options model gives the target's flags, so a
new target brings its flags with it. A flag that belongs to another target is refused, naming the target.
"""

from __future__ import annotations

import shlex
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import click
from pydantic.fields import FieldInfo

from edgeport.errors import EdgeportError
from edgeport.targets import get_target, parse_options, target_names

EXAMPLES = """\b
Examples:
  edgeport package out/kws --target cortex-m --board nucleo-h743zi2 -o out/kws_fw
  edgeport package model.tflite --board mps2-an386 -o out/fw --force   # a QEMU board
  edgeport package --target cortex-m --list-boards
"""


def flag_of(field: str) -> str:
    return "--" + field.replace("_", "-")


def _optional_inner(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def option_from_field(field: str, info: FieldInfo) -> click.Option:
    """The click flag of one options field: bool -> on/off flag (--no-X when the default is True),
    Literal -> choice, str/int/float/Path -> a value. Defaults stay pydantic's (click's is None), so only
    flags actually given reach the target."""
    kind = _optional_inner(info.annotation)
    help_text = info.description or ""
    if kind is bool:
        flag = f"--no-{field.replace('_', '-')}" if info.default is True else flag_of(field)
        return click.Option(
            [flag, field], is_flag=True, flag_value=info.default is not True, default=None, help=help_text
        )
    if typing.get_origin(kind) is Literal:
        click_type: Any = click.Choice([str(v) for v in typing.get_args(kind)])
    elif kind in (str, int, float):
        click_type = kind
    elif kind is Path:
        click_type = click.Path(path_type=Path)
    else:
        raise TypeError(f"no CLI flag for option {field}: {info.annotation}")
    if info.default is not None and not info.is_required():
        help_text += f"  [default: {info.default}]"
    return click.Option([flag_of(field), field], type=click_type, default=None, help=help_text)


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


def given_options(ctx: click.Context, fields: list[str]) -> dict[str, Any]:
    """The target flags the user actually passed."""
    given = click.core.ParameterSource.COMMANDLINE
    return {f: ctx.params[f] for f in fields if ctx.get_parameter_source(f) is given}


TARGET_FLAGS = target_options()


def _spell(field: str) -> str:
    """An option's name as the user typed it (--no-fit-check for fit_check)."""
    return TARGET_FLAGS[field].opts[0] if field in TARGET_FLAGS else flag_of(field)


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
    result = chosen.package(
        model,
        outdir,
        options,
        force=force,
        command="edgeport " + shlex.join(sys.argv[1:]) if sys.argv else "edgeport package",
    )
    click.echo(result.summary())


package.params[2:2] = TARGET_FLAGS.values()  # after MODEL and --target
