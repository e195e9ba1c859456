"""quant/calibrated.py: the recorded ranges of a calibrate-only model, and the new tensors and operators
the rewrites on it add (built here with the schema's object API: no TensorFlow)."""

from __future__ import annotations

import numpy as np

from edgeport.quant.calibrated import (
    add_activation,
    add_scalar,
    drop_unused_codes,
    new_operator,
    opcode_index,
    recorded_range,
    recorded_ranges,
    set_recorded_range,
)
from edgeport.tflite_file import (
    PLACEHOLDER_FOR_GREATER_OP_CODES,
    edit_tflite,
    parse_tflite,
    schema,
    serialize_tflite,
)


def _one_input(
    value_range: tuple[float, float] | None = (-2.0, 3.0),
) -> tuple[schema.ModelT, schema.SubGraphT]:
    model, graph = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers, model.subgraphs, model.operatorCodes = 3, [schema.BufferT()], [graph], []
    x = schema.TensorT()
    x.name, x.type, x.buffer = b"x", schema.TensorType.FLOAT32, 0
    x.shape, x.shapeSignature = np.array([1, 4], np.int32), np.array([-1, 4], np.int32)
    graph.tensors, graph.operators = [x], []
    graph.inputs, graph.outputs = np.array([0], np.int32), np.array([0], np.int32)
    if value_range is not None:
        set_recorded_range(x, value_range)
    return model, graph


def test_a_builtin_above_127_keeps_the_placeholder_in_the_old_field() -> None:
    """TFLite's schema: deprecated_builtin_code is a byte; codes above 127 (GELU is 150) go in
    builtin_code with 127 in the old field, and readers take the larger of the two."""
    model, graph = _one_input()
    y = add_activation(model, graph, "y", 0, (-0.2, 3.0))
    graph.operators.append(new_operator(model, schema.BuiltinOperator.GELU, [0], y))
    graph.outputs = np.array([y], np.int32)
    parsed = parse_tflite(serialize_tflite(model))
    code = parsed.raw.operatorCodes[0]
    assert parsed.ops == ["GELU"]
    assert (code.builtinCode, code.deprecatedBuiltinCode) == (150, PLACEHOLDER_FOR_GREATER_OP_CODES)
    # Below 128 both fields hold the code, as TFLite writes them.
    add = opcode_index(model, schema.BuiltinOperator.ADD)
    assert (model.operatorCodes[add].builtinCode, model.operatorCodes[add].deprecatedBuiltinCode) == (0, 0)


def test_an_operator_code_is_reused_and_found_in_either_field() -> None:
    model, _ = _one_input()
    old = schema.OperatorCodeT()
    old.builtinCode, old.deprecatedBuiltinCode, old.version = 0, schema.BuiltinOperator.MUL, 2  # an old file
    model.operatorCodes.append(old)
    assert opcode_index(model, schema.BuiltinOperator.MUL) == 0
    gelu = opcode_index(model, schema.BuiltinOperator.GELU)
    assert opcode_index(model, schema.BuiltinOperator.GELU) == gelu == 1 and len(model.operatorCodes) == 2


def test_new_tensors_take_the_shape_and_the_given_ranges() -> None:
    model, graph = _one_input()
    y = add_activation(model, graph, "y", 0, (0.0, 1.5))
    unranged = add_activation(model, graph, "z", 0, None)
    k = add_scalar(model, graph, "k", 0.25, (0.25, 0.25))
    plain = add_scalar(model, graph, "plain", 3.0)
    edited = edit_tflite(serialize_tflite(model)).subgraphs[0]
    assert list(edited.tensors[y].shape) == [1, 4] and list(edited.tensors[y].shapeSignature) == [-1, 4]
    assert (
        recorded_range(edited.tensors[y]) == (0.0, 1.5) and recorded_range(edited.tensors[unranged]) is None
    )
    assert list(edited.tensors[k].shape) == [] and recorded_range(edited.tensors[k]) == (0.25, 0.25)
    assert recorded_range(edited.tensors[plain]) is None
    data = model.buffers[edited.tensors[plain].buffer].data
    assert np.frombuffer(bytes(data), np.float32).tolist() == [3.0]
    # Each new tensor has a buffer of its own (an activation's is empty).
    assert len({edited.tensors[i].buffer for i in (y, unranged, k, plain)}) == 4


def test_recorded_ranges_are_per_tensor_ranges_only() -> None:
    model, graph = _one_input()
    per_channel = add_activation(model, graph, "per_channel", 0, None)
    graph.tensors[per_channel].quantization = schema.QuantizationParametersT()
    graph.tensors[per_channel].quantization.min = np.array([0.0, 1.0], np.float32)
    graph.tensors[per_channel].quantization.max = np.array([2.0, 3.0], np.float32)
    add_activation(model, graph, "none", 0, None)
    y = add_activation(model, graph, "y", 0, (-1.0, 0.5))
    graph.outputs = np.array([y], np.int32)
    assert recorded_ranges(serialize_tflite(model)) == {0: (-2.0, 3.0), y: (-1.0, 0.5)}


def test_codes_no_operator_uses_are_dropped_and_the_rest_renumbered() -> None:
    model, graph = _one_input()
    y = add_activation(model, graph, "y", 0, None)
    gelu = new_operator(model, schema.BuiltinOperator.GELU, [0], y)  # written out: its code stays behind
    graph.operators.append(new_operator(model, schema.BuiltinOperator.ABS, [0], y))
    assert [c.builtinCode for c in model.operatorCodes] == [150, schema.BuiltinOperator.ABS] and gelu
    drop_unused_codes(model)
    assert [c.builtinCode for c in model.operatorCodes] == [schema.BuiltinOperator.ABS]
    assert parse_tflite(serialize_tflite(model)).ops == ["ABS"]
