"""edgeport.runtimes: LiteRT (optimized and reference kernels, XNNPACK), onnxruntime, TFLite Micro in a child
process (outputs, arena, failures) and QEMU (exit status, printed lines, time limit)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper

from edgeport.errors import EdgeportError
from edgeport.runtimes import litert, onnxrt, qemu, tflm
from edgeport.runtimes._tflm_child import minimum_arena
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.tensors import TensorSpec, random_inputs, to_channels_last
from tests.targets import synth

IMAGE = TensorSpec("image", [1, 2, 4, 4], channels_last=True)  # source layout NCHW; the .tflite holds NHWC
LOGITS = TensorSpec("logits", [1, 5])


@pytest.fixture(scope="module")
def tiny() -> dict:
    """A conv + ReLU + dense model as float and as full-int8 (int8 I/O) .tflite, with its TF function."""
    import tensorflow as tf

    rng = np.random.default_rng(0)
    w = tf.constant(rng.standard_normal((3, 3, 2, 4)).astype(np.float32))
    d = tf.constant(rng.standard_normal((4 * 4 * 4, 5)).astype(np.float32))

    class Tiny(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 4, 4, 2], tf.float32, name="image")])
        def __call__(self, x: tf.Tensor) -> dict:
            y = tf.nn.relu(tf.nn.conv2d(x, w, 1, "SAME"))
            return {"logits": tf.matmul(tf.reshape(y, [1, -1]), d)}

    module = Tiny()

    def converter() -> tf.lite.TFLiteConverter:
        function = module.__call__.get_concrete_function()
        return tf.lite.TFLiteConverter.from_concrete_functions([function], module)

    float_model = converter().convert()
    quantizing = converter()
    quantizing.optimizations = [tf.lite.Optimize.DEFAULT]
    calibration = rng.standard_normal((16, 1, 4, 4, 2)).astype(np.float32)
    quantizing.representative_dataset = lambda: ([x] for x in calibration)
    quantizing.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    quantizing.inference_input_type = tf.int8
    quantizing.inference_output_type = tf.int8
    return {"float": float_model, "int8": quantizing.convert(), "function": module}


def test_litert_runner_reads_source_names_and_layout(tiny: dict) -> None:
    samples = random_inputs([IMAGE], 3, seed=1)
    result = LiteRTRunner(tiny["float"], [IMAGE], [LOGITS]).run_samples(samples)
    assert result.runtime == "litert" and len(result.invoke_seconds) == len(result.raw_outputs) == 3
    assert result.init_seconds is not None
    for sample, got in zip(samples, result.outputs, strict=True):
        want = tiny["function"](to_channels_last(sample["image"]))["logits"].numpy()
        assert got["logits"].shape == (1, 5)
        np.testing.assert_allclose(got["logits"], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_xnnpack_and_builtin_kernels_agree_on_a_float_model(tiny: dict) -> None:
    samples = random_inputs([IMAGE], 3, seed=2)
    plain = LiteRTRunner(tiny["float"], [IMAGE], [LOGITS]).run_samples(samples)
    delegated = LiteRTRunner(tiny["float"], [IMAGE], [LOGITS], delegates=True, threads=2).run_samples(samples)
    for a, b in zip(plain.outputs, delegated.outputs, strict=True):
        np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-4, atol=1e-4 * np.abs(a["logits"]).max())


def test_reference_kernels_and_tflm_are_bit_identical_on_int8(tiny: dict) -> None:
    optimized = LiteRTRunner(tiny["int8"], [IMAGE], [LOGITS])
    reference = LiteRTRunner(tiny["int8"], [IMAGE], [LOGITS], kernels="reference")
    assert reference.runtime == "litert-reference"
    raw = [optimized.quantize_inputs(s) for s in random_inputs([IMAGE], 8, seed=3)]
    assert raw[0][0].dtype == np.int8 and raw[0][0].shape == (1, 4, 4, 2)
    micro = tflm.run_tflm(tiny["int8"], raw, "tiny")
    assert micro.runtime == "tflite-micro" and len(micro.invoke_seconds) == 8 and micro.arena is None
    assert micro.init_seconds is not None
    for r, t in zip(raw, micro.raw_outputs, strict=True):
        np.testing.assert_array_equal(reference.run_raw(r)[0], t[0])
        # The optimized kernels round ties differently (quant/tflm_check.py): same int8 range, not bits.
        assert optimized.run_raw(r)[0].dtype == np.int8


def test_interpreter_refuses_unknown_kernels_and_delegated_reference_kernels(tiny: dict) -> None:
    with pytest.raises(ValueError, match="unknown LiteRT kernels"):
        litert.interpreter(tiny["float"], kernels="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="without delegates"):
        litert.interpreter(tiny["float"], kernels="reference", delegates=True)


def test_onnxruntime_runs_by_output_name() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3]) for n in ("a", "b")],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    samples = random_inputs([TensorSpec("a", [2, 3]), TensorSpec("b", [2, 3])], 2, seed=4)
    result = onnxrt.run_samples(model.SerializeToString(), samples)
    assert result.runtime == "onnxruntime" and len(result.invoke_seconds) == 2
    for sample, out in zip(samples, onnxrt.run_onnx(model.SerializeToString(), samples), strict=True):
        np.testing.assert_array_equal(out["sum"], sample["a"] + sample["b"])


def _fc_inputs(n: int) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(5)
    return [[rng.integers(-128, 128, size=(1, 16), dtype=np.int8)] for _ in range(n)]


def test_tflm_measures_the_smallest_arena_that_works() -> None:
    model = synth.big_fc_model(16, 8)
    measured = tflm.run_tflm(model, _fc_inputs(1), "fc", arena_size=1 << 20, measure_arena=True)
    arena = measured.arena
    assert arena is not None and arena.measured_bytes % 16 == 0 and arena.recorded_bytes > 0
    assert "Arena allocation total" in measured.log
    again = tflm.run_tflm(model, _fc_inputs(1), "fc", arena_size=arena.measured_bytes)
    np.testing.assert_array_equal(again.raw_outputs[0][0], measured.raw_outputs[0][0])
    with pytest.raises(EdgeportError, match="fc: TFLite Micro"):
        tflm.run_tflm(model, _fc_inputs(1), "fc", arena_size=arena.measured_bytes - 16)


def test_minimum_arena_is_the_least_16_byte_multiple_that_fits() -> None:
    assert minimum_arena(lambda size: size >= 1000, recorded=800) == 1008
    assert minimum_arena(lambda size: size >= 1000, recorded=1200) == 1200
    assert minimum_arena(lambda size: size >= 816, recorded=800) == 816


def test_tflm_names_the_op_it_has_no_kernel_for() -> None:
    with pytest.raises(EdgeportError) as caught:
        tflm.run_tflm(synth.unsupported_op_model(), _fc_inputs(1), "topk.tflite")
    assert "topk.tflite: TFLite Micro" in caught.value.problem and "TOPK_V2" in caught.value.problem
    assert caught.value.fix == tflm.KERNEL_FIX


def test_tflm_time_limit_is_a_user_error() -> None:
    # A microsecond: the child cannot even start Python in that time.
    with pytest.raises(EdgeportError, match="fc: TFLite Micro did not finish"):
        tflm.run_tflm(synth.big_fc_model(16, 8), _fc_inputs(1), "fc", timeout=1e-6)


@pytest.mark.parametrize(
    ("log", "returncode", "problem"),
    [
        (
            "Didn't find op for builtin opcode 'GELU' version '1'\n",
            1,
            "m: TFLite Micro has no kernel for op GELU",
        ),
        (
            'Traceback (most recent call last):\n  File "x.py"\nType INT16 not supported.\n'
            "Node SOFTMAX (number 3f) failed to prepare with status 1\n",
            1,
            "m: TFLite Micro cannot prepare op SOFTMAX at node 3 (Type INT16 not supported.)",
        ),
        ("", -11, "m: the TFLite Micro interpreter crashed (signal 11) running the model"),
        ("noise\nRuntimeError: boom\n", 1, "m: TFLite Micro failed to run the model (RuntimeError: boom)"),
    ],
)
def test_tflm_failure_wording(log: str, returncode: int, problem: str) -> None:
    assert tflm.tflm_failure("m", log, returncode).problem == problem


def test_qemu_command_line() -> None:
    argv = qemu.command("mps2-an386", 5)
    assert argv[:3] == ("qemu-system-arm", "-M", "mps2-an386") and argv[-1] == "-kernel"
    assert "shift=5" in argv and "enable=on,target=native" in argv


def test_qemu_not_installed_is_a_user_error() -> None:
    with pytest.raises(EdgeportError, match="no-such-qemu is not installed"):
        qemu.run_argv(("no-such-qemu", "-M", "mps2-an386"), timeout=10)


def test_qemu_missing_firmware_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeportError, match="does not exist"):
        qemu.run_firmware(tmp_path / "none.elf", "mps2-an386", 5)


# Two bare-metal Cortex-M4 programs: one prints two lines on the CMSDK UART (QEMU's stdio, as the
# packaged firmware does) and exits with status 3 through semihosting (SYS_EXIT_EXTENDED,
# ADP_Stopped_ApplicationExit); the other spins forever.
_HEADER = """
    .syntax unified
    .cpu cortex-m4
    .thumb
    .section .vectors, "a"
    .word 0x20010000
    .word reset
    .text
    .global reset
    .thumb_func
