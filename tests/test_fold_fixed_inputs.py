"""fold_fixed_inputs: an input fixed with --input-value becomes a constant, If nodes on it are inlined.

The models are made here: an audio-like input `x` and a sample rate `sr` (int64 scalar) that If nodes
branch on, as silero-vad does (checked by hand on silero-vad; the test suite never reads bench/.cache).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeport.pipeline.fold_fixed_inputs import (
    FIXED_KEY,
    NAME,
    FoldFixedReport,
    count_ifs,
    fold_fixed_inputs,
    value_text,
    with_defaults,
)
from edgeport.pipeline.onnx_passes import ONNX_PASSES
from tests.onnx_graphs import ops, run

X = np.random.default_rng(0).standard_normal((1, 8)).astype(np.float32)
W = np.random.default_rng(1).standard_normal((8, 8)).astype(np.float32)


def _branch(name: str, nodes: list[onnx.NodeProto], out: str) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 8])])


def _if_on_rate(cond: str, out: str, tag: str, nested: bool = False) -> onnx.NodeProto:
    """then: (x @ w) * 2 (with, if `nested`, an inner If on the same condition); else: x + 1. Every If
    defines the same local names ("h", "t"): inlining two of them must keep the names apart."""
    then_nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Mul", ["h", "two"], ["t"])]
    if nested:
        inner = helper.make_node(
            "If",
            [cond],
            ["t_inner"],
            then_branch=_branch(f"{tag}_in_then", [helper.make_node("Sub", ["t", "one"], ["u"])], "u"),
            else_branch=_branch(f"{tag}_in_else", [helper.make_node("Identity", ["t"], ["v"])], "v"),
        )
        then_nodes.append(inner)
    then_out = "t_inner" if nested else "t"
    return helper.make_node(
        "If",
        [cond],
        [out],
        name=f"if_{tag}",
        then_branch=_branch(f"{tag}_then", then_nodes, then_out),
        else_branch=_branch(f"{tag}_else", [helper.make_node("Add", ["x", "one"], ["e"])], "e"),
    )


def rate_model(data_if: bool = False) -> onnx.ModelProto:
    """y = f(x, sr): two Ifs on `sr == 16000` (one nested), and with `data_if` one on `sum(x) > 0`."""
    nodes = [
        helper.make_node("Equal", ["sr", "rate16k"], ["is16k"]),
        _if_on_rate("is16k", "a", "first", nested=True),
        _if_on_rate("is16k", "b", "second"),
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    outputs = ["y"]
    if data_if:
        nodes += [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
            helper.make_node("Greater", ["s", "zero"], ["positive"]),
            _if_on_rate("positive", "z", "data"),
        ]
        outputs.append("z")
    consts = {
        "w": W,
        "two": np.float32(2),
        "one": np.float32(1),
        "zero": np.float32(0),
        "rate16k": np.int64(16000),
    }
    graph = helper.make_graph(
        nodes,
        "rate",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8]),
            helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        ],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 8]) for o in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _fold(model: onnx.ModelProto, sr: int) -> tuple[onnx.ModelProto, FoldFixedReport]:
    return fold_fixed_inputs(with_defaults(model, {"sr": np.array(sr, np.int64)}))


@pytest.mark.parametrize("sr", [16000, 8000])
def test_the_fixed_input_is_folded_and_the_ifs_inlined_with_the_same_outputs(sr: int) -> None:
    model = rate_model()
    folded, report = _fold(model, sr)
    onnx.checker.check_model(folded, full_check=True)
    assert [i.name for i in folded.graph.input] == ["x"]
    assert "If" not in ops(folded) and report.ifs_removed == count_ifs(model.graph) == 3
    assert report.fixed == {"sr": str(sr)} and report.ifs_left == []
    assert FIXED_KEY not in {p.key for p in folded.metadata_props}
    assert report.headline() == f"input sr fixed to {sr} and folded, 3 constant If folded"
    # The branches differ (a MatMul on one side only), so equal outputs mean the right one was taken.
    expected = run(model, {"x": X, "sr": np.array(sr, np.int64)})
    np.testing.assert_array_equal(run(folded, {"x": X})[0], expected[0])
    assert ("MatMul" in ops(folded)) == (sr == 16000)


def test_an_if_on_the_data_is_left_alone_and_the_report_says_why() -> None:
    model = rate_model(data_if=True)
    folded, report = _fold(model, 16000)
    assert ops(folded)["If"] == 1 and report.ifs_removed == 3
    assert report.ifs_left == [{"node": "if_data", "why": "its condition depends on the values of input 'x'"}]
    for x in (X, -np.abs(X), np.abs(X)):  # both sides of the data If
        expected = run(model, {"x": x, "sr": np.array(16000, np.int64)})
        for got, want in zip(run(folded, {"x": x}), expected, strict=True):
            np.testing.assert_array_equal(got, want)


def test_an_if_whose_condition_cannot_be_evaluated_is_left_alone() -> None:
    """A condition computed by an op onnx's evaluator lacks (a custom domain) is not a constant."""
    model = rate_model()
    equal = model.graph.node[0]
    equal.op_type, equal.domain = "RateEqual", "com.example"
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    folded, report = _fold(model, 16000)
    assert ops(folded)["If"] == 2 and report.fixed == {"sr": "16000"}
    assert all(e["why"].startswith("its condition could not be evaluated") for e in report.ifs_left)


