"""rnn_unroll on recurrent graphs: the ones torch.onnx really produces (exported, then onnxsim as in the
pipeline) in every combination of cell, layers, directions, batch layout, initial state and outputs,
and hand-built ONNX nodes for what PyTorch never writes (layout 1, linear_before_reset 0, peepholes,
other activations, clip). The checks are pure ONNX: onnxruntime before vs after, and which ops are
left."""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxsim
import pytest
import torch
import torch.nn as nn
from onnx import helper

from edgeport.converters.rewrites import prepare_for_onnx2tf, rnn_unroll
from edgeport.converters.rewrites._grids import unambiguous_axis
from tests.onnx_graphs import make_model, max_rel_error, ops, random_feeds, run

RNN_OPS = {"GRU", "LSTM", "RNN"}
TOLERANCE = 1e-5


class Recurrent(nn.Module):
    """One nn.GRU / nn.LSTM / nn.RNN; `output` picks what forward returns."""

    def __init__(
        self,
        kind: str,
        output: str,
        layers: int = 1,
        bidirectional: bool = False,
        batch_first: bool = True,
        hidden: int = 8,
    ):
        super().__init__()
        kw = {"num_layers": layers, "batch_first": batch_first, "bidirectional": bidirectional}
        if kind.startswith("rnn"):
            self.rnn = nn.RNN(6, hidden, nonlinearity=kind.removeprefix("rnn_"), **kw)
        else:
            self.rnn = (nn.GRU if kind == "gru" else nn.LSTM)(6, hidden, **kw)
        self.output, self.batch_first = output, batch_first

    def forward(self, x: torch.Tensor, *state: torch.Tensor):
        y, final = self.rnn(x, *([tuple(state) if len(state) == 2 else state[0]] if state else []))
        final = final if isinstance(final, tuple) else (final,)
        if self.output == "last":
            return y[:, -1] if self.batch_first else y[-1]
        if self.output == "sequence":
            return y
        if self.output == "final":  # the top layer's last state(s)
            return tuple(s[-1] for s in final)
        return (y, *final)


def exported(module: nn.Module, inputs: tuple[torch.Tensor, ...], opset: int = 17) -> onnx.ModelProto:
    torch.manual_seed(0)
    for p in module.parameters():  # PyTorch's init is small; make every gate matter
        nn.init.normal_(p, std=0.5)
    buf = io.BytesIO()
    torch.onnx.export(module.eval(), inputs, buf, dynamo=False, opset_version=opset)
    model, ok = onnxsim.simplify(onnx.load_from_string(buf.getvalue()))
    assert ok
    return model


def recurrent_model(
    kind: str,
    output: str,
    layers: int = 1,
    bidirectional: bool = False,
    batch_first: bool = True,
    batch: int = 1,
    steps: int = 5,
    hidden: int = 8,
    state_in: bool = False,
    opset: int = 17,
) -> onnx.ModelProto:
    torch.manual_seed(0)
    module = Recurrent(kind, output, layers, bidirectional, batch_first, hidden)
    x = torch.randn(batch, steps, 6) if batch_first else torch.randn(steps, batch, 6)
    states = ()
    if state_in:
        shape = (layers * (2 if bidirectional else 1), batch, hidden)
        states = (torch.randn(shape),) * (2 if kind == "lstm" else 1)
    return exported(module, (x, *states), opset)


def tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    return {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}


def ambiguous_concats(model: onnx.ModelProto) -> list[str]:
    """Concats that another axis would reproduce in a permuted shape (onnx2tf may pick that axis)."""
    shapes = tensor_shapes(model)
    found = []
    for node in model.graph.node:
        if node.op_type == "Concat":
            shape = shapes[node.input[0]]
            axis = helper.get_attribute_value(node.attribute[0]) % len(shape)
            if unambiguous_axis(shape, axis) != axis:
                found.append(node.name)
    return found


