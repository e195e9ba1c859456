"""Each workaround the int8 refusal suggests for an op TFLite Micro lacks gives a model it runs."""

from pathlib import Path

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import tflm_ops
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.quant import workaround_models
from tests.quant.int8_models import SHAPE


def test_the_suggested_gelu_converts_to_int8_that_tflite_micro_runs(tmp_path: Path) -> None:
    assert "approximate='tanh'" in tflm_ops.no_kernel_fix("GELU")
    assert tflm_ops.no_kernel_fix("FOO") == tflm_ops.NO_KERNEL_FIX
    out = tmp_path / "out"
    # The int8 stage runs the model in TFLite Micro before writing it: converting is the check.
    convert_model(
        ConvertOptions(
            source=f"{Path(workaround_models.__file__)}:TanhGeluCnn",
            outdir=out,
            input_shapes=[[1, *SHAPE]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    ops = read_tflite(out / "model_int8.tflite").ops
    assert "GELU" not in ops and "TANH" in ops