def test_without_a_fixed_value_the_input_stays_and_only_constant_ifs_go() -> None:
    model = rate_model()
    folded, report = fold_fixed_inputs(model)
    assert [i.name for i in folded.graph.input] == ["x", "sr"] and report.fixed == {}
    assert report.ifs_removed == 0 and report.headline() == "" and folded == model
    assert {e["why"] for e in report.ifs_left} == {"its condition depends on the values of input 'sr'"}


def test_weights_listed_as_inputs_are_not_fixed_inputs() -> None:
    """An old export lists its weights as inputs with initializers: only the marked input is folded."""
    model = rate_model()
    model.graph.input.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, [8, 8]))
    folded, report = _fold(model, 16000)
    assert [i.name for i in folded.graph.input] == ["x", "w"] and report.fixed == {"sr": "16000"}


def test_the_pass_is_registered_first_and_values_read_as_the_user_wrote_them() -> None:
    assert ONNX_PASSES[0].name == NAME
    assert value_text(np.array(16000, np.int64)) == "16000"
    assert value_text(np.full((1, 3), 0.5, np.float32)) == "0.5"
    assert value_text(np.array([1.0, 2.0, 3.0], np.float32)) == "[1.0, 2.0, 3.0]"


# ---- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rate_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rate") / "rate.onnx"
    onnx.save(rate_model(), str(path))
    return path


def _tflite_inputs(outdir: Path) -> list[str]:
    manifest = json.loads((outdir / "edgeport.json").read_text())
    art = next(a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite")
    return sorted(i.get("source_name") or i["name"] for i in art["inputs"])


def test_cli_folds_the_sample_rate_and_verifies(run_cli, rate_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "convert", rate_onnx, "-o", out, "--input-shape", "1,8", "--input-shape", "scalar",
        "--input-value", "sr=16000",
    )  # fmt: skip
    assert code == 0, err
    assert "input sr fixed to 16000 and folded" in stdout + err
    manifest = json.loads((out / "edgeport.json").read_text())
    entry = next(p for p in manifest["passes"] if p["name"] == NAME)
    assert entry["fixed"] == {"sr": "16000"} and entry["ifs_removed"] == 3
    assert manifest["verification"]["passed"]
    assert "every sample with sr = 16000" in manifest["verification"]["inputs"]
    assert _tflite_inputs(out) == ["x"]


def test_cli_skip_pass_keeps_the_sample_rate_an_input(run_cli, rate_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", rate_onnx, "-o", out, "--input-shape", "1,8", "--input-shape", "scalar",
        "--input-value", "sr=16000", "--skip-pass", NAME,
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((out / "edgeport.json").read_text())
    assert {"name": NAME, "skipped": True} in manifest["passes"]
    assert manifest["verification"]["passed"]
    assert _tflite_inputs(out) == ["sr", "x"]


RATE_HEAD_SOURCE = '''
import torch
from torch import nn


@torch.jit.script
def _frame_gain(h: torch.Tensor, sr: torch.Tensor) -> torch.Tensor:
    if bool(sr == 16000):
        return torch.relu(h) * 2.0
    return torch.tanh(h) - 1.0


class RateHead(nn.Module):
    """A scripted branch on the sample rate: the export keeps it as an If on the input `sr`."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 4)

    def forward(self, x, sr):
        return _frame_gain(self.fc(x), sr)
'''


def test_cli_folds_a_pytorch_models_branch_on_its_sample_rate(run_cli, tmp_path: Path) -> None:
    (tmp_path / "rate.py").write_text(RATE_HEAD_SOURCE)
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "convert", f"{tmp_path / 'rate.py'}:RateHead", "-o", out, "--input-shape", "1,16",
        "--input-shape", "scalar", "--input-value", "sr=16000",
    )  # fmt: skip
    assert code == 0, err
    assert "input sr fixed to 16000 and folded, 1 constant If folded" in stdout + err
    manifest = json.loads((out / "edgeport.json").read_text())
    assert manifest["verification"]["passed"] and manifest["verification"]["reference"] == "pytorch"
    assert _tflite_inputs(out) == ["x"]
