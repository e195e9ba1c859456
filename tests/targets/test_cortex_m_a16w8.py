"""An a16w8 model (int16 activations, int8 weights) packaged for Cortex-M: the convert output's a16w8
model is the one packaged, its arena is measured in TFLite Micro as for int8, the int16 layers get
TFLite Micro's generic kernels (the int8-only registrations would reject them), and the firmware's
self-test reproduces the host's TFLite Micro outputs in QEMU."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.targets.cortex_m.flash import build_and_run_qemu
from edgeport.tflite_file import read_tflite
from tests.quant import a16w8_models as M


@pytest.fixture(scope="module")
def a16w8_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("a16w8") / "out"
    convert_model(
        ConvertOptions(
            source=f"{M.__file__}:Detector",
            outdir=out,
            input_shapes=[[1, *M.SHAPE]],
            quantize=QuantOptions(mode="a16w8"),
        )
    )
    return out


def test_a16w8_package_from_the_convert_output(a16w8_dir: Path, tmp_path: Path) -> None:
    from edgeport.targets.cortex_m import package

    result = package(a16w8_dir, tmp_path / "pkg", board="mps2-an386")
    assert result.model_path.name == "model_a16w8.tflite"
    model = read_tflite(result.model_path)
    assert {t.dtype for t in [*model.inputs, *model.outputs]} == {"int16"}
    # Measured in TFLite Micro: at least the int16 input and output (2 bytes an element) fit in it.
    assert result.arena.measured_bytes > 0 and result.arena.arena_size >= result.arena.measured_bytes
    assert result.arena.arena_size >= 2 * (3 * 16 * 16 + 4 * 32 * 32)
    # CMSIS-NN's int16 convolution asks for an int16 im2col of two kernel windows (arm_convolve_wrapper_s16,
    # DSP cores): the 3x3 conv over 3 channels, 2 * 27 * 2 bytes, rounded up to 16.
    assert result.arena.cmsis_nn_scratch == 112
    ops_h = (result.outdir / "model_ops.h").read_text()
    assert "AddConv2D()" in ops_h and "AddMul()" in ops_h and "AddTransposeConv()" in ops_h
    assert "_INT8" not in ops_h
    assert "int16[1, 16, 16, 3]" in (result.outdir / "model_settings.h").read_text()
    assert "const int16_t g_test_input_0[768]" in (result.outdir / "test_data.h").read_text()


def test_a16w8_firmware_passes_in_qemu(a16w8_dir: Path, tmp_path: Path, tflm_root: str) -> None:
    """Against the tflm_root tree (conftest.py): TFLite Micro's int16 kernels (CMSIS-NN's s16 ones where
    it has them) on Cortex-M4."""
    from edgeport.targets.cortex_m import package

    result = package(a16w8_dir, tmp_path / "pkg", board="mps2-an386")
    run = build_and_run_qemu(result.outdir / "firmware", result.board, tflm_root)
    assert "PASS" in run.stdout and run.exit_status == 0, run.stdout + run.stderr
