"""pow_constant_exponent: Pow by a constant becomes ops TFLite Micro runs, with pow's values."""

from pathlib import Path

import numpy as np
from onnx import helper

from edgeport.converters.rewrites import pow_exponent
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, run


def pow_model(exponent: float):
    return make_model(
        [helper.make_node("Pow", ["x", "c"], ["y"])], {"x": [3, 50]}, ["y"], {"c": np.float32(exponent)}
    )


def test_constant_exponents_become_products_sqrt_or_exp_log_with_pows_values():
    x = np.random.default_rng(0).uniform(0.0, 4.0, (3, 50)).astype(np.float32)
    x[0, :3] = [0.0, 1e-6, 1e6]
    signed = x * np.where(np.arange(50) % 2, 1, -1).astype(np.float32)
    for exponent, kept in (
        (2, {"Mul": 1}),
        (3, {"Mul": 2}),
        (0.5, {"Sqrt": 1}),
        (1 / 3, {"Log": 1, "Exp": 1}),
    ):
        before = pow_model(exponent)
        after = pow_exponent.rewrite(before)
        assert "Pow" not in ops(after) and kept.items() <= ops(after).items()
        # Products keep a negative base's sign; the fractional forms give NaN there, as pow does.
        feed = {"x": signed if float(exponent).is_integer() else x}
        want, got = run(before, feed)[0], run(after, feed)[0]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    with np.errstate(invalid="ignore"):
        feed = {"x": signed}
        before, after = pow_model(1 / 3), pow_exponent.rewrite(pow_model(1 / 3))
        assert np.array_equal(np.isnan(run(before, feed)[0]), np.isnan(run(after, feed)[0]))


def test_other_integer_exponents_are_left_alone():
    for exponent in (5, -1, 1):
        model = pow_model(exponent)
        assert pow_exponent.rewrite(model) == model


def test_gem_pooling_quantizes_to_int8_that_tflite_micro_runs(tmp_path: Path):
    """Refused before calibration: 'TFLite Micro has no kernel for op POW' (zoo tensorops/global_pools)."""
    out = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "tensorops.py"
    convert_model(
        ConvertOptions(
            source=f"{zoo}:global_pools",  # the seeded zoo entry
            outdir=out,
            input_shapes=[[1, 3, 16, 16]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    assert "POW" not in read_tflite(out / "model_int8.tflite").ops
