"""edgeport/pipeline/index_inputs_int32.py: an int64 input read only as Gather indices (a PyTorch
nn.Embedding's ids) becomes an int32 input, so TFLite Micro's GATHER (int32 positions only) runs it;
an int64 input used any other way is left alone, with the reason."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeport.pipeline.index_inputs_int32 import convert_index_inputs

VOCAB, SEQ = 32, 16

TOKEN_SOURCE = f'''
import torch
from torch import nn


class Tokens(nn.Module):
    """ids -> Embedding({VOCAB}, 16) -> Conv1d -> mean over time -> Linear."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding({VOCAB}, 16)
        self.conv = nn.Conv1d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, ids):
        return self.fc(torch.relu(self.conv(self.emb(ids).transpose(1, 2))).mean(2))
'''


def _ids_model(doubled: bool) -> onnx.ModelProto:
    """int64 ids -> Gather from a table, + the ids' length (Shape, which reads no values); `doubled`
    computes the indices as ids * 2 first."""
    rng = np.random.default_rng(0)
    table = numpy_helper.from_array(rng.standard_normal((VOCAB, 4)).astype(np.float32), "t")
    two = numpy_helper.from_array(np.array(2, np.int64), "two")
    nodes = [helper.make_node("Mul", ["ids", "two"], ["idx"])] if doubled else []
    nodes += [
        helper.make_node("Gather", ["t", "idx" if doubled else "ids"], ["g"], axis=0),
        helper.make_node("Shape", ["ids"], ["s"], start=1, end=2),
        helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
        helper.make_node("Add", ["g", "sf"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "ids",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, SEQ])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, SEQ, 4])],
        [table, two] if doubled else [table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    return model


def _run(model: onnx.ModelProto, ids: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"ids": ids})[0]


def test_ids_read_only_by_gather_become_int32_with_the_same_outputs() -> None:
    model = _ids_model(doubled=False)
    rewritten, report = convert_index_inputs(model)
    assert rewritten.graph.input[0].type.tensor_type.elem_type == TensorProto.INT32
    assert list(report.converted) == ["ids"] and not report.left
    onnx.checker.check_model(rewritten)
    ids = np.random.default_rng(1).integers(0, VOCAB, (1, SEQ))
    np.testing.assert_array_equal(_run(rewritten, ids.astype(np.int32)), _run(model, ids))


def test_ids_used_arithmetically_are_left_alone_with_the_reason() -> None:
    model = _ids_model(doubled=True)
    rewritten, report = convert_index_inputs(model)
    assert rewritten.SerializeToString() == model.SerializeToString()
    assert not report.converted and "Mul" in report.left["ids"]


def test_a_float_input_is_not_the_pass_business() -> None:
    model = _ids_model(doubled=False)
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT
    rewritten, report = convert_index_inputs(model)
    assert rewritten.SerializeToString() == model.SerializeToString()
    assert not report.converted and not report.left


def _inputs(manifest: dict, name: str) -> dict[str, str]:
    artifact = next(a for a in manifest["artifacts"] if a["path"] == name)
    return {i["source_name"]: i["dtype"] for i in artifact["inputs"]}


def test_pytorch_embedding_model_converts_and_quantizes_for_tflite_micro(tmp_path: Path, run_cli) -> None:
    (tmp_path / "tokens.py").write_text(TOKEN_SOURCE)
    source = f"{tmp_path / 'tokens.py'}:Tokens"
    code, _, err = run_cli("convert", source, "--input-shape", f"1,{SEQ}", "-o", tmp_path / "float", "-q")
    assert code == 0, err
    manifest = json.loads((tmp_path / "float" / "edgeport.json").read_text())
    assert manifest["verification"]["passed"]
    assert _inputs(manifest, "model_float32.tflite") == {"ids": "int32"}
    code, _, err = run_cli(
        "convert", source, "--input-shape", f"1,{SEQ}", "-o", tmp_path / "int8", "-q",
        "--quantize", "int8", "--input-range", f"ids=0,{VOCAB - 1}",
    )  # fmt: skip
    assert code == 0, err  # the TFLite Micro check is part of an int8 conversion
    manifest = json.loads((tmp_path / "int8" / "edgeport.json").read_text())
    assert manifest["sections"]["quantization"]["tflm_vs_litert"]["samples"] > 0
    assert _inputs(manifest, "model_int8.tflite") == {"ids": "int32"}
    (entry,) = [p for p in manifest["passes"] if p["name"] == "index_inputs_int32"]
    assert list(entry["converted"]) == ["ids"]