reset:
"""
_EXITS = """
    ldr r2, =0x40004000
    movs r3, #1
    str r3, [r2, #8]
    ldr r1, =message
next:
    ldrb r3, [r1], #1
    cbz r3, done
    str r3, [r2]
    b next
done:
    movs r0, #0x20
    ldr r1, =block
    bkpt 0xab
    .data
    .align 2
block:
    .word 0x20026
    .word 3
message:
    .asciz "hello\\r\\nsecond line\\r\\n"
"""
_SPINS = """
    b reset
"""


def _firmware(tmp_path: Path, name: str, body: str) -> Path:
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("needs arm-none-eabi-gcc and qemu-system-arm")
    source, elf = tmp_path / f"{name}.S", tmp_path / f"{name}.elf"
    source.write_text(_HEADER + body)
    subprocess.run(
        ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib", "-nostartfiles", "-e", "reset"]
        + ["-Wl,--section-start=.vectors=0x0", "-Wl,-Ttext=0x100", "-Wl,-Tdata=0x20000000"]
        + ["-o", str(elf), str(source)],
        check=True,
        capture_output=True,
    )
    return elf


def test_qemu_reports_exit_status_and_printed_lines(tmp_path: Path) -> None:
    run = qemu.run_firmware(_firmware(tmp_path, "exits", _EXITS), "mps2-an386", 5, timeout=120)
    assert not run.timed_out and run.exit_status == 3
    assert run.lines == ["hello", "second line"] and run.stdout == "hello\nsecond line"


def test_qemu_stops_a_firmware_that_hangs(tmp_path: Path) -> None:
    run = qemu.run_firmware(_firmware(tmp_path, "spins", _SPINS), "mps2-an386", 5, timeout=2)
    assert run.timed_out and run.exit_status is None and run.lines == []


def test_check_allocates_passes_a_good_model_and_names_a_native_crash(
    tiny: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model that makes LiteRT abort inside allocate_tensors must not take the caller's process
    down with it: the child's signal becomes one line."""
    litert.check_allocates(tiny["int8"], "model_int8.tflite")
    monkeypatch.setattr(litert, "_ALLOCATE", "import os\nos.abort()\n")
    with pytest.raises(EdgeportError, match=r"LiteRT crashes \(signal 6\) preparing model_int8.tflite"):
        litert.check_allocates(tiny["int8"], "model_int8.tflite")


def test_run_failure_reads_only_onnxruntime_errors() -> None:
    assert onnxrt.run_failure(ValueError("Non-zero status code returned while running Reshape node.")) is None
