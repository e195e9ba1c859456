"""Options defined once, as pydantic models: the CLI makes its flags from them (edgeport/cli/options.py),
a config file will read its keys from them, and validation errors name an option the way whoever gave
it wrote it. `spell` turns a field name into that: `--weight-clusters` for the CLI, a key for a config.

A field may say, in `json_schema_extra`:
- "flag": its CLI flag when that is not `--field-name` (QuantOptions.mode is `--quantize`);
- "text": True when the CLI passes it as text the model parses (`--input-range 0,255`);
- "cli": False when it is API-only (no flag);
- "show_default": False when the flag's absence means something else than the default;
- "required": True when the CLI must be given the flag (a field may be required for one caller only);
- "needs": the value of another option it only means something with (see `refuse_without`).
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError, ValidationInfo, ValidatorFunctionWrapHandler, model_validator
from pydantic.fields import FieldInfo

from edgeport.errors import EdgeportError

Spell = Callable[[str], str]
M = TypeVar("M", bound=BaseModel)


def cli(flag: str | None = None, **more: Any) -> dict[str, Any]:
    """A field's `json_schema_extra`: its CLI flag when not `--field-name`, and the keys above."""
    return {**({"flag": flag} if flag else {}), **more}


def extra(info: FieldInfo) -> dict[str, Any]:
    value = info.json_schema_extra
    return value if isinstance(value, dict) else {}


def flag_name(field: str, info: FieldInfo | None = None) -> str:
    """The field's CLI flag: its "flag" extra, else `--field-name`."""
    flag = extra(info).get("flag") if info is not None else None
    return str(flag) if flag else "--" + field.replace("_", "-")


def unoptional(annotation: Any) -> Any:
    """`X | None` -> X; anything else unchanged."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def nested_model(info: FieldInfo) -> type[BaseModel] | None:
    """The options model of a field that holds one (ConvertOptions.quantize: QuantOptions | None)."""
    kind = unoptional(info.annotation)
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _field_info(model: type[BaseModel], field: str) -> FieldInfo | None:
    """`field` of `model`, else of an options model nested in it (ConvertOptions.quantize)."""
    if field in model.model_fields:
        return model.model_fields[field]
    nested = (nested_model(info) for info in model.model_fields.values())
    return next((m.model_fields[field] for m in nested if m is not None and field in m.model_fields), None)


def flag_spell(model: type[BaseModel]) -> Spell:
    """Spell `model`'s fields (and those of the options models nested in it) as CLI flags: the wording
    for Python callers and the CLI alike."""
    return lambda field: flag_name(field, _field_info(model, field))


def spell_of(info: ValidationInfo, model: type[BaseModel]) -> Spell:
    """Inside a validator: the caller's spelling (validation context "spell"), else the flags."""
    spell = (info.context or {}).get("spell")
    return spell if spell is not None else flag_spell(model)


def options_error(err: ValidationError, model: type[BaseModel], spell: Spell, fix: str = "") -> EdgeportError:
    """The first pydantic error as one EdgeportError naming the option as the user wrote it."""
    first = err.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    where = spell(field) if field else model.__name__
    if first["type"] == "literal_error" and field in model.model_fields:
        choices = ", ".join(str(c) for c in _choices(model.model_fields[field].annotation))
        return EdgeportError(f"unknown {where} {first['input']!r}", f"use one of {choices}")
    return EdgeportError(f"{where}: {first['msg']} (got {first['input']!r})", fix)


def _choices(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal (or Literal | None) annotation."""
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is Literal:
            return typing.get_args(arg)
    return ()


class Options(BaseModel):
    """An options model whose every validation error, for the CLI, a config or a Python caller alike,
    is one EdgeportError naming the option as that caller spells it (flags unless told otherwise)."""

    @model_validator(mode="wrap")
    @classmethod
    def _one_line_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo) -> Any:
        try:
            return handler(data)
        except ValidationError as err:
            raise options_error(err, cls, spell_of(info, cls)) from None


def validate_options(
    model: type[M], values: Mapping[str, Any], spell: Spell | None = None, fix: str = ""
) -> M:
    """`values` checked against `model`; any error is one EdgeportError naming the option with `spell`."""
    spell = spell or flag_spell(model)
    try:
        return model.model_validate(dict(values), context={"spell": spell})
    except ValidationError as err:
        raise options_error(err, model, spell, fix) from None


def refuse_without(
    model: type[BaseModel], main: str, values: Mapping[str, Any], spell: Spell | None = None
) -> None:
    """Options that only mean something with `main` given are refused rather than ignored when it
    is not (a value equal to the default changes nothing and passes)."""
    spell = spell or flag_spell(model)
    for field, info in model.model_fields.items():
        needs = extra(info).get("needs")
        if needs and field in values and values[field] != info.get_default(call_default_factory=True):
            raise EdgeportError(
                f"{spell(field)} was given without {spell(main)}", f"add {spell(main)} {needs}"
            )


def parse_floats(text: str, what: str, count: int | None = None) -> list[float]:
    """Comma-separated finite numbers (`count` of them when given) from an option's text
    (`--mean 0.5,0.4,0.4`, `--input-range 0,255`), else one line naming the option as `what`."""
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count) or not all(map(math.isfinite, values)):
        shape = "lo,hi" if count == 2 else "one number, or one per channel separated by commas"
        raise EdgeportError(f"{what} {text!r} is not valid", f"write it as {shape}")
    return values


def config_relative(text: str, base: Path) -> Path:
    """The path `text` names in a config: relative to the config's folder `base`, an absolute or ~ path as
    it is."""
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def split_weights(spec: str, base: Path = Path(".")) -> tuple[str, str | None]:
    """`--weights FILE[:KEY]` as (FILE, KEY or None): KEY is the text after the last ':', unless the
    whole names an existing file (a file name with a colon). Relative paths are looked up under `base`
    (a config's folder)."""
    head, sep, key = spec.rpartition(":")
    if not sep or not head or not key or config_relative(spec, base).exists():
        return spec, None
    return head, key
