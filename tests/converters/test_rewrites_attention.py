"""The attention rewrite on the graphs torch.onnx really produces for each spelling of attention.

The patterns are the exporter's, so the input graphs come from torch (exported, then onnxsim as in the
pipeline) using the zoo's modules; the checks are pure ONNX: onnxruntime before vs after on seeded
inputs, and which ops are left.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import helper

from edgeport.converters.onnx_prepare import simplify
from edgeport.converters.rewrites import attention
from tests.onnx_graphs import make_model, max_rel_error, ops
from tests.zoo.attention import MHA, SDPA, CrossMHA, EncoderLayer, HandAttention, _causal, _padding_mask
from tests.zoo.models import _seeded


def exported(factory, *shapes: list[int]) -> onnx.ModelProto:
    module = _seeded(factory)()
    gen = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*s, generator=gen) for s in shapes)
    buf = io.BytesIO()
    torch.onnx.export(module, args, buf, dynamo=False, opset_version=17)
    model, ok = simplify(onnx.load_from_string(buf.getvalue()), fuse_bn=False)
    assert ok
    return model


def assert_batched_heads(before: onnx.ModelProto, softmaxes: int = 1) -> onnx.ModelProto:
    after = attention.rewrite(before)
    counts = ops(after)
    assert counts["Softmax"] == softmaxes
    # No head split or merge is left: the one Transpose per attention is k^T, a matmul operand the
    # TFLite converter folds into BATCH_MATMUL.
    assert counts.get("Transpose", 0) == softmaxes
    assert not {"Gather", "Unsqueeze", "Squeeze"} & set(counts)
    assert max_rel_error(before, after) < 1e-5
    return after


CASES = {
    "batch_first": (lambda: MHA(), [[1, 11, 24]]),
    "seq_first": (lambda: MHA(batch_first=False), [[11, 1, 24]]),
    "no_bias": (lambda: MHA(bias=False), [[1, 7, 24]]),
    "causal_mask": (lambda: MHA(attn_mask=_causal(11)), [[1, 11, 24]]),
    "padding_mask": (lambda: MHA(key_padding_mask=_padding_mask()), [[1, 11, 24]]),
    "cross_kdim_vdim": (CrossMHA, [[1, 7, 24], [1, 13, 10]]),
    "sdpa_causal": (lambda: SDPA(is_causal=True), [[1, 13, 24]]),
    "hand_written_5_heads": (HandAttention, [[1, 9, 30]]),
    "encoder_layer_pre_norm": (lambda: EncoderLayer(norm_first=True), [[1, 9, 32]]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_attention_becomes_batched_heads(case: str) -> None:
    factory, shapes = CASES[case]
    assert_batched_heads(exported(factory, *shapes))


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_returned_attention_weights_keep_their_shape(average: bool, masked: bool) -> None:
    mask = _causal(11) if masked else None
    before = exported(
        lambda: MHA(need_weights=True, average_attn_weights=average, attn_mask=mask), [1, 11, 24]
    )
    after = assert_batched_heads(before)
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    # The softmax runs on [heads * L, L]: onnx2tf mis-lays a [heads, L, L] tensor that a Reshape reads.
    (softmax,) = [n for n in after.graph.node if n.op_type == "Softmax"]
    assert len(shape_of(after, softmax.input[0])) == 2
    if average:  # and so does the mean over heads
        (mean,) = [n for n in after.graph.node if n.op_type == "ReduceMean"]
        assert len(shape_of(after, mean.input[0])) == 2


def shape_of(model: onnx.ModelProto, name: str) -> list[int]:
    inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
    (info,) = [v for v in inferred if v.name == name]
    return [d.dim_value for d in info.type.tensor_type.shape.dim]


def test_batch_of_two_is_left_alone_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    before = exported(lambda: MHA(), [2, 9, 24])
    with caplog.at_level(logging.INFO, logger=attention.__name__):
        after, reasons = attention.rewrite_with_reasons(before)
    assert after.SerializeToString() == before.SerializeToString()
    assert len(reasons) == 1 and "batch > 1" in reasons[0] and "Softmax" in reasons[0]
    assert reasons[0] in caplog.text


def test_a_softmax_that_is_not_attention_is_left_alone() -> None:
    # A classifier head (softmax of one matmul, nothing multiplied after it), and a softmax whose
    # scores are added to a computed tensor: neither is q @ k^T -> softmax -> @ v with constant masks.
    rng = np.random.default_rng(0)
    consts = {"w": rng.standard_normal((8, 8)), "v": rng.standard_normal((8, 8))}
    classifier = make_model(
        [helper.make_node("MatMul", ["x", "w"], ["s"]), helper.make_node("Softmax", ["s"], ["y"], axis=-1)],
        {"x": [4, 8]},
        ["y"],
        consts,
    )
    computed_mask = make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["s"]),
            helper.make_node("Add", ["s", "x"], ["m"]),
            helper.make_node("Softmax", ["m"], ["p"], axis=-1),
            helper.make_node("MatMul", ["p", "v"], ["y"]),
        ],
        {"x": [8, 8]},
        ["y"],
        consts,
    )
    for graph in (classifier, computed_mask):
        assert attention.rewrite(graph).SerializeToString() == graph.SerializeToString()


class TwoHeadsNoProjection(nn.Module):
    """Attention straight on the input features (no q/k/v or out projection), heads split by view."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x.view(1, 7, 2, 6).transpose(1, 2)
        o = torch.softmax(q @ q.transpose(-2, -1), dim=-1) @ q
        return o.transpose(1, 2).reshape(1, 7, 12)


def test_attention_without_projections_reads_the_features_directly() -> None:
    before = exported(TwoHeadsNoProjection, [1, 7, 12])
    after = attention.rewrite(before)
    assert ops(after)["Softmax"] == 1
    assert max_rel_error(before, after) < 1e-5