def unrolled(before: onnx.ModelProto) -> onnx.ModelProto:
    """The rewritten model, checked for what every unrolling guarantees."""
    after, reasons = rnn_unroll.rewrite_with_reasons(before)
    assert reasons == []
    onnx.checker.check_model(after)
    counts = ops(after)
    assert not RNN_OPS & set(counts), counts
    # The batch-first swaps are absorbed (the states take the input's layout) and the exporter's 4-D
    # Y never exists: onnx2tf would take a 4-D tensor for an image and transpose it.
    assert "Transpose" not in counts, counts
    assert 4 not in {len(s) for s in tensor_shapes(after).values()}
    assert ambiguous_concats(after) == []
    assert max_rel_error(before, after) < TOLERANCE
    return after


# Every cell and output kind, each paired with other axes of variation (layers, directions, layout,
# batch, odd lengths and sizes, initial states) rather than the full product, which would take minutes.
CASES = [
    # kind, output, layers, bidirectional, batch_first, batch, steps, hidden, state_in
    ("gru", "last", 1, False, True, 1, 5, 8, False),
    ("gru", "sequence", 2, True, False, 1, 7, 8, False),
    ("gru", "final", 3, False, False, 2, 5, 5, False),
    ("gru", "all", 1, True, True, 2, 4, 8, True),
    ("gru", "last", 2, True, True, 1, 9, 7, False),
    ("lstm", "last", 2, False, True, 1, 5, 8, False),
    ("lstm", "sequence", 1, True, True, 1, 11, 8, False),
    ("lstm", "final", 2, True, False, 1, 5, 8, False),
    ("lstm", "all", 2, False, True, 1, 6, 8, True),
    ("lstm", "all", 1, True, False, 2, 3, 6, True),
    ("rnn_tanh", "last", 1, False, True, 1, 5, 13, False),
    ("rnn_tanh", "all", 3, True, False, 1, 6, 8, True),
    ("rnn_relu", "sequence", 2, False, True, 2, 7, 8, False),
    ("rnn_relu", "final", 1, True, True, 1, 5, 8, True),
    ("lstm", "all", 1, False, True, 1, 1, 8, False),  # a single time step
]


