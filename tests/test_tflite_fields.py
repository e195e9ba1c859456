"""edgeport/tflite_file.py's rules for reading and writing fields of the flatbuffer object tree: the one
place every reader and rewrite of a .tflite takes them from."""

from __future__ import annotations

import pytest

from edgeport.tflite_file import (
    PLACEHOLDER_FOR_GREATER_OP_CODES,
    builtin_code,
    flatbuffer_text,
    op_name,
    parse_tflite,
    schema,
    serialize_tflite,
    set_builtin_code,
    tensor_name,
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


@pytest.mark.parametrize(
    ("value", "text"), [(b"conv/y:0", "conv/y:0"), ("built in Python", "built in Python"), (None, "")]
)
def test_a_string_field_reads_as_text_whatever_holds_it(value: bytes | str | None, text: str) -> None:
    tensor = schema.TensorT()
    tensor.name = value
    assert flatbuffer_text(value) == tensor_name(tensor) == text


def test_names_read_back_from_a_written_file() -> None:
    """The parser gives bytes; a tensor written without a name reads as "" (not "None"), and so does a
    custom op's missing code."""
    model, graph = schema.ModelT(), schema.SubGraphT()
    named, nameless = schema.TensorT(), schema.TensorT()
    named.name, named.shape, nameless.shape = b"x", [1], [1]
    custom = schema.OperatorCodeT()
    set_builtin_code(custom, schema.BuiltinOperator.CUSTOM)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0], [1]
    graph.tensors, graph.operators, graph.inputs, graph.outputs = [named, nameless], [op], [0], [1]
    model.version, model.operatorCodes, model.subgraphs, model.buffers = (
        3,
        [custom],
        [graph],
        [schema.BufferT()],
    )
    parsed = parse_tflite(serialize_tflite(model))
    assert [tensor_name(t) for t in parsed.raw.subgraphs[0].tensors] == ["x", ""]
    assert isinstance(parsed.raw.subgraphs[0].tensors[0].name, bytes)
    assert parsed.ops == ["CUSTOM:"]
