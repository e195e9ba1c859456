"""Click flags made from pydantic options models (edgeport/options.py): the field's type gives the flag's
kind, its description the help. Both `convert` and `package` make their option flags here."""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from edgeport.options import extra, flag_name, unoptional


def _click_type(field: str, kind: Any) -> Any:
    if typing.get_origin(kind) is Literal:
        return click.Choice([str(v) for v in typing.get_args(kind)])
    if kind in (str, int, float):
        return kind
    if kind is Path:
        return click.Path(path_type=Path)
    raise TypeError(f"no CLI flag for option {field}: {kind}")


def option_from_field(field: str, info: FieldInfo) -> click.Option:
    """The click flag of one options field: bool -> on/off flag (--no-X when the default is True),
    Literal -> choice, str/int/float/Path -> a value, list[...] -> a repeatable flag, a field marked
    "text" -> the text the model parses (repeatable if marked "multiple"); "required" makes click
    require it. Defaults stay pydantic's (click's is None), so only flags actually given reach the model."""
    kind = unoptional(info.annotation)
    more = extra(info)
    help_text = info.description or ""
    if kind is bool:
        flag = "--no-" + flag_name(field, info)[2:] if info.default is True else flag_name(field, info)
        return click.Option(
            [flag, field], is_flag=True, flag_value=info.default is not True, default=None, help=help_text
        )
    # A list is a repeatable flag, unless the model parses it from one text ("--mean 1,2,3").
    multiple = bool(more.get("multiple", typing.get_origin(kind) is list and not more.get("text")))
    if more.get("text"):
        click_type: Any = str
    elif typing.get_origin(kind) is list:
        click_type = _click_type(field, typing.get_args(kind)[0])
    else:
        click_type = _click_type(field, kind)
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    if default not in (None, [], {}) and more.get("show_default", True):
        help_text += f"  [default: {default}]"
    # A required flag gets no default at all: click 8.3+ takes an explicit None as given.
    required = {"required": True} if more.get("required") else {"default": None}
    return click.Option(
        [flag_name(field, info), field],
        type=click_type,
        multiple=multiple,
        metavar=more.get("metavar"),
        help=help_text,
        **required,
    )


def options_from_model(model: type[BaseModel]) -> dict[str, click.Option]:
    """One flag per field of `model` that has one (fields marked "cli": False are API-only)."""
    return {
        field: option_from_field(field, info)
        for field, info in model.model_fields.items()
        if extra(info).get("cli", True)
    }


def given_options(ctx: click.Context, fields: Iterable[str]) -> dict[str, Any]:
    """The flags the user actually passed, by field name."""
    given = click.core.ParameterSource.COMMANDLINE
    return {f: ctx.params[f] for f in fields if ctx.get_parameter_source(f) is given}


def spell_flags(flags: dict[str, click.Option]) -> Callable[[str], str]:
    """A field's name as the user typed it on the command line (--no-fit-check for fit_check)."""
    return lambda field: flags[field].opts[0] if field in flags else "--" + field.replace("_", "-")
