"""dilated_sibling_convs_merged: dilated Convs of one input become one Conv and a Split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper

from edgeport.converters.rewrites import dilated_siblings
from edgeport.errors import EdgeportError
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, random_feeds, run

C, T = 8, 40


def gated_model(seed: int, dilation: int = 2, second_dilation: int | None = None) -> onnx.ModelProto:
    """h = Relu(1x1 conv(x)); h + tanh(f(h)) * sigmoid(g(h)), f and g dilated 'same' convs of h.

    The Relu gives h a zero point of -128, far from 0, as a padded int8 tensor needs to show a wrong
    pad value."""
    rng = np.random.default_rng(seed)
    d2 = dilation if second_dilation is None else second_dilation

    def weight(k: int) -> np.ndarray:
        return (rng.standard_normal((C, C, k)) / np.sqrt(C * k)).astype(np.float32)

    nodes = [
        helper.make_node("Conv", ["x", "w_in", "b_in"], ["pre"]),
        helper.make_node("Relu", ["pre"], ["h"]),
        helper.make_node("Conv", ["h", "w_f", "b_f"], ["f"], dilations=[dilation], pads=[dilation] * 2),
        helper.make_node("Conv", ["h", "w_g"], ["g"], dilations=[d2], pads=[d2] * 2),
        helper.make_node("Tanh", ["f"], ["tf"]),
        helper.make_node("Sigmoid", ["g"], ["sg"]),
        helper.make_node("Mul", ["tf", "sg"], ["gated"]),
        helper.make_node("Add", ["h", "gated"], ["y"]),
    ]
    consts = {
        "w_in": weight(1),
        "b_in": rng.standard_normal(C).astype(np.float32) * 0.1,
        "w_f": weight(3),
        "b_f": rng.standard_normal(C).astype(np.float32) * 0.1,
        "w_g": weight(3),
    }
    return make_model(nodes, {"x": [1, C, T]}, ["y"], consts)


def test_siblings_become_one_conv_with_the_same_values():
    before = gated_model(0)
    after = dilated_siblings.rewrite(before)
    assert ops(after)["Conv"] == 2 and ops(after)["Split"] == 1
    feeds = random_feeds(before)
    np.testing.assert_allclose(run(after, feeds)[0], run(before, feeds)[0], rtol=0, atol=1e-6)


def test_different_dilations_and_undilated_convs_are_left_alone():
    different = gated_model(0, dilation=2, second_dilation=4)
    assert dilated_siblings.rewrite(different) == different
    undilated = gated_model(0, dilation=1)
    assert dilated_siblings.rewrite(undilated) == undilated


def _convert(tmp_path: Path, seed: int, skip: tuple[str, ...] = ()) -> Path:
    source = tmp_path / f"gated_{seed}.onnx"
    onnx.save(gated_model(seed), source)
    out = tmp_path / f"out_{seed}_{len(skip)}"
    options = ConvertOptions(
        source=str(source), outdir=out, quantize=QuantOptions(mode="int8"), skip_passes=list(skip)
    )
    convert_model(options)
    return out


# int8 SQNR against the float model of gated_model(seed), seeds 0-4: 34.4 to 36.5 dB.
MIN_INT8_SQNR_DB = 25.0


def test_gated_block_runs_bit_exactly_in_tflite_micro(tmp_path: Path):
    out = _convert(tmp_path, 0)
    section = json.loads((out / "edgeport.json").read_text())["sections"]["quantization"]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0  # against TFLite's reference kernels
    assert section["fidelity"]["outputs"][0]["sqnr_db"] > MIN_INT8_SQNR_DB
    assert "SPACE_TO_BATCH_ND" not in read_tflite(out / "model_int8.tflite").ops


def test_without_the_rewrite_tflite_micro_pads_with_the_wrong_value(tmp_path: Path):
    """The reason for the rewrite: the shared SPACE_TO_BATCH_ND stays, TFLite Micro disagrees, and the
    refusal names that op and its zero point instead of asking for a report."""
    with pytest.raises(EdgeportError) as refused:
        _convert(tmp_path, 0, skip=(dilated_siblings.NAME,))
    assert (
        "SPACE_TO_BATCH_ND" in refused.value.problem
        and "instead of its zero point -128" in refused.value.problem
    )
    assert "report" not in refused.value.fix
