"""The TFLite Micro probe's inputs: index inputs drawn by calibration's one integer draw, quantized inputs
over their integers, floats from N(0, 1); all seeded, in the file's input order."""

from __future__ import annotations

import numpy as np

from edgeport.quant.input_stats import from_user, integer_samples
from edgeport.quant.modes import CALIBRATION_SEED, probe_inputs
from edgeport.tensors import DEFAULT_INDEX_RANGE, TensorSpec
from edgeport.tflite_file import edit_tflite, schema, serialize_tflite
from tests.targets.synth import Graph, T


def _model() -> bytes:
    """Inputs: int32 token ids (no quantization), an int16 quantized input (a16w8's integer I/O), an
    int8 quantized one, a float one. No operators: the probe only reads the inputs."""
    g = Graph()
    ids = g.tensor([1, 40], T.INT32, scale=None)
    wide = g.tensor([1, 64], T.INT16, scale=None)
    g.tensors[wide].quantization = g.tensors[g.tensor([1], T.INT8)].quantization  # a scale, as int16 I/O has
    narrow = g.tensor([1, 64], T.INT8)
    floats = g.tensor([2, 3], T.FLOAT32)
    return g.build([ids, wide, narrow, floats], [floats])


def test_index_inputs_use_calibrations_integer_draw() -> None:
    ids, wide, narrow, floats = probe_inputs(_model())[0]
    expected = integer_samples(
        np.random.default_rng(CALIBRATION_SEED), TensorSpec("t0", [1, 40], "int32"), None
    )
    np.testing.assert_array_equal(ids, expected)
    assert ids.dtype == np.int32
    for quantized, dtype in ((wide, np.int16), (narrow, np.int8)):
        assert quantized.dtype == dtype and quantized.min() < 0 <= quantized.max() <= 127
    assert floats.dtype == np.float32 and floats.shape == (2, 3)
    np.testing.assert_array_equal(probe_inputs(_model())[0][1], wide)  # seeded


def _signed(model: bytes, keys: list[str]) -> bytes:
    """`model` with a signature naming its inputs `keys`, in order (as the converter writes one)."""
    edited = edit_tflite(model)
    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex, signature.inputs, signature.outputs = (
        b"serving_default",
        0,
        [],
        [],
    )
    for key, index in zip(keys, edited.subgraphs[0].inputs, strict=True):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = key.encode(), int(index)
        signature.inputs.append(entry)
    edited.signatureDefs = [signature]
    return serialize_tflite(edited)


SOURCE = [
    TensorSpec("ids", [1, 40], "int32"),
    TensorSpec("wide", [1, 64], "float32"),
    TensorSpec("narrow", [1, 64], "float32"),
    TensorSpec("floats", [2, 3], "float32"),
]


def test_an_index_inputs_stated_range_is_drawn_from() -> None:
    """--input-range ids=100,131 (a vocabulary slice, say): the probe's ids are drawn from it, as
    calibration's are, not from DEFAULT_INDEX_RANGE; other inputs' draws are unchanged."""
    model = _signed(_model(), ["ids", "wide", "narrow", "floats"])
    stats = {"ids": from_user(None, None, (100.0, 131.0)), "floats": from_user(None, None, (5.0, 6.0))}
    ids, *rest = probe_inputs(model, SOURCE, stats)[0]
    expected = integer_samples(
        np.random.default_rng(CALIBRATION_SEED), TensorSpec("t0", [1, 40], "int32"), stats["ids"]
    )
    np.testing.assert_array_equal(ids, expected)
    assert ids.dtype == np.int32 and 100 <= ids.min() and ids.max() <= 131 and len(set(ids.ravel())) > 8
    _, *unranged = probe_inputs(model, SOURCE)[0]
    for got, want in zip(rest, unranged, strict=True):
        np.testing.assert_array_equal(got, want)
    # Without the source inputs (or a signature) there is nothing to match the range to: the default.
    for default in (probe_inputs(model, (), stats)[0][0], probe_inputs(_model(), SOURCE, stats)[0][0]):
        assert DEFAULT_INDEX_RANGE[0] <= default.min() and default.max() <= DEFAULT_INDEX_RANGE[1]


def test_inputs_are_matched_by_name_not_position() -> None:
    """The file's input order need not be the source's: the signature says which tensor is which."""
    g = Graph()
    first, second = g.tensor([1, 8], T.INT32, scale=None), g.tensor([1, 8], T.INT32, scale=None)
    model = _signed(g.build([first, second], [second]), ["b", "a"])
    specs = [TensorSpec("a", [1, 8], "int32"), TensorSpec("b", [1, 8], "int32")]
    stats = {"a": from_user(None, None, (1000.0, 1003.0)), "b": from_user(None, None, (-50.0, -40.0))}
    b, a = probe_inputs(model, specs, stats)[0]
    assert 1000 <= a.min() and a.max() <= 1003 and -50 <= b.min() and b.max() <= -40


def test_the_conversion_probes_with_the_stated_range(tmp_path, monkeypatch, run_cli, no_calibration) -> None:
    """The int8 stage hands the probe the input statistics: TFLite Micro's probe run gets ids from
    --input-range (the run stops at calibration, which this test does not need)."""
    import onnx
    from onnx import TensorProto

    from edgeport.quant import tflm_ops
    from tests.quant.test_int8_integer_inputs import token_model

    onnx.save(token_model(TensorProto.INT32, 0), tmp_path / "tokens.onnx")
    probed: list[np.ndarray] = []
    run = tflm_ops.run_tflm

    def recording(model, raw_inputs, *args, **kwargs):
        probed.append(raw_inputs[0][0])
        return run(model, raw_inputs, *args, **kwargs)

    monkeypatch.setattr(tflm_ops, "run_tflm", recording)
    run_cli("convert", tmp_path / "tokens.onnx", "-o", tmp_path / "out", "--quantize", "int8", "-q",
            "--input-range", "ids=20,31")  # fmt: skip
    (ids,) = probed
    assert (
        ids.dtype == np.int32 and 20 <= ids.min() and ids.max() <= 31 and ids.max() > DEFAULT_INDEX_RANGE[1]
    )
