"""Verification never passes a bad model as good: NaN/inf and shape mismatches are their own failures."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from onnx import helper

from edgeport.agreement import compare
from edgeport.converters.verify import non_finite_weights, verification_failure
from edgeport.quant.input_stats import from_user, verification_samples
from edgeport.tensors import TensorSpec, random_inputs
from tests.onnx_graphs import make_model

FIXTURES = "tests/fixtures/bad_models.py"


def _samples(*arrays: np.ndarray) -> list[dict[str, np.ndarray]]:
    return [{"y": a} for a in arrays]


def test_agreeing_outputs_measure_their_error() -> None:
    ref = _samples(np.array([1.0, -2.0]), np.array([4.0, 0.0]))
    got = _samples(np.array([1.0, -2.5]), np.array([4.0, 0.0]))
    (error,) = compare("tflite_float32", ref, got)
    assert error.problem is None and error.max_abs_error == 0.5 and error.max_rel_error == 0.125


@pytest.mark.parametrize(
    "ref,got,words",
    [
        (np.full(3, np.nan), np.full(3, np.nan), "the reference output 'y' has 3 NaN or inf"),
        (np.array([1.0, np.inf]), np.array([1.0, np.inf]), "the reference output 'y' has 1 NaN or inf"),
        (np.ones(3), np.array([1.0, np.nan, 1.0]), "the tflite_float32 output 'y' has 1 NaN or inf"),
        (np.ones(3), np.array([1.0, -np.inf, 1.0]), "where the reference is finite"),
        (np.ones((1, 4)), np.ones((4,)), "has shape [4] but the reference's has [1, 4] (a shape mismatch"),
    ],
)
def test_unmeasurable_outputs_fail_with_their_own_problem(ref, got, words: str) -> None:
    (error,) = compare("tflite_float32", _samples(np.ones_like(ref), ref), _samples(np.ones_like(ref), got))
    assert error.problem is not None and words in error.problem, error.problem
    assert math.isnan(error.max_rel_error) and not error.max_rel_error < 1e-4  # fails any tolerance
    assert "on verification input 2 of 2" in error.problem or "shape" in error.problem


def test_missing_output_is_named() -> None:
    (error,) = compare("onnx", _samples(np.ones(2)), [{"z": np.ones(2)}])
    assert error.problem == "the onnx model has no output 'y'"


def test_failure_messages_say_what_failed_not_a_relative_error() -> None:
    (shape,) = compare("tflite_float32", _samples(np.ones((1, 4))), _samples(np.ones((1, 5))))
    message = verification_failure(shape, "pytorch", 1e-4).one_line()
    assert "shape mismatch" in message and "max rel. error" not in message
    (nan_ref,) = compare("onnx", _samples(np.full(2, np.nan)), _samples(np.full(2, np.nan)))
    message = verification_failure(nan_ref, "pytorch", 1e-4, notes=["BN x: degenerate"]).one_line()
    assert (
        message.startswith("the pytorch reference output 'y' has 2 NaN or inf")
        and "(BN x: degenerate)" in message
    )
    (numeric,) = compare("tflite_float32", _samples(np.ones(2)), _samples(np.full(2, 2.0)))
    assert "max rel. error 1.00e+00 > 1e-04" in verification_failure(numeric, "onnx", 1e-4).one_line()


def _weighted(w: np.ndarray, mask: np.ndarray) -> list[str]:
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "mask"], ["y"], name="masked"),
    ]
    return non_finite_weights(make_model(nodes, {"x": [2, 3]}, ["y"], {"w": w, "mask": mask}))


def test_nan_weight_and_inf_weight_are_named_but_an_inf_mask_is_not() -> None:
    w = np.ones((3, 3))
    mask = np.triu(np.full((2, 3), -np.inf), 1)  # a causal mask: -inf is meant
    assert _weighted(w, mask) == []
    w[0, 1] = np.nan
    assert _weighted(w, mask) == ["weight 'w' has 1 NaN value(s) of 9"]
    w[0, 1], w[2, 2] = np.inf, -np.inf
    assert _weighted(w, mask) == ["weight 'w' has 2 inf value(s) of 9"]
    mask[0, 0] = np.nan
    assert _weighted(np.ones((3, 3)), mask) == ["weight 'mask' has 1 NaN value(s) of 6"]


@pytest.mark.parametrize(
    "model,shape,words",
    [
        ("NanWeight", "1,8", "the model has non-finite weights: weight 'fc.weight' has 1 NaN value(s) of 32"),
        ("AllNanOutput", "1,8", "the pytorch reference output 'output' has 4 NaN or inf value(s) of 4"),
        (
            "NegativeVarianceBN",
            "1,3,8,8",
            "(BatchNormalization /bn/BatchNormalization: degenerate statistics: var + epsilon <= 0 in 1 of 4",
        ),
    ],
)
def test_bad_models_fail_through_the_cli_and_write_nothing(
    run_cli, tmp_path, monkeypatch, model, shape, words
) -> None:
    from edgeport.pipeline import stages

    def never(*args, **kwargs):
        raise AssertionError("onnx2tf ran for a model that was bad before conversion")

    monkeypatch.setattr(stages, "onnx_to_keras", never)  # refused before the slow stage
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("convert", f"{FIXTURES}:{model}", "-o", out, "--input-shape", shape)
    assert code == 1 and words in stderr, stderr
    assert "max rel. error" not in stderr and "Traceback" not in stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _spec(name: str = "x", shape: tuple[int, ...] = (1, 3, 16, 16)) -> TensorSpec:
    return TensorSpec(name, list(shape))


def test_verification_samples_without_known_statistics_are_the_normal_ones() -> None:

    specs = [_spec(), _spec("ids", (1, 5))]
    specs[1].dtype = "int64"
    drawn, plain = verification_samples(specs, 3, 0), random_inputs(specs, 3, 0)
    assert len(drawn) == 3
    for a, b in zip(drawn, plain, strict=True):
        assert all(np.array_equal(a[k], b[k]) for k in b)


def test_verification_samples_cover_the_stated_range_and_stay_inside_it() -> None:

    spec = _spec()
    stats = {"x": from_user(None, None, (0.0, 255.0))}
    samples = verification_samples([spec], 3, 0, stats)
    assert len(samples) == 9  # normal, N(mean, std) of the range, uniform over the range
    values = np.stack([s["x"] for s in samples])
    assert values.min() >= 0.0 and values.max() <= 255.0
    uniform = np.stack([s["x"] for s in samples[6:]])
    assert uniform.min() < 5 and uniform.max() > 250 and 100 < uniform.mean() < 155
    again = verification_samples([spec], 3, 0, stats)  # seeded
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(samples, again, strict=True))


def test_a_rewrite_exact_only_near_zero_is_caught_on_the_stated_range() -> None:

    def saturating(x: np.ndarray) -> np.ndarray:  # agrees with identity for |x| <= 8 only
        return np.clip(x, -8, 8)

    spec = _spec()
    for stats, diverges in ((None, False), ({"x": from_user(None, None, (0.0, 255.0))}, True)):
        samples = verification_samples([spec], 3, 0, stats)
        reference = [{"y": s["x"]} for s in samples]
        (error,) = compare("tflite_float32", reference, [{"y": saturating(s["x"])} for s in samples])
        assert (error.max_rel_error > 1e-4) == diverges


def test_convert_verifies_on_the_stated_input_range_too(run_cli, tmp_path) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert",
        "tests/fixtures/tiny_models.py:SequenceHead",
        "-o",
        out,
        "--input-shape",
        "1,5,16",
        "--quantize",
        "float16",
        "--input-range",
        "0,255",
    )
    assert code == 0, err
    verification = json.loads((out / "edgeport.json").read_text())["verification"]
    assert verification["num_samples"] == 9 and verification["passed"]
    assert verification["inputs"] == [
        "3 standard-normal",
        "3 normal with the inputs' statistics (x: user)",
        "3 uniform over the inputs' ranges (x: [0, 255])",
    ]


def test_a_converted_model_giving_nan_fails_through_the_cli(run_cli, tmp_path, monkeypatch) -> None:
    """onnx2tf with a fault injected (Tanh converted as Sqrt): NaN where the reference is finite."""
    import onnx

    from edgeport.converters.onnx_to_tflite import onnx_to_keras
    from edgeport.pipeline import stages

    def sqrt_for_tanh(path, workdir, *args, **kwargs):
        model = onnx.load(str(path))
        for node in model.graph.node:
            node.op_type = "Sqrt" if node.op_type == "Tanh" else node.op_type
        onnx.save(model, str(workdir / "faulty.onnx"))
        return onnx_to_keras(workdir / "faulty.onnx", workdir, *args, **kwargs)

    monkeypatch.setattr(stages, "onnx_to_keras", sqrt_for_tanh)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", "tests/fixtures/tiny_models.py:SequenceHead", "-o", out, "--input-shape", "1,5,16"
    )
    assert code == 1, err
    assert "the tflite_float32 output 'output' has" in err and "where the reference is finite" in err
    assert "max rel. error" not in err and not out.exists()


def test_onnx_passes_of_an_onnx_source_are_verified_against_the_source(
    run_cli, tmp_path, monkeypatch
) -> None:
    """A wrong ONNX pass (injected: it doubles a weight) fails verification for an ONNX source too:
    the reference is the source as loaded, not the passes' output."""
    import onnx
    from onnx import numpy_helper

    from edgeport.pipeline import stages
    from edgeport.pipeline.passes import ChangedReport, Pass

    def doubling(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ChangedReport]:
        weight = model.graph.initializer[0]
        weight.CopyFrom(numpy_helper.from_array(2 * numpy_helper.to_array(weight), weight.name))
        return model, ChangedReport(name="doubling", applied=True)

    monkeypatch.setattr(stages, "ONNX_PASSES", [*stages.ONNX_PASSES, Pass("doubling", "test", doubling)])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])]
    w = np.random.default_rng(0).standard_normal((4, 3))
    onnx.save(make_model(nodes, {"x": [1, 4]}, ["y"], {"w": w}), str(tmp_path / "m.onnx"))
    out = tmp_path / "out"
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "-o", out)
    assert code == 1, err
    assert "the onnx model diverges from onnx (source) at output 'y'" in err and not out.exists()
