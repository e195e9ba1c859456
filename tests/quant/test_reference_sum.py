"""int8 SUM: TFLite's reference kernel is not a reference (quant/modes.py: UNRELIABLE_REFERENCE_OPS).

Attention rewritten to batched heads sums the heads with SUM; the int8 check refused every such
model ('TFLite Micro and TFLite's reference kernels differ by 53 quantization steps') although
TFLite Micro's SUM is the exactly rounded one and the reference kernel's is not.
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model


def int8_sum_model() -> tuple[bytes, tuple[float, int], tuple[float, int]]:
    """A Keras reduce_sum quantized to int8: (model, input (scale, zero point), output's)."""
    import tensorflow as tf
    import tf_keras as K

    x = K.Input((4, 11, 6), batch_size=1, name="x")
    keras = K.Model(x, K.layers.Lambda(lambda t: tf.reduce_sum(t, axis=1))(x))
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: (
        [rng.standard_normal((1, 4, 11, 6)).astype(np.float32) * 3] for _ in range(16)
    )
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = bytes(converter.convert())
    info = io_params(model)
    return model, info[0], info[1]


def io_params(model: bytes) -> tuple[tuple[float, int], tuple[float, int]]:
    from edgeport.tflite_file import parse_tflite

    parsed = parse_tflite(model)
    (i,), (o,) = parsed.inputs, parsed.outputs
    return (i.quantization.scale[0], i.quantization.zero_point[0]), (
        o.quantization.scale[0],
        o.quantization.zero_point[0],
    )


def test_tflite_micro_sum_is_exact_and_the_reference_kernels_is_not() -> None:
    """Why SUM is in UNRELIABLE_REFERENCE_OPS, on the runtimes at hand."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    from edgeport.runtimes.tflm import run_tflm

    model, (s_in, z_in), (s_out, z_out) = int8_sum_model()
    x = np.random.default_rng(1).integers(-128, 128, (1, 4, 11, 6)).astype(np.int8)
    exact = np.clip(np.round(((x.astype(float) - z_in) * s_in).sum(axis=1) / s_out + z_out), -128, 127)
    tflm = run_tflm(model, [[x]], "sum").raw_outputs[0][0].reshape(exact.shape)
    reference = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], x)
    reference.invoke()
    ref = reference.get_tensor(reference.get_output_details()[0]["index"]).reshape(exact.shape)
    assert np.abs(tflm.astype(int) - exact).max() <= 1
    assert np.abs(ref.astype(int) - exact).max() > 8


def test_a_model_with_sum_quantizes_and_says_it_was_not_checked_bit_for_bit(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("ReduceSum", ["h", "axes"], ["y"], keepdims=0),
    ]
    source = tmp_path / "sum.onnx"
    onnx.save(make_model(nodes, {"x": [1, 4, 6]}, ["y"], {"w": w, "axes": np.array([1], np.int64)}), source)
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(source), outdir=out, input_shapes=[[1, 4, 6]], quantize=QuantOptions(mode="int8")
        )
    )
    assert "SUM" in read_tflite(out / "model_int8.tflite").ops
    assert "not checked bit for bit" in (out / "edgeport.json").read_text()
