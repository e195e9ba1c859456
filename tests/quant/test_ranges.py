"""Activation ranges for int8 (quant/ranges.py) and their path through the TFLite quantizer (quant/int8.py).

The pure functions are checked on synthetic values whose right answer is known. The converter
path is checked on two small Keras models built here (no training, seconds each): one with the
ops whose ranges the quantizer constrains (ADD, CONCATENATION, MAX_POOL_2D, SOFTMAX), and one
where a single calibration pixel drives an intermediate activation to 18 sigma, which min/max
calibration must stretch its int8 step over and percentile/MSE clipping must not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edgeport.quant import int8 as Q
from edgeport.quant.fidelity import sqnr_db
from edgeport.quant.ranges import (
    RANGE_METHODS,
    Histogram,
    fake_quantize,
    int8_params,
    minmax,
    mse,
    percentile,
    quantization_mse,
)
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import op_name, parse_tflite, schema, tensor_name


def actual_mse(x: np.ndarray, low: float, high: float) -> float:
    return float(np.mean((fake_quantize(x, low, high) - x) ** 2))


# --- pure functions --------------------------------------------------------------------------------


def test_histogram_keeps_exact_zeros_apart_and_minmax_is_the_extremes() -> None:
    x = np.concatenate([np.zeros(600), np.linspace(-1.0, 3.0, 400)])
    hist = Histogram.of(x)
    assert hist.total == 1000 and hist.zeros == 600 and hist.counts.sum() == 400
    assert 0.0 in hist.edges
    assert minmax(hist) == (-1.0, 3.0)
    only_zeros = Histogram.of(np.zeros(10))
    assert minmax(only_zeros) == mse(only_zeros) == percentile(only_zeros) == (0.0, 0.0)


def test_int8_params_follow_the_tflite_quantizer() -> None:
    assert int8_params(-1.0, 3.0) == pytest.approx((4 / 255, -64))
    # A range that misses 0 is widened to contain it, so 0 stays exactly representable.
    assert int8_params(0.5, 2.0) == pytest.approx((2 / 255, -128))
    assert fake_quantize(np.array([0.0]), -0.37, 1.91)[0] == 0.0


def test_histogram_error_model_matches_measured_quantization_error() -> None:
    """The closed-form per-bin integral against quantizing the values themselves."""
    rng = np.random.default_rng(0)
    relu = np.maximum(rng.standard_normal(300_000), 0) * rng.choice([1.0, 6.0], 300_000, p=[0.999, 0.001])
    gauss = rng.standard_normal(300_000)
    for x, ranges in ((relu, [(0, 12), (0, 3), (0, 25)]), (gauss, [(-4, 4), (-1, 2.5), (-0.3, 0.2)])):
        hist = Histogram.of(x)
        for low, high in ranges:
            assert quantization_mse(hist, low, high)[0] == pytest.approx(actual_mse(x, low, high), rel=0.01)


def test_mse_range_clips_rare_outliers_and_lowers_the_error() -> None:
    """N(0, 1) with one value at +20 and one at -20 in a million: min/max spends the int8 grid on
    them. Clipping them costs (20 - c)^2 / 10^6 each, far less than the rounding error saved."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(1_000_000)
    x[:2] = [20.0, -20.0]
    hist = Histogram.of(x)
    low, high = mse(hist)
    assert -0.5 * 20 < low < 0 < high < 0.5 * 20
    assert actual_mse(x, low, high) < 0.5 * actual_mse(x, -20.0, 20.0)
    # Close to the best range a fine exact search finds (this search is symmetric; mse's is not).
    best = min(actual_mse(x, -c, c) for c in np.linspace(2.0, 20.0, 181))
    assert actual_mse(x, low, high) <= 1.05 * best


