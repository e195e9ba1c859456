"""Weight clustering (quant/cluster.py) and TFLite Micro LUT compression (quant/lut_compression.py).

Thresholds, from quantization theory rather than from the runs:
- Weight SQNR. The optimal 16-level quantizer of a Laplacian source (Lloyd-Max) reaches 18.1 dB, the
  4-level one 7.5 dB. The clustering is the exact least-squares optimum for each channel's own values,
  so its error is at most that quantizer's on the same values; integer centres add at most a quarter
  of a squared int8 step per weight, negligible at these weights' spread. 1 dB below Lloyd-Max leaves
  room for sampling on short channels: >= 17 dB at N = 16, >= 6.5 dB at N = 4.
- Output SQNR, clustered vs unclustered int8. Errors of L layers in series add about like independent
  noise, so the output is about 10 log10(L) below the worst layer: four weight layers at 18 dB give
  ~12 dB. The network's int8 requantization is identical in both models and is not part of the error.
- Size. The compressed model is the clustered one minus, per compressed tensor, the int8 bytes plus
  the packed indices, the value tables and a measured per-DECODE overhead (lut_plan); the test holds
  the file to that prediction within 1 %.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from edgeport.errors import EdgeportError
from edgeport.quant.cluster import buffer_span, cluster_rows, cluster_weights, index_bits
from edgeport.quant.fidelity import sqnr_db
from edgeport.quant.lut_compression import DECODE_OP, compress_lut, lut_plan, read_lut_weights
from edgeport.runtimes.tflm import run_tflm
from edgeport.tflite_file import edit_tflite, op_name, parse_tflite, serialize_tflite, tensor_name
from tests.quant import cluster_models
from tests.targets import synth

LAPLACE_LLOYD_MAX_DB = {16: 18.1, 4: 7.5}
SAMPLING_MARGIN_DB = 1.0
MIN_OUTPUT_SQNR_DB_16 = 12.0
SIZE_TOLERANCE = 0.01
SAMPLES = 6


@pytest.fixture(scope="module")
def keras_int8() -> bytes:
    return cluster_models.keras_int8_cnn()


@pytest.fixture(scope="module")
def synth_int8() -> bytes:
    return cluster_models.synth_int8_cnn()


def _inputs(model: bytes, seed: int = 7) -> list[list[np.ndarray]]:
    """Raw int8 inputs over the whole input range."""
    shape = parse_tflite(model).inputs[0].shape
    rng = np.random.default_rng(seed)
    return [[rng.integers(-128, 128, shape, dtype=np.int8)] for _ in range(SAMPLES)]


def _dequantized(model: bytes, outputs: list[list[np.ndarray]]) -> list[np.ndarray]:
    q = parse_tflite(model).outputs[0].quantization
    return [(s[0].astype(np.float64) - q.zero_point[0]) * q.scale[0] for s in outputs]


def _weights(model: bytes) -> dict[str, np.ndarray]:
    """Tensor name -> int8 data of every CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED weight."""
    raw = parse_tflite(model).raw
    graph = raw.subgraphs[0]
    result = {}
    for op in graph.operators:
        if op_name(raw.operatorCodes[op.opcodeIndex]) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            tensor = graph.tensors[op.inputs[1]]
            data = np.asarray(raw.buffers[tensor.buffer].data, np.uint8).view(np.int8)
            q = tensor.quantization
            axis = int(q.quantizedDimension) if len(np.atleast_1d(q.scale)) > 1 else None
            result[tensor_name(tensor)] = (data.reshape(tensor.shape), axis)
    return result


def _tables(weights: np.ndarray, axis: int | None) -> list[np.ndarray]:
    if axis is None:
        return [weights.ravel()]
    return list(np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1))


# --- cluster_rows: the numerical core ---------------------------------------------------------------


def _brute_force_error(values: np.ndarray, k: int) -> float:
    """Least squared error over every split of the sorted distinct values into k intervals."""
    distinct, counts = np.unique(values.astype(np.int64), return_counts=True)
    best = math.inf
    for cuts in _splits(len(distinct), k):
        bounds = [0, *cuts, len(distinct)]
        error = 0.0
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            v, c = distinct[lo:hi], counts[lo:hi]
            centre = np.round(np.sum(v * c) / np.sum(c))
            error += float(np.sum(c * (v - centre) ** 2))
        best = min(best, error)
    return best


def _splits(n: int, k: int, start: int = 1):
    if k == 1:
        yield []
        return
    for cut in range(start, n - k + 2):
        for rest in _splits(n, k - 1, cut + 1):
            yield [cut, *rest]


def test_cluster_rows_finds_the_least_squares_optimum() -> None:
    rng = np.random.default_rng(0)
    rows = np.clip(np.round(rng.laplace(0, 25, (4, 24))), -128, 127).astype(np.int8)
    for k in (2, 3, 4):
        clustered = cluster_rows(rows, k)
        for row, out in zip(rows, clustered, strict=True):
            assert len(np.unique(out)) <= k
            error = float(np.sum((row.astype(np.int64) - out) ** 2))
            assert error == _brute_force_error(row, k)


def test_cluster_rows_keeps_small_rows_and_is_deterministic() -> None:
    rng = np.random.default_rng(1)
    rows = rng.integers(-128, 128, (40, 300), dtype=np.int8)
    rows[3] = np.resize(np.array([-7, 0, 5, 90], np.int8), 300)  # four values: nothing to cluster at N >= 4
    first, second = cluster_rows(rows, 16), cluster_rows(rows.copy(), 16)
    assert np.array_equal(first, second)
    assert np.array_equal(first[3], rows[3])
    assert max(len(np.unique(r)) for r in first) == 16
    # Every centre is its interval's rounded mean: a channel's mean error is at most half a step.
    assert np.all(np.abs(first.astype(np.float64).mean(1) - rows.astype(np.float64).mean(1)) <= 0.5)


def test_index_bits() -> None:
    assert [index_bits(n) for n in (2, 3, 4, 5, 8, 9, 16, 128)] == [1, 2, 2, 3, 3, 4, 4, 7]


@pytest.mark.parametrize("n", [1, 129, 2.5])
def test_cluster_count_outside_the_lut_range_is_refused(synth_int8: bytes, n) -> None:
    with pytest.raises(EdgeportError, match="weight clusters"):
        cluster_weights(synth_int8, n)


def test_model_without_int8_weights_is_refused() -> None:
    g = synth.Graph()
    x = g.tensor([1, 4], synth.T.FLOAT32)
    w = g.tensor([2, 4], synth.T.FLOAT32, np.ones((2, 4), np.float32))
    y = g.tensor([1, 2], synth.T.FLOAT32)
    g.op(schema.BuiltinOperator.FULLY_CONNECTED, [x, w, -1], [y], 0, None)
    with pytest.raises(EdgeportError, match="no int8"):
        cluster_weights(g.build([x], [y]), 16)


# --- cluster_weights on converter output ----------------------------------------------------------


@pytest.mark.parametrize("n", [16, 4])
def test_clustered_weights_have_at_most_n_values_per_channel(keras_int8: bytes, n: int) -> None:
    result = cluster_weights(keras_int8, n)
    assert len(result.model) == len(keras_int8)  # only weight bytes change
    before, after = _weights(keras_int8), _weights(result.model)
    assert set(after) == {t.name for t in result.tensors}
    for report in result.tensors:
        weights, axis = after[report.name]
        assert axis == report.axis and axis in (0, 3)  # the converter quantizes every weight per channel
        tables = _tables(weights, axis)
        assert len(tables) == report.channels
        assert max(len(np.unique(t)) for t in tables) == report.clusters <= n
        assert report.sqnr_db >= LAPLACE_LLOYD_MAX_DB[n] - SAMPLING_MARGIN_DB
        if all(len(np.unique(t)) <= n for t in _tables(*before[report.name])):
            assert np.array_equal(weights, before[report.name][0])
    assert cluster_weights(keras_int8, n).model == result.model  # deterministic


def test_clustered_model_output_sqnr(keras_int8: bytes) -> None:
    raw = _inputs(keras_int8)
    reference = _dequantized(keras_int8, run_tflm(keras_int8, raw).raw_outputs)
    sqnr = {}
    for n in (16, 4):
        model = cluster_weights(keras_int8, n).model
        sqnr[n] = sqnr_db(reference, _dequantized(model, run_tflm(model, raw).raw_outputs))
    assert sqnr[16] >= MIN_OUTPUT_SQNR_DB_16
    assert sqnr[16] > sqnr[4]


# --- LUT compression ------------------------------------------------------------------------------


def _decode_ops(model: bytes) -> list:
    raw = parse_tflite(model).raw
    return [
        op
        for op in raw.subgraphs[0].operators
        if op_name(raw.operatorCodes[op.opcodeIndex]) == f"CUSTOM:{DECODE_OP}"
    ]


@pytest.mark.parametrize(("which", "n"), [("keras", 16), ("synth", 4)])
def test_compressed_model_runs_bit_exact_in_tflm(request, which: str, n: int) -> None:
    """The tflite-micro interpreter runs the DECODE operators: outputs identical to the clustered model.
    The synthetic model at N = 4 has all three table layouts: axis 0, the last axis, one table."""
    int8 = request.getfixturevalue(f"{which}_int8")
    clustered = cluster_weights(int8, n).model
    compressed = compress_lut(clustered)
    if which == "synth":
        assert {e.axis for e in lut_plan(clustered)} == {0, 3, None}
    assert _decode_ops(compressed)
    raw = _inputs(int8)
    for want, got in zip(
        run_tflm(clustered, raw).raw_outputs, run_tflm(compressed, raw).raw_outputs, strict=True
    ):
        assert np.array_equal(want[0], got[0])


@pytest.mark.parametrize("n", [16, 4])
def test_compressed_size_matches_the_tensor_sizes(synth_int8: bytes, n: int) -> None:
    clustered = cluster_weights(synth_int8, n).model
    plan = lut_plan(clustered)
    compressed = compress_lut(clustered)
    # Per-channel tables (the conv on axis 0; the depthwise on axis 3 only at N = 4: its 25 weights per
    # channel gain nothing from 16-entry tables) and one table for the per-tensor-quantized dense layer.
    assert {e.axis for e in plan} == ({0, 3, None} if n == 4 else {0, None})
    assert all(e.index_bits == index_bits(n) for e in plan)
    predicted = len(clustered) - sum(e.saved_bytes for e in plan)
    assert abs(len(compressed) - predicted) <= SIZE_TOLERANCE * len(clustered)
    # And the weights themselves shrink by about 8 / index_bits.
    raw_bytes = sum(e.raw_bytes for e in plan)
    stored = sum(e.index_bytes + e.table_bytes for e in plan)
    assert stored < raw_bytes * (index_bits(n) / 8) * 1.2


def test_read_back_weights_equal_the_clustered_ones(synth_int8: bytes) -> None:
    """An independent reader of the LUT format gets the clustered int8 weights back bit for bit."""
    clustered = cluster_weights(synth_int8, 8).model
    compressed = compress_lut(clustered)
    decoded = read_lut_weights(compressed)
    tensors = parse_tflite(compressed).raw.subgraphs[0].tensors
    weights = _weights(clustered)
    assert decoded
    for index, values in decoded.items():
        name = tensor_name(tensors[index]).removesuffix("_decoded")
        assert np.array_equal(values, weights[name][0])


def test_compressed_model_is_aligned_and_index_tensors_carry_no_quantization(synth_int8: bytes) -> None:
    compressed = compress_lut(cluster_weights(synth_int8, 16).model)
    raw = parse_tflite(compressed).raw
    for index, buffer in enumerate(raw.buffers):
        if buffer.data is not None and len(buffer.data):
            assert buffer_span(compressed, index)[0] % 16 == 0
    tensors = raw.subgraphs[0].tensors
    for op in _decode_ops(compressed):
        assert all(tensors[t].quantization is None for t in op.inputs)
        assert all(tensors[t].quantization is not None for t in op.outputs)


def test_old_style_operator_codes_are_normalized(synth_int8: bytes) -> None:
    """Codes kept only in deprecated_builtin_code (older converters) must not all turn into ADD."""
    model = edit_tflite(synth_int8)
    for code in model.operatorCodes:
        code.builtinCode = 0
    old_style = serialize_tflite(model)
    clustered = cluster_weights(old_style, 16).model
    compressed = compress_lut(clustered)
    assert [n for n in parse_tflite(compressed).ops if n != f"CUSTOM:{DECODE_OP}"] == parse_tflite(
        clustered
    ).ops
    raw = _inputs(synth_int8)
    for want, got in zip(
        run_tflm(clustered, raw).raw_outputs, run_tflm(compressed, raw).raw_outputs, strict=True
    ):
        assert np.array_equal(want[0], got[0])


def test_unclustered_model_has_nothing_to_compress(synth_int8: bytes) -> None:
    with pytest.raises(EdgeportError, match="(?i)cluster the weights first"):
        compress_lut(synth_int8)
