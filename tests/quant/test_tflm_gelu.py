"""gelu_tanh_for_tflm: the int8 model's GELU in ops TFLite Micro runs, close to the erf GELU the float
model keeps; the manifest and summary say so (quant/tflm_gelu.py, registered in quant/tflm_ops.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import int8 as q8
from edgeport.quant import tflm_gelu, tflm_ops
from edgeport.quant.modes import QuantOptions
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import parse_tflite, read_tflite, tensor_name
from tests.quant.int8_models import SHAPE

CODES = np.arange(-128, 128, dtype=np.int8)[None]  # every int8 input value


def test_the_written_form_is_the_tanh_gelu_and_close_to_erf():
    x = np.linspace(-12, 12, 24001)
    want = F.gelu(torch.from_numpy(x), approximate="tanh").numpy()
    np.testing.assert_allclose(tflm_gelu.tanh_gelu(x), want, rtol=0, atol=1e-12)
    # The known bound of the tanh approximation (4.7e-4): a small fraction of any int8 step.
    assert 1e-4 < tflm_gelu.FLOAT_ERROR < 5e-4
    assert np.abs(tflm_gelu.tanh_gelu(x) - tflm_gelu.exact_gelu(x)).max() <= tflm_gelu.FLOAT_ERROR * 1.001


@pytest.mark.parametrize(("low", "high"), [(-6.0, 6.0), (-10.0, 4.0), (0.5, 3.0), (-3.0, -1.0)])
def test_stage_ranges_hold_every_intermediate(low: float, high: float):
    x = np.linspace(low, high, 10001)
    a = np.abs(x)
    rate = -tflm_gelu.K1 - tflm_gelu.K2 * a * a
    logit = np.maximum(a * rate, -tflm_gelu.SIGMOID_INPUT_BOUND)
    term = a / (1 + np.exp(-logit))
    values = {"abs": a, "square": a * a, "rate": rate, "logit": logit, "term": term, "relu": np.maximum(x, 0)}
    ranges = tflm_gelu.stage_ranges(low, high)
    for what, v in values.items():
        lo, hi = ranges[what]
        assert lo - 1e-6 <= v.min() and v.max() <= hi + 1e-6, what
    assert ranges["logit"][0] >= -tflm_gelu.SIGMOID_INPUT_BOUND


def gelu_keras(approximate: bool = False):
    import tensorflow as tf
    import tf_keras as keras

    inp = keras.Input((256,), batch_size=1, name="x")
    # The multiply keeps the GELU off the model output (as inside a network).
    return keras.Model(inp, keras.layers.Lambda(lambda t: t * 1.0)(tf.nn.gelu(inp, approximate=approximate)))


def quantized(calibrated: bytes, converter) -> bytes:
    """The quantizer's half of the int8 conversion of `calibrated` as it stands."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    raw = mlir_quantize(calibrated, False, input_data_type=tf.int8, output_data_type=tf.int8)
    return bytes(raw)


