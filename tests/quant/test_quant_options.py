"""`edgeport convert --quantize int8` with --weight-clusters and --activation-ranges, end to end,
and the option combinations that are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.quant.lut_compression import DECODE_OP
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.quant import int8_models as M

MODELS = Path(M.__file__)
ARGS = (f"{MODELS}:SmallCnn", "--input-shape", "1,3,12,12")


def test_weight_clusters_write_a_lut_compressed_int8_model_tflm_checked(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "convert", *ARGS, "-o", out, "--quantize", "int8", "--weight-clusters", "4"
    )
    assert code == 0, stderr
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    section = manifest["sections"]["quantization"]
    clustering = section["clustering"]
    assert clustering["n_clusters"] == 4 and clustering["index_bits"] == 2
    assert all(t["clusters"] <= 4 for t in clustering["tensors"])
    model = read_tflite(out / "model_int8.tflite")
    assert any(DECODE_OP in op for op in model.ops)  # the file TFLite Micro runs decodes its weights
    assert clustering["compressed_size_bytes"] == (out / "model_int8.tflite").stat().st_size
    # 2-bit indices for the conv weights: the file shrinks (the dense layer's 128 weights may stay).
    assert clustering["compressed_size_bytes"] < clustering["int8_size_bytes"]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0  # TFLM (compressed) == clustered model
    assert np.isfinite(section["fidelity"]["outputs"][0]["sqnr_db"])


@pytest.mark.parametrize("ranges", ["percentile", "mse"])
def test_activation_range_methods_are_selectable_and_recorded(tmp_path: Path, run_cli, ranges: str) -> None:
    out = tmp_path / ranges
    code, _, stderr = run_cli(
        "convert", *ARGS, "-o", out, "--quantize", "int8", "--activation-ranges", ranges
    )
    assert code == 0, stderr
    section = json.loads((out / MANIFEST_NAME).read_text())["sections"]["quantization"]
    assert section["activation_ranges"]["method"] == ranges
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0


def test_option_combinations_that_make_no_sense_are_refused(tmp_path: Path, run_cli) -> None:
    with pytest.raises(EdgeportError, match="--weight-clusters applies to int8"):
        QuantOptions(mode="w4a8", weight_clusters=16)
    with pytest.raises(EdgeportError, match="out of range"):
        QuantOptions(weight_clusters=1)
    with pytest.raises(EdgeportError, match="--weight-rounding nearest applies to 4-bit weights"):
        QuantOptions(mode="int8", rounding="nearest")
    with pytest.raises(EdgeportError, match="needs calibrated activations"):
        QuantOptions(mode="dynamic", ranges="mse")
    out = tmp_path / "out"
    for flag, value, mode in (
        ("--weight-clusters", "16", "int8"),
        ("--activation-ranges", "mse", "int8"),
        ("--weight-rounding", "nearest", "w4a8"),
    ):
        code, _, stderr = run_cli("convert", *ARGS, "-o", out, flag, value)
        assert (
            code == 1 and f"{flag} was given without --quantize" in stderr and f"--quantize {mode}" in stderr
        )
        assert "Traceback" not in stderr and not out.exists()
    # A model whose weight tensors are all too small for tables to pay off (a 16 -> 4 dense layer).
    tiny = (f"{MODELS}:NoBatchNorm", "--input-shape", "1,16", "-o", out)
    code, _, stderr = run_cli("convert", *tiny, "--quantize", "int8", "--weight-clusters", "16")
    assert code == 1 and "would not make model_int8.tflite smaller" in stderr and "w4a8" in stderr
    assert "Traceback" not in stderr and not out.exists()
