"""What TFLite Micro cannot run in int8 is found before calibration; LiteRT's optimized kernels are a note.

The probe (quant/tflm_ops.py) runs a quickly quantized model in the TFLite Micro runtime itself:
an op without any TFLM kernel refuses the model before calibration starts (calibration is patched
to fail if reached), an op whose TFLM kernel is float-only (LOG) is kept float32 and the model
still runs bit-exactly against TFLite's reference kernels.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import modes, tflm_ops
from edgeport.quant.modes import QuantOptions
from edgeport.quant.tflm_check import TflmComparison
from tests.quant import no_kernel_models, tflm_op_models

MIN_SQNR_DB = 20.0  # int8 with one float LOG inside: each int8 rounding is ~48 dB, a few in series


def test_op_without_tflm_kernel_is_refused_before_calibration(
    tmp_path: Path, run_cli, no_calibration
) -> None:
    out = tmp_path / "out"
    source = f"{Path(no_kernel_models.__file__)}:SignCnn"  # GELU is written out (quant/tflm_gelu.py)
    code, _, stderr = run_cli(
        "convert", source, "--input-shape", "1,3,12,12", "-o", out, "--quantize", "int8"
    )
    assert code == 1, stderr
    assert "TFLite Micro has no kernel for op SIGN" in stderr and "before calibration" in stderr
    assert "dynamic" in stderr and "Replace that op" in stderr
    assert not out.exists()


def test_float_only_tflm_op_is_kept_float_and_runs_bit_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    order: list[str] = []
    plan, calibrate = modes.plan_int8_for_tflm, modes.make_calibration
    monkeypatch.setattr(modes, "plan_int8_for_tflm", lambda *a, **k: order.append("probe") or plan(*a, **k))
    monkeypatch.setattr(
        modes, "make_calibration", lambda *a, **k: order.append("calibrate") or calibrate(*a, **k)
    )
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=f"{Path(tflm_op_models.__file__)}:LogMel",
            outdir=out,
            input_shapes=[[1, *tflm_op_models.SPECTRUM]],
            quantize=QuantOptions(),
        )
    )
    assert order == ["probe", "calibrate"]
    section = json.loads((out / MANIFEST_NAME).read_text())["sections"]["quantization"]
    assert [k["op"] for k in section["kept_float"]] == ["LOG"]
    assert section["tensor_types"]["float32"] == 2  # LOG's input and output only
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0
    assert min(o["sqnr_db"] for o in section["fidelity"]["outputs"]) > MIN_SQNR_DB
    assert any("LOG" in note and "kept float32" in note for note in section["calibration"]["notes"])


def test_failing_op_reads_both_tflm_error_forms() -> None:
    assert tflm_ops.failing_op("m: TFLite Micro cannot invoke op LOG at node 4 (elementwise.cc:202 x)") == (
        "LOG",
        4,
        "elementwise.cc:202 x",
    )
    assert tflm_ops.failing_op("m: TFLite Micro has no kernel for op RELU_0_TO_1") == (
        "RELU_0_TO_1",
        None,
        "",
    )
    assert tflm_ops.failing_op("m: TFLite Micro did not finish") == ("", None, "")


def test_a_probe_failing_twice_on_the_same_op_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept-float op that TFLM still cannot run: refused, naming the op, not retried forever."""
    calls: list[list[str]] = []

    def quantize(denylist: list[str]) -> bytes:
        calls.append(list(denylist))
        return b"model"

    def failing_run(*args: object, **kwargs: object) -> None:
        raise EdgeportError("m: TFLite Micro cannot prepare op FOO at node 2 (type)", "fix")

    monkeypatch.setattr(tflm_ops, "run_tflm", failing_run)
    monkeypatch.setattr(tflm_ops, "node_output", lambda model, index: "foo_out")
    monkeypatch.setattr(tflm_ops, "arena_for", lambda model: 1 << 20)
    with pytest.raises(EdgeportError, match="op FOO .*nor in float32") as err:
        tflm_ops.plan_int8_for_tflm(quantize, lambda model: [[np.zeros(1)]], "m")
    assert calls == [[], ["foo_out"]]
    # The kernel exists (it failed, it was not missing): the fix is not "TFLite Micro has no kernel".
    assert err.value.fix == tflm_ops.KERNEL_LIMIT_FIX


def test_optimized_kernel_difference_is_a_note_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """32 steps between LiteRT's optimized kernels and TFLM (issue 10's detector) is recorded, not refused."""

    class Runner:
        def __init__(self, model: bytes, ins: object, outs: object, kernels: str = "optimized") -> None:
            self.shift = 32 if kernels == "optimized" else 0

        def quantize_inputs(self, sample: object) -> list[np.ndarray]:
            return [np.zeros(4, np.int8)]

        def run_raw(self, raw: list[np.ndarray]) -> list[np.ndarray]:
            return [np.full(4, self.shift, np.int8)]

    class Result:
        raw_outputs = [[np.zeros(4, np.int8)]]

    monkeypatch.setattr(modes, "LiteRTRunner", Runner)
    monkeypatch.setattr(modes, "run_tflm", lambda *a, **k: Result())
    monkeypatch.setattr(modes, "arena_for", lambda model: 1 << 20)
    # No op whose reference kernel is unreliable (UNRELIABLE_REFERENCE_OPS): the reference is held.
    monkeypatch.setattr(modes, "parse_tflite", lambda model: SimpleNamespace(ops=["CONV_2D"]))
    monkeypatch.setattr(modes, "saturation_problem", lambda model, name: None)  # no scales to read
    tflm, optimized = modes._tflm_agreement(b"", b"", [], [], [{}], "model_int8.tflite")
    assert tflm.max_diff_steps == 0 and optimized.max_diff_steps == 32
    note = modes.optimized_kernels_note(optimized)
    assert note is not None and "32 quantization steps" in note and "Android" in note
    assert modes.optimized_kernels_note(TflmComparison(4, modes.TFLM_NOTE_STEPS, 0.0, 1.0)) is None