def test_mse_keeps_outliers_that_carry_the_error() -> None:
    """20 values at +40 in 200k: clipping them would cost more than the rounding it saves, so the
    MSE range keeps them (a 99.9th percentile would clip them regardless)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(200_000)
    x[:20] = 40.0
    hist = Histogram.of(x)
    assert mse(hist)[1] == pytest.approx(40.0, rel=0.01)
    assert percentile(hist, 99.9)[1] < 5.0


def test_percentile_clips_known_outliers() -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-1.0, 2.0, 1_000_000), [50.0] * 5, [-40.0] * 5])
    low, high = percentile(Histogram.of(x), 99.99)
    bin_width = 90.0 / 2048
    assert low == pytest.approx(-1.0, abs=bin_width) and high == pytest.approx(2.0, abs=bin_width)
    assert percentile(Histogram.of(x), 100.0) == (-40.0, 50.0)
    # ReLU outputs: most values exactly 0, so the lower percentile is 0 itself.
    relu = np.maximum(rng.standard_normal(100_000), 0)
    assert percentile(Histogram.of(relu))[0] == 0.0


# --- through the TFLite quantizer ------------------------------------------------------------------

IMAGE = TensorSpec("x", [1, 3, 8, 8], channels_last=True)


@pytest.fixture(scope="module")
def graph() -> dict[str, Any]:
    """conv+relu -> conv -> add -> concat(add, relu) -> maxpool -> mean -> dense (logits) -> softmax."""
    import tf_keras as K

    K.utils.set_random_seed(0)
    x = K.Input((8, 8, 3), name="x")
    a = K.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    b = K.layers.Conv2D(8, 3, padding="same")(a)
    c = K.layers.Add()([a, b])
    d = K.layers.Concatenate()([c, a])
    e = K.layers.MaxPooling2D()(d)
    logits = K.layers.Dense(4, name="logits")(K.layers.GlobalAveragePooling2D()(e))
    probs = K.layers.Softmax(name="probs")(logits)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(16)]
    return {"keras": K.Model(x, [logits, probs]), "samples": samples}


def tensors_by_op(model: bytes) -> dict[str, list[str]]:
    """Builtin op name -> names of the tensors its instances produce, in graph order."""
    obj = parse_tflite(model).raw
    graph = obj.subgraphs[0]
    out: dict[str, list[str]] = {}
    for op in graph.operators:
        name = op_name(obj.operatorCodes[op.opcodeIndex])
        out.setdefault(name, []).extend(tensor_name(graph.tensors[i]) for i in op.outputs)
    return out


def params(model: bytes) -> dict[str, tuple[float, int]]:
    """Tensor name -> (scale, zero point) of every per-tensor quantized tensor."""
    out = {}
    for t in parse_tflite(model).raw.subgraphs[0].tensors:
        q = t.quantization
        if q is not None and q.scale is not None and len(q.scale) == 1:
            out[tensor_name(t)] = (float(q.scale[0]), int(q.zeroPoint[0]))
    return out


def index_of(model: bytes, name: str) -> int:
    tensors = parse_tflite(model).raw.subgraphs[0].tensors
    return next(i for i, t in enumerate(tensors) if tensor_name(t) == name)


@pytest.mark.parametrize("io", ["int8", "float"])
def test_unedited_calibration_quantizes_to_the_converters_own_bytes(graph: dict, io: str) -> None:
    direct = Q.keras_to_quantized(graph["keras"], "int8", [IMAGE], graph["samples"], io)
    converter = Q.int8_converter(graph["keras"], [IMAGE], graph["samples"], io)
    calibrated = Q.calibrate_only(converter)
    assert Q.quantize_calibrated(converter, calibrated, io) == direct
    # Rewriting the recorded ranges unchanged, and quantizing twice from one converter (the probe
    # does), change nothing either.
    Q.probe_range_use(converter, calibrated, io)
    same = Q.set_ranges(calibrated, Q.recorded_ranges(calibrated))
    assert Q.quantize_calibrated(converter, same, io) == direct


def test_how_the_quantizer_treats_edited_ranges(graph: dict) -> None:
    """What quant/int8.py's docstring states, on the quantizer at hand."""
    converter = Q.int8_converter(graph["keras"], [IMAGE], graph["samples"], "int8")
    calibrated = Q.calibrate_only(converter)
    ops = tensors_by_op(calibrated)
    relu_conv, conv = ops["CONV_2D"]
    (add,), (concat,), (pool,), (softmax,) = (
        ops["ADD"],
        ops["CONCATENATION"],
        ops["MAX_POOL_2D"],
        ops["SOFTMAX"],
    )
    base = params(Q.quantize_calibrated(converter, calibrated, "int8"))

    def quantized_with(name: str, low: float, high: float) -> dict[str, tuple[float, int]]:
        edited = Q.set_ranges(calibrated, {index_of(calibrated, name): (low, high)})
        return params(Q.quantize_calibrated(converter, edited, "int8"))

    # A conv output feeding an ADD keeps its own range (ADD rescales its inputs).
    got = quantized_with(conv, -0.5, 1.0)
    assert got[conv] == pytest.approx(int8_params(-0.5, 1.0), rel=1e-6)
    # A concat's output range is imposed on its inputs (and on the max pool after it).
    got = quantized_with(concat, -0.5, 1.0)
    for name in (concat, add, relu_conv, pool):
        assert got[name] == pytest.approx(int8_params(-0.5, 1.0), rel=1e-6)
    # A max pool's own range and an input of the concat are ignored: the concat's range wins.
    assert quantized_with(pool, -0.2, 1.0)[pool] == base[pool] == base[concat]
    assert quantized_with(relu_conv, 0.0, 1.0)[relu_conv] == base[concat]
    # SOFTMAX's output range is fixed by the int8 spec.
    assert quantized_with(softmax, 0.0, 0.3)[softmax] == base[softmax] == pytest.approx((1 / 256, -128))