@pytest.mark.parametrize("case", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_exported_recurrent_layers_are_unrolled_exactly(case: tuple) -> None:
    kind, output, layers, bidirectional, batch_first, batch, steps, hidden, state_in = case
    before = recurrent_model(kind, output, layers, bidirectional, batch_first, batch, steps, hidden, state_in)
    unrolled(before)


def products(model: onnx.ModelProto) -> int:
    """Matrix products: the input projections (MatMul) and the per-step state projections."""
    counts = ops(model)
    return counts.get("MatMul", 0) + counts.get("Gemm", 0)


@pytest.mark.parametrize(("batch_first", "batch", "opset"), [(True, 1, 17), (False, 2, 17), (True, 2, 11)])
def test_state_projections_are_gemms_on_squeezed_states(batch_first: bool, batch: int, opset: int) -> None:
    """onnx2tf converts each MatMul and each Reshape of a 3-D tensor after building a Keras model of
    the graph up to it (quadratic in the steps); a Squeeze and a Gemm it converts as they come.
    Batch-first states [batch, 1, hidden] need the product unsqueezed back when batch > 1."""
    # Below opset 13 Squeeze / Unsqueeze take their axes as an attribute.
    before = recurrent_model("lstm", "sequence", batch_first=batch_first, batch=batch, steps=4, opset=opset)
    counts = ops(unrolled(before))
    assert counts["Gemm"] == counts["Squeeze"] == 4 and counts["MatMul"] == 1
    assert counts.get("Unsqueeze", 0) == (4 if batch_first and batch > 1 else 0)
    assert "Reshape" not in counts


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn_tanh"])
def test_one_input_projection_and_one_state_projection_per_step(kind: str) -> None:
    after = unrolled(recurrent_model(kind, "sequence", steps=5))
    assert products(after) == 1 + 5


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_last_step_reads_the_last_states_only(kind: str) -> None:
    after = unrolled(recurrent_model(kind, "last", bidirectional=True, steps=5))
    counts = ops(after)
    # y[:, -1] needs the whole forward pass but only the backward pass's first step.
    assert products(after) == (1 + 5) + (1 + 1)
    # No step's output is gathered: only the two directions' last states are joined.
    assert counts.get("Concat", 0) == 1 and "Gather" not in counts


def test_stacked_layers_hand_the_sequence_on_without_reshapes() -> None:
    after = unrolled(recurrent_model("lstm", "last", layers=3, steps=5))
    counts = ops(after)
    assert products(after) == 3 * (1 + 5)
    assert "Unsqueeze" not in counts and counts["Squeeze"] == counts["Gemm"]  # the per-step ones only


def test_state_outputs_are_exact_for_a_stateful_model() -> None:
    before = recurrent_model("lstm", "all", layers=2, state_in=True, steps=4)
    after = unrolled(before)
    # Outputs y, h_n, c_n keep their names and shapes.
    assert [o.name for o in after.graph.output] == [o.name for o in before.graph.output]
    assert max_rel_error(before, after) < TOLERANCE


# --- hand-built nodes --------------------------------------------------------------------------------


def onnx_recurrent(
    op: str,
    direction: str = "forward",
    hidden: int = 5,
    steps: int = 4,
    batch: int = 2,
    features: int = 3,
    layout: int = 0,
    state_in: bool = True,
    bias: bool = True,
    peepholes: bool = False,
    sequence_lens: list[int] | None = None,
    outputs: tuple[str, ...] = ("Y", "Y_h", "Y_c"),
    weights_as_input: bool = False,
    **attrs,
) -> onnx.ModelProto:
    """One ONNX GRU / LSTM / RNN node with seeded weights (initial states as model inputs)."""
    rng = np.random.default_rng(0)
    dirs = 2 if direction == "bidirectional" else 1
    gates = {"GRU": 3, "LSTM": 4, "RNN": 1}[op]
    x_shape = [batch, steps, features] if layout else [steps, batch, features]
    state_shape = [batch, dirs, hidden] if layout else [dirs, batch, hidden]
    inits = {
        "W": rng.normal(0, 0.5, (dirs, gates * hidden, features)),
        "R": rng.normal(0, 0.5, (dirs, gates * hidden, hidden)),
    }
    inputs = {"X": x_shape}
    if weights_as_input:
        inputs["W"] = list(inits.pop("W").shape)
    names = ["X", "W", "R", "", "", "", "", ""]
    if bias:
        inits["B"] = rng.normal(0, 0.5, (dirs, 2 * gates * hidden))
        names[3] = "B"
    if sequence_lens is not None:
        inits["lens"] = np.array(sequence_lens, np.int32)
        names[4] = "lens"
    if state_in:
        inputs["h0"] = state_shape
        names[5] = "h0"
        if op == "LSTM":
            inputs["c0"] = state_shape
            names[6] = "c0"
    if peepholes:
        inits["P"] = rng.normal(0, 0.5, (dirs, 3 * hidden))
        names[7] = "P"
    while names and not names[-1]:
        names.pop()
    produced = [o if o in outputs else "" for o in ("Y", "Y_h", "Y_c")[: 3 if op == "LSTM" else 2]]
    while produced and not produced[-1]:
        produced.pop()
    node = helper.make_node(
        op, names, produced, name=f"{op.lower()}_node", hidden_size=hidden, direction=direction, **attrs
    )
    if layout:
        node.attribute.append(helper.make_attribute("layout", 1))
    return make_model([node], inputs, [o for o in produced if o], inits)


HAND_BUILT = {
    "gru_linear_before_reset_0": dict(op="GRU"),
    "gru_linear_before_reset_1_reverse": dict(op="GRU", direction="reverse", linear_before_reset=1),
    "lstm_peepholes": dict(op="LSTM", peepholes=True, direction="bidirectional"),
    "lstm_no_bias_no_state": dict(op="LSTM", bias=False, state_in=False),
    "rnn_relu_reverse": dict(op="RNN", direction="reverse", activations=["Relu"]),
    "gru_hard_sigmoid": dict(op="GRU", activations=["HardSigmoid", "Tanh"], activation_alpha=[0.25]),
    "lstm_keras_style": dict(
        op="LSTM",
        activations=["HardSigmoid", "Softsign", "Elu"],
        activation_alpha=[0.3, 0.9],
        activation_beta=[0.4],
    ),
    "rnn_leaky_bidirectional": dict(
        op="RNN", direction="bidirectional", activations=["LeakyRelu", "Tanh"], activation_alpha=[0.2, 0.0]
    ),
    "lstm_clip": dict(op="LSTM", clip=0.7),
    "gru_full_sequence_lens": dict(op="GRU", sequence_lens=[4, 4], linear_before_reset=1),
    "lstm_final_state_only": dict(op="LSTM", outputs=("Y_h",)),
    "gru_hidden_1_batch_3": dict(op="GRU", hidden=1, batch=3, steps=3),
}


@pytest.mark.parametrize("name", sorted(HAND_BUILT))
def test_hand_built_recurrent_nodes_are_unrolled_exactly(name: str) -> None:
    before = onnx_recurrent(**HAND_BUILT[name])
    after, reasons = rnn_unroll.rewrite_with_reasons(before)
    assert reasons == []
    assert not RNN_OPS & set(ops(after))
    assert max_rel_error(before, after) < TOLERANCE


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_batch_major_layout_is_unrolled_exactly(op: str) -> None:
    """layout=1 ([batch, steps, ...] tensors) is checked against the same weights in layout 0 on
    transposed inputs, since onnxruntime refuses layout=1."""
    spec = dict(op=op, direction="bidirectional", **({"linear_before_reset": 1} if op == "GRU" else {}))
    after, reasons = rnn_unroll.rewrite_with_reasons(onnx_recurrent(layout=1, **spec))
    assert reasons == [] and not RNN_OPS & set(ops(after))
    reference = onnx_recurrent(layout=0, **spec)
    feeds = random_feeds(reference)
    swapped = {k: v.transpose(1, 0, 2) for k, v in feeds.items()}
    for want, got in zip(run(reference, feeds), run(after, swapped), strict=True):
        want = want.transpose(2, 0, 1, 3) if want.ndim == 4 else want.transpose(1, 0, 2)
        assert got.shape == want.shape
        assert np.abs(got - want).max() < TOLERANCE * np.abs(want).max()


LEFT_ALONE = {
    "padded batch": (dict(op="GRU", sequence_lens=[4, 2]), "sequence_lens"),
    "coupled gates": (dict(op="LSTM", input_forget=1), "input_forget"),
    "unknown activation": (dict(op="RNN", activations=["ScaledTanh"]), "ScaledTanh"),
    "weights computed": (dict(op="LSTM", weights_as_input=True), "W is not a constant"),
}


@pytest.mark.parametrize("case", sorted(LEFT_ALONE))
def test_a_node_it_cannot_write_out_is_left_alone_with_the_reason(case: str) -> None:
    spec, why = LEFT_ALONE[case]
    before = onnx_recurrent(**spec)
    after, reasons = rnn_unroll.rewrite_with_reasons(before)
    assert after.SerializeToString() == before.SerializeToString()
    assert len(reasons) == 1 and why in reasons[0] and f"{spec['op'].lower()}_node" in reasons[0]
    assert prepare_for_onnx2tf(before).onnx2tf_options == {"enable_rnn_unroll": True}


def test_an_unusual_reader_of_the_output_gets_the_assembled_tensor() -> None:
    """A Reshape that splits the hidden axis cannot stay a grid of states: Y is assembled for it."""
    base = onnx_recurrent("GRU", outputs=("Y",), linear_before_reset=1)
    shape = helper.make_tensor("split_shape", onnx.TensorProto.INT64, [2], [2, 20])
    base.graph.initializer.append(shape)
    base.graph.node.append(helper.make_node("Reshape", ["Y", "split_shape"], ["Z"]))
    base.graph.node.append(helper.make_node("Relu", ["Z"], ["out"]))
    del base.graph.output[:]
    base.graph.output.append(helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, None))
    after, reasons = rnn_unroll.rewrite_with_reasons(base)
    assert reasons == [] and "GRU" not in ops(after)
    assert max_rel_error(base, after) < TOLERANCE


def test_graphs_without_recurrent_nodes_are_returned_unchanged() -> None:
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 4]}, ["y"])
    assert rnn_unroll.rewrite(model).SerializeToString() == model.SerializeToString()


def test_unrolled_graphs_need_no_onnx2tf_option() -> None:
    prepared = prepare_for_onnx2tf(recurrent_model("gru", "last"))
    assert prepared.applied == [rnn_unroll.NAME] and prepared.onnx2tf_options == {}
