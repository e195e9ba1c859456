"""rnn_unroll on the GRU/LSTM graphs torch.onnx really produces (exported, then onnxsim as in the
pipeline); the checks are pure ONNX: onnxruntime before vs after, and which ops are left."""

from __future__ import annotations

import io

import onnx
import onnxsim
import pytest
import torch
import torch.nn as nn

from edgeport.converters.rewrites import prepare_for_onnx2tf, rnn_unroll
from tests.onnx_graphs import assert_same_outputs, ops


class Recurrent(nn.Module):
    def __init__(self, kind: str, output: str, bidirectional: bool = False, layers: int = 1):
        super().__init__()
        cls = nn.GRU if kind == "gru" else nn.LSTM
        self.rnn = cls(6, 8, num_layers=layers, batch_first=True, bidirectional=bidirectional)
        self.output = output

    def forward(self, x: torch.Tensor):
        y, state = self.rnn(x)
        if self.output == "last":
            return y[:, -1]
        if self.output == "sequence":
            return y
        return (y, *state) if isinstance(state, tuple) else (y, state)


def exported(module: nn.Module, steps: int = 5) -> onnx.ModelProto:
    torch.manual_seed(0)
    for p in module.parameters():  # PyTorch's init is small; make every gate matter
        nn.init.normal_(p, std=0.5)
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), (torch.randn(1, steps, 6),), buf, dynamo=False, opset_version=17)
    model, ok = onnxsim.simplify(onnx.load_from_string(buf.getvalue()))
    assert ok
    return model


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("output", ["last", "sequence", "all"])
def test_recurrent_node_is_unrolled_with_same_outputs(kind: str, output: str) -> None:
    torch.manual_seed(0)
    before = exported(Recurrent(kind, output))
    after = rnn_unroll.rewrite(before)
    counts = ops(after)
    assert "GRU" not in counts and "LSTM" not in counts
    # One input projection for every step; one state projection per step.
    assert counts["MatMul"] == 1 + 5
    if output == "last":  # y[:, -1] reads the last state: no per-step outputs are gathered
        assert "Concat" not in counts and "Gather" not in counts
    assert_same_outputs(before, after)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_stacked_layers_hand_the_sequence_on_as_3d(kind: str) -> None:
    torch.manual_seed(0)
    before = exported(Recurrent(kind, "last", layers=2))
    after = rnn_unroll.rewrite(before)
    counts = ops(after)
    assert "GRU" not in counts and "LSTM" not in counts
    # Layer 1's per-step outputs go to layer 2 as one [steps, batch, hidden] tensor: no 4-D
    # Unsqueeze/Squeeze pair (onnx2tf would take a 4-D tensor for an image and transpose it).
    assert "Unsqueeze" not in counts and "Squeeze" not in counts
    assert_same_outputs(before, after)


def test_single_step_sequence() -> None:
    torch.manual_seed(0)
    before = exported(Recurrent("gru", "all"), steps=1)
    after = rnn_unroll.rewrite(before)
    assert "GRU" not in ops(after)
    assert_same_outputs(before, after)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("output", ["last", "sequence", "all"])
def test_bidirectional_is_unrolled_both_ways(kind: str, output: str) -> None:
    torch.manual_seed(0)
    before = exported(Recurrent(kind, output, bidirectional=True))
    after = rnn_unroll.rewrite(before)
    counts = ops(after)
    assert "GRU" not in counts and "LSTM" not in counts
    # y[:, -1] needs only the backward pass's first step (it starts at the last time step).
    assert counts["MatMul"] == (6 + 2 if output == "last" else 2 * (1 + 5))
    if output != "all":  # the exporter's 4-D Y is never materialized
        assert "Unsqueeze" not in counts
        # Left: the batch-first swaps of input (and output sequence), which onnx2tf makes reshapes.
        assert counts["Transpose"] == (1 if output == "last" else 2)
    assert_same_outputs(before, after)


def test_a_gru_rnn_unroll_cannot_write_out_is_left_to_onnx2tf() -> None:
    from tests.converters.test_rewrites_prepare import gru_graph

    before = gru_graph()  # linear_before_reset=0: not PyTorch's GRU
    assert rnn_unroll.rewrite(before).SerializeToString() == before.SerializeToString()
    assert prepare_for_onnx2tf(before).onnx2tf_options == {"enable_rnn_unroll": True}


def test_unrolled_graphs_need_no_onnx2tf_option() -> None:
    torch.manual_seed(0)
    prepared = prepare_for_onnx2tf(exported(Recurrent("gru", "last")))
    assert prepared.applied == [rnn_unroll.NAME] and prepared.onnx2tf_options == {}
