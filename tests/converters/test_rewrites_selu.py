"""selu_to_relu_exp: nn.SELU written out, same values, no SELECT in the converted model."""

from pathlib import Path

import numpy as np
from onnx import helper

from edgeport.converters.rewrites import selu
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, run


def test_selu_is_written_out_with_its_values():
    for attrs in ({}, {"alpha": 1.5, "gamma": 2.0}):
        before = make_model([helper.make_node("Selu", ["x"], ["y"], **attrs)], {"x": [4, 50]}, ["y"])
        after = selu.rewrite(before)
        assert "Selu" not in ops(after)
        x = np.random.default_rng(0).standard_normal((4, 50)).astype(np.float32) * 3
        want, got = run(before, {"x": x})[0], run(after, {"x": x})[0]
        positive = x > 0
        np.testing.assert_array_equal(got[positive], want[positive])
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_zoo_selu_quantizes_to_int8_that_tflite_micro_runs(tmp_path: Path):
    """Refused before calibration: 'TFLite Micro has no kernel for op SELECT' (zoo act_sigmoid_tanh)."""
    out = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "normact.py"
    convert_model(
        ConvertOptions(
            source=f"{zoo}:act_sigmoid_tanh",
            outdir=out,
            input_shapes=[[1, 3, 16, 16]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    assert "SELECT" not in read_tflite(out / "model_int8.tflite").ops