def test_probe_finds_the_ranges_the_quantizer_uses(graph: dict) -> None:
    converter = Q.int8_converter(graph["keras"], [IMAGE], graph["samples"], "float")
    calibrated = Q.calibrate_only(converter)
    use = Q.probe_range_use(converter, calibrated, "float")
    ops = tensors_by_op(calibrated)
    index = {name: index_of(calibrated, name) for names in ops.values() for name in names}
    relu_conv, conv = ops["CONV_2D"]
    logits = ops["FULLY_CONNECTED"][0]
    assert {index[n] for n in (conv, ops["CONCATENATION"][0], ops["MEAN"][0], logits)} <= use.used
    for name in (relu_conv, ops["ADD"][0], ops["MAX_POOL_2D"][0], ops["SOFTMAX"][0]):
        assert index[name] not in use.used
    # With float I/O the int8 sides are a QUANTIZE's output and a DEQUANTIZE's input.
    assert use.at_io == {0, index[logits]} and Q.recorded_ranges(calibrated)[0]


@pytest.mark.parametrize("method", RANGE_METHODS)
def test_each_method_gives_a_full_integer_model_that_runs(graph: dict, method: str) -> None:
    from edgeport.converters.onnx_to_tflite import keras_to_tflite

    report: dict[str, Any] = {}
    model = Q.keras_to_quantized(graph["keras"], "int8", [IMAGE], graph["samples"], "int8", method, report)
    types = {t.type for t in parse_tflite(model).raw.subgraphs[0].tensors}
    assert types <= {schema.TensorType.INT8, schema.TensorType.INT32}
    outputs = [TensorSpec("logits", [1, 4]), TensorSpec("probs", [1, 4])]
    ref = LiteRTRunner(keras_to_tflite(graph["keras"]), [IMAGE], outputs)
    got = LiteRTRunner(model, [IMAGE], outputs)
    x = [{"x": s} for s in np.random.default_rng(5).standard_normal((8, 1, 3, 8, 8)).astype(np.float32)]
    assert sqnr_db([ref.run(s)["logits"] for s in x], [got.run(s)["logits"] for s in x]) > 20.0
    # The model's inputs and outputs keep the converter's min/max ranges whatever the method.
    minmax_model = Q.keras_to_quantized(graph["keras"], "int8", [IMAGE], graph["samples"], "int8")
    baseline = LiteRTRunner(minmax_model, [IMAGE], outputs)
    for (_, index), (_, base_index) in zip(
        got.inputs + got.outputs, baseline.inputs + baseline.outputs, strict=True
    ):
        assert got.details[index]["quantization"] == baseline.details[base_index]["quantization"]
    if method == "minmax":
        assert model == minmax_model and not report
    else:
        assert report["method"] == method and report["set"] >= 3 and len(report["kept_at_io"]) == 2