@pytest.mark.parametrize("ranges", ["minmax", "percentile"])
def test_two_input_model_is_calibrated_with_each_input_in_its_place(tmp_path: Path, ranges: str) -> None:
    """The representative samples (and the observed activations of --activation-ranges) are fed by
    input name: fed by position, the converter's graph order gave the conv the vector."""
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=f"{Path(tflm_op_models.__file__)}:ImageAndVector",
            outdir=out,
            input_shapes=[[1, *tflm_op_models.IMAGE], [1, 6]],
            quantize=QuantOptions(ranges=ranges),
        )
    )
    section = json.loads((out / MANIFEST_NAME).read_text())["sections"]["quantization"]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0
    assert min(o["sqnr_db"] for o in section["fidelity"]["outputs"]) > MIN_SQNR_DB


def test_full_integer_check_accepts_a_comparisons_bool_and_refuses_float() -> None:
    """A GREATER_EQUAL inside an int8 model returns bool (a wake-word model's If condition was
    refused as 'not full-integer'); a float tensor inside the model still is refused."""
    import tensorflow as tf

    from edgeport.quant.modes import _check_full_integer

    @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    def gate(x: tf.Tensor) -> tf.Tensor:
        return tf.where(x >= 0.25, x, tf.zeros_like(x))

    def samples():
        rng = np.random.default_rng(0)
        for _ in range(8):
            yield [rng.uniform(-1, 1, (1, 8)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([gate.get_concrete_function()], gate)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = converter.convert()
    from edgeport.tflite_file import parse_tflite, type_name

    types = {type_name(t.type) for t in parse_tflite(model).raw.subgraphs[0].tensors}
    assert "bool" in types and "float32" not in types
    _check_full_integer(model, "int8")

    float_converter = tf.lite.TFLiteConverter.from_concrete_functions([gate.get_concrete_function()], gate)
    with pytest.raises(EdgeportError, match="not full-integer"):
        _check_full_integer(float_converter.convert(), "int8")


def test_a_probe_that_crashes_without_naming_an_op_is_inconclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe quantized from a few synthetic samples can crash TFLite Micro where the calibrated
    model runs (seen on a residual net): the plan says so and leaves the decision to the check on
    the calibrated model, instead of refusing the model."""

    def crashing_run(*args: object, **kwargs: object) -> None:
        raise EdgeportError("m: the TFLite Micro interpreter crashed (signal 6) running the model", "fix")

    monkeypatch.setattr(tflm_ops, "run_tflm", crashing_run)
    monkeypatch.setattr(tflm_ops, "arena_for", lambda model: 1 << 20)
    plan = tflm_ops.plan_int8_for_tflm(lambda denylist: b"model", lambda model: [[np.zeros(1)]], "m")
    assert "crashed (signal 6)" in plan.inconclusive and plan.kept_float == [] and plan.probes == 1


def test_probe_inputs_follow_the_files_inputs_without_a_litert_interpreter() -> None:
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4, 3], tf.float32), tf.TensorSpec([1, 5], tf.float32)])
    def two(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(a) + tf.reduce_sum(b)

    def samples():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield [
                rng.standard_normal((1, 4, 3)).astype(np.float32),
                rng.standard_normal((1, 5)).astype(np.float32),
            ]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([two.get_concrete_function()], two)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = samples
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    model = converter.convert()
    from edgeport.tflite_file import parse_tflite

    (sample,) = modes.probe_inputs(model)
    expected = [(tuple(i.shape), i.dtype) for i in parse_tflite(model).inputs]
    assert [(x.shape, str(x.dtype)) for x in sample] == expected
    assert all(str(x.dtype) == "int8" for x in sample)
    np.testing.assert_array_equal(modes.probe_inputs(model)[0][0], sample[0])  # seeded


def test_a_probe_the_quantizer_refuses_is_refused_before_calibration() -> None:
    """An int8 model no runtime can run (quant/int8.py: refuse_overflowing_steps) shows in the probe."""

    def quantize(denylist: list[str]) -> bytes:
        raise EdgeportError("int8 tensor 'mask' gets a quantization step of 1.3e+36", "keep it float")

    with pytest.raises(EdgeportError, match=r"1\.3e\+36; found before calibration") as err:
        tflm_ops.plan_int8_for_tflm(quantize, lambda model: [[np.zeros(1)]], "m")
    assert err.value.fix == "keep it float"
