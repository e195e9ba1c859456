"""Issue-3 acceptance through `convert_model`: manifest reports the fold, the .tflite has no BN remnants."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.pipeline import ConvertOptions, convert_model

MODELS = Path(__file__).resolve().parent / "models.py"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict:
    out = {}
    for fold in (True, False):
        outdir = tmp_path_factory.mktemp("bn") / ("folded" if fold else "plain")
        opts = ConvertOptions(source=f"{MODELS}:bn_everywhere", outdir=outdir, input_shapes=[[1, 3, 32, 32]])
        opts.fold_bn = fold
        out[fold] = convert_model(opts).manifest
    return out


def test_bn_everywhere_keeps_only_the_residual_add_and_the_input_bn(converted: dict) -> None:
    manifest = converted[True]
    ops = manifest.artifact("model_float32.tflite").op_counts
    assert "SUB" not in ops and "MUL" not in ops, ops
    assert ops["ADD"] == 1, ops  # the residual add
    assert ops["DEPTHWISE_CONV_2D"] == 1, ops  # the input BN, one op: its conv zero-pads
    assert manifest.verification.passed
    (report,) = [p.report() for p in manifest.passes if p.name == "fold_batch_norms"]
    assert report["found"] == report["folded"] + report["left"] and report["left"] == 1
    assert "zero-pads" in report["left_detail"][0]["reason"]


def test_no_fold_bn_leaves_the_affine_ops(converted: dict) -> None:
    plain = converted[False].artifact("model_float32.tflite").op_counts
    folded = converted[True].artifact("model_float32.tflite").op_counts
    assert plain.get("MUL", 0) >= 3 and plain.get("ADD", 0) >= 4, plain
    assert sum(folded.values()) < sum(plain.values())