def test_bad_range_method_is_refused(graph: dict) -> None:
    with pytest.raises(ValueError, match="unknown activation range method"):
        Q.keras_to_quantized(graph["keras"], "int8", [IMAGE], graph["samples"], ranges="kl")
    with pytest.raises(ValueError, match="int8 only"):
        Q.keras_to_quantized(graph["keras"], "dynamic", [IMAGE], ranges="mse")


OUTLIER_IMAGE = TensorSpec("x", [1, 16, 32, 32], channels_last=True)


def test_clipped_ranges_beat_minmax_on_an_activation_outlier() -> None:
    """x (16 channels) -> 1x1 conv "mix" (32 channels) -> 1x1 conv + ReLU6 of mix's first 4 -> output.

    mix's first channel is the mean of the 16 inputs times 4 (the others mix them with random
    signs): N(0, 1) on Gaussian inputs, but one calibration pixel with all 16 channels at +4.5
    (inside the input's own range, which 10^6 Gaussian draws reach) makes it 18, and a few other
    channels +-9. Min/max stretches mix's int8 step over [-9, 18]; the ReLU6 output's range stays
    [0, 6], so that coarse step is what limits the output's SQNR on ordinary inputs. A handful of
    values in 2.1 million: clipping them costs less squared error than the finer step saves (MSE
    clips them, to about [-4, 4.8]) and they lie beyond the 99.999th percentile. If a method returned
    min/max, or its ranges did not reach the quantizer, the test fails.
    """
    import tf_keras as K

    from edgeport.converters.onnx_to_tflite import keras_to_tflite

    x = K.Input((32, 32, 16), name="x")
    mix = K.layers.Conv2D(32, 1, use_bias=False, name="mix")
    out = K.layers.Conv2D(4, 1, use_bias=False, activation="relu6", name="out")
    model = K.Model(x, out(mix(x)))
    signs = np.random.default_rng(7).choice([-1.0, 1.0], (16, 32))
    signs[:, 0] = 1.0
    mix.set_weights([(0.25 * signs).reshape(1, 1, 16, 32).astype(np.float32)])
    out.set_weights([np.eye(32, 4, dtype=np.float32).reshape(1, 1, 32, 4)])

    rng = np.random.default_rng(8)
    samples = [{"x": rng.standard_normal((1, 16, 32, 32)).astype(np.float32)} for _ in range(64)]
    samples[0]["x"][0, :, 5, 5] = 4.5
    held_out = [{"x": rng.standard_normal((1, 16, 32, 32)).astype(np.float32)} for _ in range(16)]
    outputs = [TensorSpec("out", [1, 4, 32, 32], channels_last=True)]
    ref = LiteRTRunner(keras_to_tflite(model), [OUTLIER_IMAGE], outputs)
    expected = [ref.run(s)["out"] for s in held_out]

    sqnr, reports = {}, {}
    for method in RANGE_METHODS:
        reports[method] = {}
        q = Q.keras_to_quantized(model, "int8", [OUTLIER_IMAGE], samples, "int8", method, reports[method])
        got = LiteRTRunner(q, [OUTLIER_IMAGE], outputs)
        sqnr[method] = sqnr_db(expected, [got.run(s)["out"] for s in held_out])
    # Measured: minmax 29.5 dB (mix's int8 step 0.106 for a N(0, 1) body), percentile 35.8, MSE 35.5.
    assert sqnr["percentile"] > sqnr["minmax"] + 4.0, sqnr
    assert sqnr["mse"] > sqnr["minmax"] + 4.0, sqnr
    for method in ("percentile", "mse"):
        assert reports[method]["set"] == 1 and reports[method]["median_width_vs_observed_minmax"] < 0.5
