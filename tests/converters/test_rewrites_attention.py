"""The attention rewrite on the graphs torch.onnx really produces for nn.MultiheadAttention.

The pattern is the exporter's, so the input graphs come from torch (exported, then onnxsim as in the
pipeline); the checks are pure ONNX: onnxruntime before vs after, and which ops are left.
"""

from __future__ import annotations

import io

import onnx
import onnxsim
import pytest
import torch
import torch.nn as nn

from edgeport.converters.rewrites import attention
from tests.onnx_graphs import assert_same_outputs, ops


class SelfAttention(nn.Module):
    def __init__(self, batch_first: bool, cross: bool = False, bias: bool = True):
        super().__init__()
        self.attn = nn.MultiheadAttention(24, 3, batch_first=batch_first, bias=bias)
        self.cross = cross
        if bias:
            nn.init.normal_(self.attn.in_proj_bias, std=0.1)
            nn.init.normal_(self.attn.out_proj.bias, std=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv = torch.tanh(x) if self.cross else x
        return self.attn(x, kv, kv, need_weights=False)[0]


def exported(module: nn.Module, shape: list[int]) -> onnx.ModelProto:
    torch.manual_seed(0)
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.randn(*shape),), buf, dynamo=False, opset_version=17)
    model, ok = onnxsim.simplify(onnx.load_from_string(buf.getvalue()))
    assert ok
    return model


@pytest.mark.parametrize("batch_first", [True, False])
def test_self_attention_becomes_batched_heads_without_transposes(batch_first: bool) -> None:
    torch.manual_seed(0)
    shape = [1, 10, 24] if batch_first else [10, 1, 24]
    before = exported(SelfAttention(batch_first), shape)
    after = attention.rewrite(before)
    counts = ops(after)
    assert counts["Softmax"] == 1 and counts["Split"] == 1 and counts["ReduceSum"] == 1
    assert "Gather" not in counts and "Unsqueeze" not in counts
    # What is left of Transpose: k^T (a matmul operand, folded by the TFLite converter) and the
    # batch_first swap of a batch-1 tensor (a reshape for onnx2tf).
    assert counts.get("Transpose", 0) == (3 if batch_first else 1)
    assert_same_outputs(before, after)


def test_attention_without_bias() -> None:
    torch.manual_seed(0)
    before = exported(SelfAttention(True, bias=False), [1, 7, 24])
    after = attention.rewrite(before)
    assert "ReduceSum" in ops(after)
    assert_same_outputs(before, after)


def test_cross_attention_is_left_alone() -> None:
    torch.manual_seed(0)
    before = exported(SelfAttention(True, cross=True), [1, 10, 24])
    assert attention.rewrite(before).SerializeToString() == before.SerializeToString()
