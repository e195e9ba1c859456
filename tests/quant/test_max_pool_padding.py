"""int8 max pooling behind explicit padding (quant/int8.py: bound_max_pool_padding).

onnx2tf writes a MaxPool whose padding TensorFlow cannot express (PyTorch's MaxPool2d(3, 2, 1), the
ResNet stem) as tf.pad with the float32 lowest value, then a VALID max pool. Quantized as it is, that
value becomes the range of the padded tensor and of the layer before it (scale ~1e36) and LiteRT
aborts preparing the model (the zoo's resnet_basic). The Keras models here are built the way onnx2tf
builds that stem.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeport.quant import int8 as Q
from edgeport.runtimes import litert
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import builtin_code, parse_tflite, schema

IMAGE = TensorSpec("x", [1, 4, 9, 9], channels_last=True)


def padded_pool(activation: str | None, pad_value: float | None = None) -> Any:
    """conv (+ activation) -> tf.pad(value) -> 3x3/2 VALID max pool -> 1x1 conv."""
    import tensorflow as tf
    import tf_keras as K

    K.utils.set_random_seed(0)
    x = K.Input((9, 9, 4), name="x")
    a = K.layers.Conv2D(8, 3, padding="same", activation=activation)(x)
    value = np.finfo(np.float32).min if pad_value is None else pad_value
    padded = K.layers.Lambda(lambda t: tf.pad(t, [[0, 0], [1, 1], [1, 1], [0, 0]], constant_values=value))(a)
    pooled = K.layers.MaxPooling2D(3, 2, padding="valid")(padded)
    return K.Model(x, K.layers.Conv2D(4, 1, name="head")(pooled))


def samples(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((1, 4, 9, 9)).astype(np.float32)} for _ in range(count)]


def padv2(model: bytes) -> tuple[Any, Any, Any]:
    """(model object, PADV2 operator, subgraph) of the one PADV2 in `model`."""
    obj = parse_tflite(model).raw
    graph = obj.subgraphs[0]
    (op,) = [
        op
        for op in graph.operators
        if builtin_code(obj.operatorCodes[op.opcodeIndex]) == schema.BuiltinOperator.PADV2
    ]
    return obj, op, graph


@pytest.mark.parametrize("activation", ["relu", None])
def test_padded_max_pool_quantizes_to_a_model_that_runs_and_agrees(activation: str | None) -> None:
    keras = padded_pool(activation)
    model = Q.keras_to_quantized(keras, "int8", [IMAGE], samples(16, 0), io="float")
    litert.check_allocates(model, "padded_pool")
    obj, op, graph = padv2(model)
    conv_out, value, out = (graph.tensors[i] for i in (op.inputs[0], op.inputs[2], op.outputs[0]))
    # The conv before the pad keeps a step of its own range, not one stretched to -3.4e38.
    assert float(conv_out.quantization.scale[0]) < 1.0
    assert float(out.quantization.scale[0]) == float(conv_out.quantization.scale[0])
    # The pad value is the lowest int8 value: no padded element can win a window over a real one.
    assert np.frombuffer(bytes(obj.buffers[value.buffer].data), np.int8)[0] == -128

    interp = litert.interpreter(model)
    interp.allocate_tensors()
    (inp,), (outp,) = interp.get_input_details(), interp.get_output_details()
    step = float(graph.tensors[graph.operators[-2].outputs[0]].quantization.scale[0])
    for sample in samples(16, 0)[:4]:  # calibrated on: no value is clipped
        x = np.ascontiguousarray(np.moveaxis(sample["x"], 1, -1))
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        want = keras(x).numpy()
        got = interp.get_tensor(outp["index"])
        # A few int8 steps of the head's output: rounding through three layers, not a broken pool.
        assert np.abs(got - want).max() < 8 * step


def test_padding_within_the_range_and_models_without_padv2_are_left_alone() -> None:
    converter = Q.int8_converter(padded_pool("relu", pad_value=0.0), [IMAGE], samples(4, 0), "int8")
    calibrated = Q.calibrate_only(converter)
    assert Q.bound_max_pool_padding(calibrated) == calibrated
    converter = Q.int8_converter(padded_pool(None), [IMAGE], samples(4, 0), "int8")
    calibrated = Q.calibrate_only(converter)
    bounded = Q.bound_max_pool_padding(calibrated)
    obj, op, graph = padv2(bounded)
    low, high = Q.recorded_ranges(calibrated)[op.inputs[0]]
    assert low < 0 < high
    value = np.frombuffer(bytes(obj.buffers[graph.tensors[op.inputs[2]].buffer].data), np.float32)[0]
    assert value == np.float32(low)
    assert Q.recorded_ranges(bounded)[op.outputs[0]] == (low, high)


def test_an_overflowing_step_is_refused_with_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unbounded, the padding's -3.4e38 gives the stem a step of ~1e36; any such tensor (a -inf
    attention mask added to scores, zoo sdpa_causal) is one line naming it, not a native abort."""
    from edgeport.errors import EdgeportError

    monkeypatch.setattr(Q, "bound_max_pool_padding", lambda calibrated: calibrated)
    with pytest.raises(
        EdgeportError, match=r"quantization step of 1\.\de\+3\d: an infinite or float32-max"
    ) as err:
        Q.keras_to_quantized(padded_pool("relu"), "int8", [IMAGE], samples(16, 0), io="float")
    assert "--quantize dynamic" in err.value.fix
