"""edgeport/tflite_file.py's rules for reading and writing fields of the flatbuffer object tree: the one
place every reader and rewrite of a .tflite takes them from."""

from __future__ import annotations

import pytest

from edgeport.tflite_file import (
    PLACEHOLDER_FOR_GREATER_OP_CODES,
    builtin_code,
    op_name,
    schema,
    set_builtin_code,
)

GELU = schema.BuiltinOperator.GELU  # 150: above what the old byte-wide field holds
MUL = schema.BuiltinOperator.MUL


def _code(new: int, old: int) -> schema.OperatorCodeT:
    code = schema.OperatorCodeT()
    code.builtinCode, code.deprecatedBuiltinCode = new, old
    return code


@pytest.mark.parametrize(
    ("new", "old", "expected"),
    [
        (MUL, MUL, MUL),  # today's converter, a code below 128: both fields
        (0, MUL, MUL),  # an older converter: the deprecated field only (0 in the new one reads as ADD)
        (GELU, PLACEHOLDER_FOR_GREATER_OP_CODES, GELU),  # above 127: the new field, the placeholder old
        (0, 0, schema.BuiltinOperator.ADD),
    ],
)
def test_the_builtin_code_is_read_from_whichever_field_holds_it(new: int, old: int, expected: int) -> None:
    assert builtin_code(_code(new, old)) == expected


@pytest.mark.parametrize(
    ("builtin", "fields"),
    [(MUL, (MUL, MUL)), (GELU, (GELU, PLACEHOLDER_FOR_GREATER_OP_CODES)), (127, (127, 127))],
)
def test_a_builtin_code_is_written_as_tflite_writes_it(builtin: int, fields: tuple[int, int]) -> None:
    code = _code(0, 0)
    set_builtin_code(code, builtin)
    assert (code.builtinCode, code.deprecatedBuiltinCode) == fields
    assert builtin_code(code) == builtin


def test_rewriting_an_old_files_code_keeps_its_op() -> None:
    """What lut_compression does to every code before TFLM's compressor reads them (it reads only the
    new field, so an old file's codes would all read as ADD)."""
    old = _code(0, MUL)
    set_builtin_code(old, builtin_code(old))
    assert (old.builtinCode, old.deprecatedBuiltinCode) == (MUL, MUL) and op_name(old) == "MUL"
