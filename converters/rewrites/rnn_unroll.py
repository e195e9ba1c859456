"""GRU / LSTM -> unrolled matmul + elementwise ops, with the input projection done once for all steps.

onnx2tf translates a recurrent node into a TFLite WHILE loop (the TFLite Micro interpreter hangs on
it) or, with `enable_rnn_unroll`, into ~20 ops per time step (separate FULLY_CONNECTEDs per gate for
the input and the state). Written out here instead:

* `X @ W^T + b` for every time step in one MatMul (the input biases and the state biases that are
  plain sums are folded into it), then one Split into steps;
* per step only the state projection `h @ R^T`, one equal-parts Split of it into gates and the gate
  arithmetic (12 TFLite ops per step for both GRU and LSTM);
* `y[:, -1]` after a batch-first export (Squeeze -> Transpose -> Gather(-1)) reads the last state
  directly instead of concatenating every step's output.

Handled: forward, reverse and bidirectional, default activations, no clip, no sequence_lens, layout 0,
GRU with linear_before_reset=1 (PyTorch's), LSTM without peepholes or input_forget. Anything else is left to
onnx2tf. Every replacement is checked against the original node with onnxruntime on random inputs.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, attr

NAME = "rnn_unroll"

_CHECK_TOLERANCE = 1e-5
_DEFAULT_ACTS = {"GRU": [b"Sigmoid", b"Tanh"], "LSTM": [b"Sigmoid", b"Tanh", b"Tanh"]}


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


_DIRECTIONS = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}


def _directions(node: onnx.NodeProto) -> list[str] | None:
    value = attr(node, "direction", b"forward")
    return _DIRECTIONS.get(value.decode() if isinstance(value, bytes) else value)


def _supported(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in _DEFAULT_ACTS:
        return False
    dirs = _directions(node)
    if dirs is None or attr(node, "layout", 0):
        return False
    if attr(node, "clip") is not None or _input(node, 4):
        return False
    acts = attr(node, "activations")
    if acts is not None and list(acts) != _DEFAULT_ACTS[node.op_type] * len(dirs):
        return False
    if node.op_type == "GRU" and attr(node, "linear_before_reset", 0) != 1:
        return False
    if node.op_type == "LSTM" and (attr(node, "input_forget", 0) or _input(node, 7)):
        return False
    w, r = view.const(_input(node, 1)), view.const(_input(node, 2))
    shape = view.static_shape(node.input[0])
    if w is None or r is None or shape is None or len(shape) != 3 or w.shape[0] != len(dirs):
        return False
    return not _input(node, 3) or view.const(_input(node, 3)) is not None


def _sequence_chain(view: OnnxGraph, y: str, shape: list[int]) -> list[onnx.NodeProto] | None:
    """How PyTorch's exporter turns Y [steps, dirs, batch, hidden] into its [steps, batch, dirs*hidden]
    output: Squeeze(axis 1) for one direction, Transpose([0, 2, 1, 3]) + Reshape for two."""
    steps, dirs, batch, hidden = shape
    if dirs == 1:
        squeeze = view.only_consumer(y, "Squeeze")
        axes = view.const(_input(squeeze, 1)) if squeeze is not None else None
        return [squeeze] if axes is not None and axes.reshape(-1).tolist() == [1] else None
    transpose = view.only_consumer(y, "Transpose")
    if transpose is None or list(attr(transpose, "perm", [])) != [0, 2, 1, 3]:
        return None
    reshape = view.only_consumer(transpose.output[0], "Reshape")
    if reshape is None or view.static_shape(reshape.output[0]) != [steps, batch, dirs * hidden]:
        return None
    return [transpose, reshape]


def _last_step_chain(view: OnnxGraph, seq: str, steps: int) -> list[onnx.NodeProto] | None:
    """Transpose([1, 0, 2]) -> Gather(axis 1, last index): `y[:, -1]` of a batch-first sequence."""
    if view.is_graph_output(seq):
        return None
    transpose = view.only_consumer(seq, "Transpose")
    if transpose is None or list(attr(transpose, "perm", [])) != [1, 0, 2]:
        return None
    gather = view.only_consumer(transpose.output[0], "Gather")
    index = view.const(_input(gather, 1)) if gather is not None else None
    if gather is None or attr(gather, "axis", 0) != 1 or index is None or index.size != 1:
        return None
    if int(index.reshape(-1)[0]) not in (-1, steps - 1):
        return None
    return [transpose, gather]


class _Builder:
    def __init__(self, view: OnnxGraph, prefix: str) -> None:
        self.view, self.prefix = view, prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.view.fresh(f"{self.prefix}_{hint}")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, outputs: int = 1, out: str | None = None, **kw):
        names = [out] if out else [self.view.fresh(f"{self.prefix}_{hint}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.view.fresh(self.prefix), **kw))
        return names[0] if outputs == 1 else names


def _build(
    view: OnnxGraph,
    node: onnx.NodeProto,
    outputs: dict[str, str],
    last_out: str | None,
    seq_out: str | None = None,
):
    """New nodes for `node`; `outputs` maps 'Y'/'Y_h'/'Y_c' to the names to produce, `seq_out` is the
    [steps, batch, dirs*hidden] sequence and `last_out` its last step ([batch, dirs*hidden])."""
    steps, batch, _ = view.static_shape(node.input[0])
    dirs = _directions(node)
    hidden = int(attr(node, "hidden_size"))
    gates = 3 if node.op_type == "GRU" else 4
    weights, recurrences = view.const(node.input[1]), view.const(node.input[2])
    biases = view.const(_input(node, 3))
    if biases is None:
        biases = np.zeros((len(dirs), 2 * gates * hidden), np.float32)
    b = _Builder(view, node.name or node.op_type)

    def split(tensor: str, parts: int, axis: int, hint: str) -> list[str]:
        # Equal parts with no `split` input: onnx2tf emits one SPLIT (sizes make it emit a
        # STRIDED_SLICE per part).
        if parts == 1:
            return [tensor]
        return b.op("Split", [tensor], hint, outputs=parts, axis=axis)

    def initial(index: int, hint: str) -> list[str]:
        """Per-direction [1, batch, hidden] initial state (zeros when the input is absent)."""
        init = _input(node, index)
        if not init:
            return [b.const(np.zeros((1, batch, hidden), np.float32), hint)] * len(dirs)
        value = view.const(init)
        if value is not None:
            return [b.const(value[k : k + 1].astype(np.float32), hint) for k in range(len(dirs))]
        return split(init, len(dirs), 0, hint)

    h_init, c_init = initial(5, "h0"), initial(6, "c0") if node.op_type == "LSTM" else None
    by_time: list[list[str]] = []  # per direction, the state after each time step (in time order)
    finals: list[tuple[str, str | None]] = []
    for k, direction in enumerate(dirs):
        w, r, bias = weights[k], recurrences[k], biases[k]
        wb, rb = bias[: gates * hidden], bias[gates * hidden :]
        if node.op_type == "GRU":
            # z and r add both biases outside any product; the candidate's state bias sits inside r * (.).
            x_bias = wb + np.concatenate([rb[: 2 * hidden], np.zeros(hidden, np.float32)])
            h_bias = np.concatenate([np.zeros(2 * hidden, np.float32), rb[2 * hidden :]])
        else:
            x_bias, h_bias = wb + rb, None
        xw = b.op("MatMul", [node.input[0], b.const(w.T.astype(np.float32), "W")], "xw")
        xw = b.op("Add", [xw, b.const(x_bias.astype(np.float32), "xb")], "xwb")
        if node.op_type == "GRU":
            # The gates' input parts, per gate then per step: xg[g][t] is [1, batch, hidden].
            xg = [split(g, steps, 0, "x_t") for g in split(xw, 3, -1, "x_gate")]
        else:
            xs = split(xw, steps, 0, "x_t")
        h, c = h_init[k], c_init[k] if c_init else None
        rt = b.const(r.T.astype(np.float32), "R")
        hb = b.const(h_bias.astype(np.float32), "hb") if h_bias is not None else None
        hs: dict[int, str] = {}
        for t in range(steps) if direction == "forward" else reversed(range(steps)):
            hr = b.op("MatMul", [h, rt], "hr")
            if node.op_type == "GRU":
                h_z, h_r, h_n = split(b.op("Add", [hr, hb], "hrb"), 3, -1, "h_gate")
                z = b.op("Sigmoid", [b.op("Add", [xg[0][t], h_z], "z_in")], "z")
                r_gate = b.op("Sigmoid", [b.op("Add", [xg[1][t], h_r], "r_in")], "r")
                n = b.op("Tanh", [b.op("Add", [xg[2][t], b.op("Mul", [r_gate, h_n], "rh")], "n_in")], "n")
                # h' = (1 - z) * n + z * h == n + z * (h - n)
                h = b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n], "h_n")], "zh")], "h")
            else:
                g_i, g_o, g_f, g_c = split(b.op("Add", [xs[t], hr], "g"), 4, -1, "gate")
                i, o, f = (b.op("Sigmoid", [g], hint) for g, hint in ((g_i, "i"), (g_o, "o"), (g_f, "f")))
                cand = b.op("Tanh", [g_c], "cand")
                c = b.op("Add", [b.op("Mul", [f, c], "fc"), b.op("Mul", [i, cand], "ic")], "c")
                h = b.op("Mul", [o, b.op("Tanh", [c], "tc")], "h")
            hs[t] = h
        by_time.append([hs[t] for t in range(steps)])
        finals.append((h, c))

    def joined(parts: list[str], axis: int, hint: str, out: str | None = None) -> str:
        if len(parts) == 1:
            return b.op("Identity", parts, hint, out=out) if out else parts[0]
        return b.op("Concat", parts, hint, axis=axis, out=out)

    if seq_out is not None or last_out is not None:
        # Step t of the sequence: every direction's state side by side, [1, batch, dirs*hidden].
        steps_out = [joined([hs[t] for hs in by_time], -1, "y_t") for t in range(steps)]
        if seq_out is not None:
            joined(steps_out, 0, "y_seq", out=seq_out)
        if last_out is not None:
            last = b.const(np.array([batch, len(dirs) * hidden], np.int64), "last")
            b.op("Reshape", [steps_out[-1], last], "last", out=last_out)
    if "Y" in outputs:
        axis0 = b.const(np.array([0], np.int64), "ax0")
        per_t = [
            b.op("Unsqueeze", [joined([hs[t] for hs in by_time], 0, "y_d"), axis0], "y_u")
            for t in range(steps)
        ]
        joined(per_t, 0, "y", out=outputs["Y"])
    if "Y_h" in outputs:
        joined([h for h, _ in finals], 0, "y_h", out=outputs["Y_h"])
    if "Y_c" in outputs:
        joined([c for _, c in finals], 0, "y_c", out=outputs["Y_c"])
    return b.nodes, b.inits


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if not _supported(view, node):
        return False
    steps, batch, _ = view.static_shape(node.input[0])
    dirs, hidden = len(_directions(node)), int(attr(node, "hidden_size"))
    keys = ["Y", "Y_h", "Y_c"][: len(node.output)]
    used = {
        k: o
        for k, o in zip(keys, node.output, strict=False)
        if o and (view.consumers(o) or view.is_graph_output(o))
    }
    old = [node]
    last_out = seq_out = None
    if "Y" in used and not view.is_graph_output(used["Y"]):
        # Produce what the exporter's follow-up ops compute from Y, in 3-D: a 4-D
        # [steps, dirs, batch, hidden] tensor looks like an image to onnx2tf, which transposes it.
        chain = _sequence_chain(view, used["Y"], [steps, dirs, batch, hidden])
        if chain is not None:
            old += chain
            del used["Y"]
            seq = chain[-1].output[0]
            last = _last_step_chain(view, seq, steps)
            if last is not None:  # y[:, -1]: only the last step is needed
                old += last
                last_out = last[-1].output[0]
            else:
                seq_out = seq
    new, inits = _build(view, node, used, last_out, seq_out)
    outs = [*used.values(), *(o for o in (last_out, seq_out) if o)]
    if not outs or not replacement_agrees(view, old, new, inits, outs, _CHECK_TOLERANCE):
        return False
    view.graph.initializer.extend(inits)
    view.replace(old, new)
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()