def reference_run(model: bytes, codes: np.ndarray) -> tuple[np.ndarray, float, int, float, int]:
    """(int8 outputs on TFLite's reference kernels, input scale, zero point, output scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_content=model, experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    i, o = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(i["index"], codes)
    interpreter.invoke()
    return interpreter.get_tensor(o["index"]).astype(int), *i["quantization"], *o["quantization"]


@pytest.mark.parametrize(("low", "high"), [(-6.0, 6.0), (-10.0, 4.0), (-1.0, 1.0)])
def test_int8_gelu_written_out_stays_within_a_step_of_the_int8_gelu(low: float, high: float):
    """On every int8 input: the written-out GELU against the int8 GELU kernel (a lookup table of the exact
    function, what LiteRT runs) and against the exact GELU; TFLite Micro runs it bit-exactly."""
    spec = TensorSpec(name="x", shape=[1, 256], dtype="float32")
    samples = [{"x": np.linspace(low, high, 256, dtype=np.float32)[None]}]
    converter = q8.int8_converter(gelu_keras(), [spec], samples, "int8")
    calibrated = q8.calibrate_only(converter)  # GELU already written out
    ops = parse_tflite(calibrated).ops
    assert "GELU" not in ops and {"ABS", "LOGISTIC", "RELU", "SUB"} <= set(ops)
    converter = q8.int8_converter(gelu_keras(), [spec], samples, "int8")
    converter._experimental_calibrate_only, converter.exclude_conversion_metadata = True, True
    with_lut = bytes(converter.convert())
    assert "GELU" in parse_tflite(with_lut).ops

    written = quantized(calibrated, converter)
    assert tflm_gelu.approximated_gelus(written) and tflm_ops.replacement_notes(written)
    got, in_scale, in_zero, out_scale, out_zero = reference_run(written, CODES)
    lut = reference_run(quantized(with_lut, converter), CODES)[0]
    exact = tflm_gelu.exact_gelu((CODES.astype(float) - in_zero) * in_scale) / out_scale + out_zero
    inside = (exact > -128.5) & (exact < 127.5)
    # Measured: at most 1 step from the lookup table on 1-11 % of the inputs; mean error vs the exact
    # GELU within 0.06 step of the table's (whose own is up to 0.26).
    assert np.abs(got - lut).max() <= 1 and np.mean(got != lut) < 0.25
    assert np.abs(got - exact)[inside].mean() < np.abs(lut - exact)[inside].mean() + 0.1
    assert np.abs(got - exact)[inside].max() < 1.5
    # The approximation itself is far below one step.
    assert tflm_gelu.FLOAT_ERROR / out_scale < 0.2
    tflm = run_tflm(written, [[CODES]], "gelu").raw_outputs[0][0].astype(int)
    np.testing.assert_array_equal(tflm, got)


def test_a_tanh_gelu_is_written_out_without_a_note():
    spec = TensorSpec(name="x", shape=[1, 256], dtype="float32")
    samples = [{"x": np.linspace(-4, 4, 256, dtype=np.float32)[None]}]
    converter = q8.int8_converter(gelu_keras(approximate=True), [spec], samples, "int8")
    calibrated = q8.calibrate_only(converter)
    assert "GELU" not in parse_tflite(calibrated).ops
    written = quantized(calibrated, converter)
    assert tflm_gelu.approximated_gelus(written) == [] and tflm_ops.replacement_notes(written) == []
    names = [tensor_name(t) for t in parse_tflite(written).raw.subgraphs[0].tensors]
    assert any(tflm_gelu.TANH_MARKER in name for name in names)


def test_no_gelu_leaves_the_bytes():
    spec = TensorSpec(name="x", shape=[1, 256], dtype="float32")
    import tf_keras as keras

    inp = keras.Input((256,), batch_size=1, name="x")
    model = keras.Model(inp, keras.layers.Lambda(lambda t: t * 2.0)(inp))
    converter = q8.int8_converter(model, [spec], [{"x": np.ones((1, 256), np.float32)}], "int8")
    converter._experimental_calibrate_only, converter.exclude_conversion_metadata = True, True
    calibrated = bytes(converter.convert())
    assert tflm_gelu.replace_gelu(calibrated) == calibrated == tflm_ops.replace_for_tflm(calibrated)


def test_gelu_cnn_converts_to_int8_that_tflite_micro_runs_and_says_so(tmp_path: Path):
    """Refused before calibration before: 'TFLite Micro has no kernel for op GELU' (5 of the int8 zoo)."""
    out = tmp_path / "out"
    result = convert_model(
        ConvertOptions(
            source=f"{Path(__file__).with_name('int8_models.py')}:GeluCnn",
            outdir=out,
            input_shapes=[[1, *SHAPE]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    assert "GELU" in read_tflite(out / "model_float32.tflite").ops  # the float model keeps the erf GELU
    int8_ops = read_tflite(out / "model_int8.tflite").ops
    assert "GELU" not in int8_ops and "LOGISTIC" in int8_ops
    section = json.loads((out / MANIFEST_NAME).read_text())["sections"]["quantization"]
    notes = [n for n in section["calibration"]["notes"] if "GELU" in n]
    assert len(notes) == 1 and notes[0].startswith("2 GELUs at ") and "tanh approximation" in notes[0]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0
    assert "tanh approximation of GELU" in result.summary()


def test_list_passes_lists_the_op_replacements(run_cli):
    code, out, _ = run_cli("convert", "--list-passes")
    assert code == 0
    assert [r.name for r in tflm_ops.OP_REPLACEMENTS] == ["tflm_gelu"]
    assert out.index("ONNX passes") < out.index("TFLite Micro op replacements") < out.index("  tflm_gelu ")


def _float_gelu(with_gelu: bool) -> bytes:
    """A float .tflite of x -> GELU(x) (or x + x), built with quant/calibrated.py's helpers."""
    from edgeport.quant.calibrated import add_activation, new_operator
    from edgeport.tflite_file import schema, serialize_tflite

    model, graph = schema.ModelT(), schema.SubGraphT()
    model.version, model.buffers, model.subgraphs, model.operatorCodes = 3, [schema.BufferT()], [graph], []
    graph.tensors, graph.operators = [], []
    t = schema.TensorT()
    t.name, t.type, t.shape, t.buffer = b"x", schema.TensorType.FLOAT32, np.array([1, 4], np.int32), 0
    graph.tensors.append(t)
    y = add_activation(model, graph, "y", 0, None)
    ops = schema.BuiltinOperator
    op = new_operator(model, ops.GELU, [0], y) if with_gelu else new_operator(model, ops.ADD, [0, 0], y)
    graph.operators.append(op)
    graph.inputs, graph.outputs = np.array([0], np.int32), np.array([y], np.int32)
    return serialize_tflite(model)


def test_skipping_the_gelu_replacement_refuses_a_gelu_model_only():
    """Without the replacement TFLite Micro, which every integer model is checked in, has no GELU kernel:
    the skip is refused up front, naming the pass and the way out; on a model without GELU it is a no-op."""
    with pytest.raises(EdgeportError, match=r"m.tflite: --skip-pass tflm_gelu keeps the model's GELU") as err:
        tflm_ops.refuse_skipped_replacements(["tflm_gelu"], _float_gelu(True), "m.tflite")
    assert "no GELU kernel" in err.value.problem
    assert err.value.fix.startswith("drop --skip-pass tflm_gelu") and "approximate='tanh'" in err.value.fix
    tflm_ops.refuse_skipped_replacements([], _float_gelu(True), "m.tflite")
    tflm_ops.refuse_skipped_replacements(["tflm_gelu", "onnxsim"], _float_gelu(False), "m.tflite")


def test_a_skipped_gelu_replacement_is_one_line_before_calibration(run_cli, tmp_path: Path, no_calibration):
    out = tmp_path / "out"
    source = f"{Path(__file__).with_name('int8_models.py')}:GeluCnn"
    code, _, err = run_cli(
        "convert", source, "-o", out, "--input-shape", f"1,{','.join(map(str, SHAPE))}",
        "--quantize", "int8", "--skip-pass", "tflm_gelu", "-q",
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err and not out.exists()
    assert "--skip-pass tflm_gelu keeps the model's GELU" in err and "Drop --skip-pass tflm_gelu" in err
    assert err.strip().count("\n") == 0
