"""Per-target packaging and runners, one sub-package per target, found through the registry below.

Adding a target is one new sub-package exposing a `TARGET` object (the protocol in targets/base.py) and one
line in TARGETS. Targets are imported when first asked for, so listing them costs nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from edgeport.errors import EdgeportError
from edgeport.options import validate_options
from edgeport.targets.base import Target

# --target name -> the module that defines its TARGET.
TARGETS: dict[str, str] = {
    "cortex-m": "edgeport.targets.cortex_m.target",
    "android": "edgeport.targets.android.target",
}


def target_names() -> list[str]:
    return list(TARGETS)


def get_target(name: str) -> Target:
    """The registered target called `name`; an unknown name is a one-line error naming the known ones."""
    if name not in TARGETS:
        raise EdgeportError(f"unknown target {name!r}", f"known targets: {', '.join(target_names())}")
    return importlib.import_module(TARGETS[name]).TARGET


def _field_name(name: str) -> str:
    return name


def parse_options(
    target: Target, values: Mapping[str, Any], spell: Callable[[str], str] = _field_name
) -> BaseModel:
    """`values` checked against the target's options; errors name the option as the user wrote it
    (`spell` turns a field name into that: a CLI flag, a config key)."""
    unknown = [key for key in values if key not in target.options.model_fields]
    if unknown:
        known = ", ".join(spell(field) for field in target.options.model_fields)
        raise EdgeportError(
            f"{spell(unknown[0])} is not an option of target {target.name}", f"its options are: {known}"
        )
    if "board" in target.options.model_fields and values.get("board") is None:
        few = ", ".join(board.name for board in list(target.boards())[:3])
        raise EdgeportError(
            f"target {target.name} needs a board and none was given",
            f"pass {spell('board')} NAME, e.g. {few} (`edgeport package --target {target.name} "
            "--list-boards` lists them all)",
        )
    return validate_options(
        target.options, values, spell, fix=f"see `edgeport package --target {target.name} --help`"
    )


__all__ = ["TARGETS", "Target", "get_target", "parse_options", "target_names"]
