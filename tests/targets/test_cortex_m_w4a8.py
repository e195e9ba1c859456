"""A w4a8 model (packed INT4 filters) packaged for Cortex-M: the arena includes the kernels' int4
unpack buffers, and CMSIS-NN's int4 kernels on the target reproduce the host's TFLite Micro
outputs (the firmware self-test's PASS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.targets.cortex_m.flash import build_and_run_qemu
from edgeport.tflite_file import read_tflite
from tests.quant import int8_models as M


@pytest.fixture(scope="module")
def w4a8_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("w4a8") / "out"
    convert_model(
        ConvertOptions(
            source=f"{M.__file__}:DepthwiseCnn",
            outdir=out,
            input_shapes=[[1, *M.SHAPE]],
            quantize=QuantOptions(mode="w4a8"),
        )
    )
    return out / "model_w4a8.tflite"


def test_w4a8_package_measures_the_int4_unpack_buffers(w4a8_model: Path, tmp_path: Path) -> None:
    from edgeport.targets.cortex_m import package

    int4 = read_tflite(w4a8_model)
    assert any(t.type == 17 for t in int4.raw.subgraphs[0].tensors)  # TensorType.INT4
    result = package(w4a8_model, tmp_path / "pkg", board="mps2-an386")
    # TFLite Micro unpacks each int4 filter into an arena scratch buffer of one byte per weight; the
    # largest filter here is the 1x1 conv's 32 x 16.
    assert result.arena.arena_size >= 32 * 16
    assert "AddConv2D" in (result.outdir / "model_ops.h").read_text()
    # Given the convert output directory, the packager takes its w4a8 model over the float32 one.
    from_dir = package(w4a8_model.parent, tmp_path / "from_dir", board="mps2-an386")
    assert from_dir.model_path.name == "model_w4a8.tflite"


@pytest.mark.parametrize("board", ["mps2-an386", "corstone-300"])
def test_w4a8_firmware_passes_in_qemu(w4a8_model: Path, tmp_path: Path, board: str, tflm_root: str) -> None:
    """Against the tflm_root tree (conftest.py): CMSIS-NN's int4 conv and dense kernels on Cortex-M4
    (DSP) and Cortex-M55 (Helium)."""
    from edgeport.targets.cortex_m import package

    result = package(w4a8_model, tmp_path / "pkg", board=board)
    run = build_and_run_qemu(result.outdir / "firmware", result.board, tflm_root)
    assert "PASS" in run.stdout and run.exit_status == 0, run.stdout + run.stderr
