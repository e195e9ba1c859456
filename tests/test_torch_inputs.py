"""PyTorch models whose inputs are not float tensors: token ids into an embedding."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from edgeport.converters.torch_to_onnx import index_inputs

EMBEDDING_SOURCE = '''
import torch
from torch import nn


class Tagger(nn.Module):
    """Token ids and a float feature vector, as a small keyword / intent model takes them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids, bias):
        return self.fc(self.emb(ids).mean(1) + bias)
'''


class _Tagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(12, 8)

    def forward(self, ids: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.emb(ids).mean(1) + bias


def test_only_the_index_input_becomes_integer() -> None:
    found = index_inputs(_Tagger(), [torch.zeros(1, 5), torch.zeros(1, 8)])
    assert found is not None
    inputs, outputs = found
    assert [t.dtype for t in inputs] == [torch.int64, torch.float32]
    assert int(inputs[0].max()) < 8 and outputs[0].shape == (1, 8)


def test_a_model_that_fails_anyway_is_not_retried_into_success() -> None:
    assert index_inputs(nn.Linear(4, 2), [torch.zeros(1, 5)]) is None


def test_embedding_model_converts_with_int64_ids(tmp_path: Path, run_cli) -> None:
    (tmp_path / "tagger.py").write_text(EMBEDDING_SOURCE)
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'tagger.py'}:Tagger", "--input-shape", "1,5", "--input-shape", "1,8",
        "-o", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    manifest = json.loads((tmp_path / "out" / "edgeport.json").read_text())
    assert manifest["verification"]["passed"]
    tflite = next(a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite")
    # int32: the ids are read only as Gather indices (pass index_inputs_int32)
    assert {i["source_name"]: i["dtype"] for i in tflite["inputs"]} == {"ids": "int32", "bias": "float32"}


def test_float64_model_is_told_to_use_float32(tmp_path: Path, run_cli) -> None:
    (tmp_path / "m.py").write_text(
        "from torch import nn\n\ndef build():\n    return nn.Linear(4, 2).double()\n"
    )
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'm.py'}:build", "--input-shape", "1,4", "-o", tmp_path / "out"
    )
    assert code == 1, err
    assert "Double" in err and "return model.float() from the callable" in err
    assert not (tmp_path / "out").exists()
