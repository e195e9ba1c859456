"""GRU / LSTM / RNN nodes -> the recurrence written out step by step in plain ops (no loop).

onnx2tf translates a recurrent node into a TFLite WHILE loop, on which the TFLite Micro interpreter
hangs, or (with `enable_rnn_unroll`) into ~20 ops per time step; it also takes every 4-D tensor for an
image and transposes it. Written out here instead:

* the input projection `X @ W^T + b` for every time step and direction in one MatMul (the state
  biases that are plain sums folded into it), then one Split into steps; the MatMul reads X in the
  layout it arrives in (time-major, or batch-first through the exporter's Transpose), and the states
  are kept in that same layout, so no step needs a transpose;
* per step only the state projection `h @ R^T` (a Squeeze of the state to [batch, hidden] and a
  Gemm, which onnx2tf converts in time linear in the steps, see _times_recurrence), one equal-parts
  Split into gates and the gate arithmetic (LSTM 13 ops, RNN 4).

The node's outputs are never built as the tensors ONNX defines (Y is 4-D: [steps, directions, batch,
hidden]). Each output is kept as a grid of per-step, per-direction states (`Grid`), and the
structural ops that read it (Squeeze, Unsqueeze, Reshape, Flatten, Transpose, Gather, Slice, Concat,
Identity) are applied to the grid instead of to data. A tensor is assembled, with one Concat per grid
axis, only where an ordinary op or a graph output reads it. So whichever way an exporter spells it,
`y[:, -1]`, `h_n[-1]`, a bidirectional sequence, stacked layers (one node per layer) and state outputs
cost no ops of their own, and a step nothing reads is pruned (`y[:, -1]` of a backward pass needs one).

Handled: GRU (either `linear_before_reset`), LSTM (with peepholes), RNN; forward, reverse and
bidirectional; `layout` 0 and 1; initial states as constants, model inputs or computed tensors; the
activations Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu, Elu, Softsign and Softplus; `clip`;
`sequence_lens` when every sequence is full length. Left to onnx2tf, with the reason
(`rewrite_with_reasons`):
sequence lengths shorter than the sequence, `input_forget`, other activations, weights that are not
constants, shapes that are not static. Every replacement is checked against the region it replaces with
onnxruntime on random inputs; one that disagrees is not applied. Concats of more than 10 steps are
split for TFLite Micro by the concat_fan_in rewrite, which runs after this one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites._grids import (
    STRUCTURAL,
    Block,
    Builder,
    Grid,
    apply_structural,
    cost,
    cut,
    materialize,
    non1,
    plain,
    regrid,
    reshape,
    select,
    transpose,
)
from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, as_text, attr, opset_version, text_attr

NAME = "rnn_unroll"

_LOG = logging.getLogger(__name__)
_CHECK_TOLERANCE = 1e-5
_GATES = {"GRU": 3, "LSTM": 4, "RNN": 1}
# ONNX's default activations per direction: GRU f, g; LSTM f, g, h; RNN f.
_DEFAULT_ACTS = {"GRU": ["Sigmoid", "Tanh"], "LSTM": ["Sigmoid", "Tanh", "Tanh"], "RNN": ["Tanh"]}
# Activation -> (ONNX op, attributes taken from activation_alpha / activation_beta, their defaults).
_ACTIVATIONS: dict[str, tuple[str, tuple[tuple[str, float], ...]]] = {
    "sigmoid": ("Sigmoid", ()),
    "tanh": ("Tanh", ()),
    "relu": ("Relu", ()),
    "softsign": ("Softsign", ()),
    "softplus": ("Softplus", ()),
    "hardsigmoid": ("HardSigmoid", (("alpha", 0.2), ("beta", 0.5))),
    "leakyrelu": ("LeakyRelu", (("alpha", 0.01),)),
    "elu": ("Elu", (("alpha", 1.0),)),
}
_DIRECTIONS = {"forward": ["forward"], "reverse": ["reverse"], "bidirectional": ["forward", "reverse"]}


class _Unsupported(Exception):
    """Why a node or a region is left to onnx2tf (one line, shown to the user)."""


# --- the recurrent node ----------------------------------------------------------------------------


def _directions(node: onnx.NodeProto) -> list[str]:
    value = text_attr(node, "direction", "forward")
    dirs = _DIRECTIONS.get(value)
    if dirs is None:
        raise _Unsupported(f"direction {value!r}")
    return dirs


def _activations(node: onnx.NodeProto, directions: int) -> list[list[tuple[str, dict[str, float]]]]:
    """Per direction, the (op, attributes) of each activation (GRU f, g; LSTM f, g, h; RNN f)."""
    names = [as_text(a) for a in attr(node, "activations") or []]
    per_dir = len(_DEFAULT_ACTS[node.op_type])
    if not names:
        names = _DEFAULT_ACTS[node.op_type] * directions
    if len(names) != per_dir * directions:
        raise _Unsupported(f"{len(names)} activations for {directions} direction(s)")
    alphas = list(attr(node, "activation_alpha", []) or [])
    betas = list(attr(node, "activation_beta", []) or [])
    acts = []
    for name in names:
        if name.lower() not in _ACTIVATIONS:
            raise _Unsupported(f"activation {name}")
        op, params = _ACTIVATIONS[name.lower()]
        values = {}
        for key, default in params:
            source = alphas if key == "alpha" else betas
            values[key] = float(source.pop(0)) if source else default
        acts.append((op, values))
    return [acts[k * per_dir : (k + 1) * per_dir] for k in range(directions)]


def _check_node(view: OnnxGraph, node: onnx.NodeProto) -> None:
    """Raise _Unsupported naming the first thing this rewrite cannot write out."""
    dirs = _directions(node)
    _activations(node, len(dirs))
    if attr(node, "layout", 0) not in (0, 1):
        raise _Unsupported(f"layout {attr(node, 'layout')}")
    if node.op_type == "LSTM" and attr(node, "input_forget", 0):
        raise _Unsupported("input_forget=1")
    shape = view.static_shape(node.input[0])
    if shape is None or len(shape) != 3:
        raise _Unsupported(f"input shape {view.shape(node.input[0])} is not static")
    steps = shape[1] if attr(node, "layout", 0) else shape[0]
    for i, what in ((1, "W"), (2, "R"), (3, "B"), (7, "P")):
        if _input(node, i) and view.const(_input(node, i)) is None:
            raise _Unsupported(f"{what} is not a constant")
    w = view.const(node.input[1])
    if w.ndim != 3 or w.shape[0] != len(dirs):
        raise _Unsupported(f"W has shape {list(w.shape)}")
    if _input(node, 4):
        lens = view.const(_input(node, 4))
        if lens is None or not np.all(lens == steps):
            raise _Unsupported("sequence_lens shorter than the sequence (padded batch)")
    for i in (5, 6):
        name = _input(node, i)
        if name and (view.static_shape(name) is None or not view.is_float32(name)):
            raise _Unsupported(f"initial state {name} has no static float shape")


Activation = tuple[str, dict[str, float]]


@dataclass
class _Cell:
    """One direction of a recurrent node: what a time step reads besides its input and state."""

    kind: str
    acts: list[Activation]  # GRU f, g; LSTM f, g, h; RNN f
    clip: float | None
    recurrence: list[str]  # R^T (GRU with linear_before_reset=0: R_zr^T and R_h^T)
    state_bias: str | None  # GRU with linear_before_reset=1: the bias inside r * (h @ R_h^T + Rb_h)
    peepholes: list[str] | None  # LSTM: P_i, P_o, P_f
    flat: _Flat | None = None  # how a state is made 2-D for its product with R^T


@dataclass
class _Flat:
    """A step's state [1, batch, hidden] or [batch, 1, hidden] made [batch, hidden] for a Gemm."""

    axis: int  # the state's time axis, of size 1
    axes: str | None  # that axis as a Squeeze / Unsqueeze input (opset 13+); None: an attribute
    back: bool  # the product needs the axis again to broadcast onto the gates ([batch, 1, n], batch > 1)

    def op(self, b: Builder, op_type: str, x: str, hint: str) -> str:
        if self.axes is None:
            return b.op(op_type, [x], hint, axes=[self.axis])
        return b.op(op_type, [x, self.axes], hint)


def _times_recurrence(b: Builder, cell: _Cell, h: str, which: int, hint: str) -> str:
    """h @ R^T (R_h^T for which=1) as a Gemm on the state squeezed to [batch, hidden]. onnx2tf checks
    each MatMul (and each Reshape of a 3-D tensor) it converts against onnxruntime by building a Keras
    model of the whole graph up to that node, which made a long unrolled sequence take time quadratic
    in its steps (resemblyzer's three LSTM layers over 160 steps: no result in 13 minutes); it converts
    Squeeze and Gemm as they come, the Gemm to the same FULLY_CONNECTED."""
    flat = cell.flat
    if flat is None:
        return b.op("MatMul", [h, cell.recurrence[which]], hint)
    product = b.op("Gemm", [flat.op(b, "Squeeze", h, f"{hint}_in"), cell.recurrence[which]], hint)
    return flat.op(b, "Unsqueeze", product, f"{hint}_out") if flat.back else product


def _activate(b: Builder, cell: _Cell, which: int, x: str, hint: str, clip: bool = True) -> str:
    if clip and cell.clip is not None:  # ONNX clips the inputs of the activations
        bound = float(cell.clip)
        lo, hi = b.const(np.array(-bound, np.float32), "lo"), b.const(np.array(bound, np.float32), "hi")
        x = b.op("Clip", [x, lo, hi], "clip")
    op, params = cell.acts[which]
    return b.op(op, [x], hint, **params)


def _rnn_step(b: Builder, cell: _Cell, x: list[str], h: str) -> str:
    return _activate(b, cell, 0, b.op("Add", [x[0], _times_recurrence(b, cell, h, 0, "hr")], "pre"), "h")


def _gru_step(b: Builder, cell: _Cell, x: list[str], h: str) -> str:
    x_z, x_r, x_n = x
    if cell.state_bias is not None:  # linear_before_reset=1 (PyTorch's): r gates h @ R_h^T + Rb_h
        hr = b.op("Add", [_times_recurrence(b, cell, h, 0, "hr"), cell.state_bias], "hrb")
        h_z, h_r, h_n = b.split(hr, 3, -1, "h_gate")
    else:
        h_z, h_r = b.split(_times_recurrence(b, cell, h, 0, "hr"), 2, -1, "h_gate")
    z = _activate(b, cell, 0, b.op("Add", [x_z, h_z], "z_in"), "z")
    r = _activate(b, cell, 0, b.op("Add", [x_r, h_r], "r_in"), "r")
    if cell.state_bias is not None:
        rh = b.op("Mul", [r, h_n], "rh")
    else:  # linear_before_reset=0: r gates h before the product
        rh = _times_recurrence(b, cell, b.op("Mul", [r, h], "rh_in"), 1, "rh")
    n = _activate(b, cell, 1, b.op("Add", [x_n, rh], "n_in"), "n")
    # h' = (1 - z) * n + z * h == n + z * (h - n)
    return b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n], "h_n")], "zh")], "h")


def _lstm_step(b: Builder, cell: _Cell, x: list[str], h: str, c: str) -> tuple[str, str]:
    g_i, g_o, g_f, g_c = b.split(
        b.op("Add", [x[0], _times_recurrence(b, cell, h, 0, "hr")], "g"), 4, -1, "gate"
    )
    if cell.peepholes is not None:
        p_i, p_o, p_f = cell.peepholes
        g_i = b.op("Add", [g_i, b.op("Mul", [p_i, c], "pc")], "gi")
        g_f = b.op("Add", [g_f, b.op("Mul", [p_f, c], "pc")], "gf")
    i, f = _activate(b, cell, 0, g_i, "i"), _activate(b, cell, 0, g_f, "f")
    cand = _activate(b, cell, 1, g_c, "cand")
    c = b.op("Add", [b.op("Mul", [f, c], "fc"), b.op("Mul", [i, cand], "ic")], "c")
    if cell.peepholes is not None:
        g_o = b.op("Add", [g_o, b.op("Mul", [p_o, c], "pc")], "go")
    o = _activate(b, cell, 0, g_o, "o")
    return b.op("Mul", [o, _activate(b, cell, 2, c, "tc", clip=False)], "h"), c


def _projection_biases(
    node: onnx.NodeProto, bias: np.ndarray, hidden: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """(bias added to X @ W^T, bias added to h @ R^T or None): every state bias that is a plain sum
    moves into the input projection, done once for all steps."""
    gates = _GATES[node.op_type]
    wb, rb = bias[: gates * hidden], bias[gates * hidden :]
    if node.op_type == "GRU" and attr(node, "linear_before_reset", 0):
        # z and r add both biases outside any product; the candidate's state bias sits inside r * (.).
        zeros = np.zeros(hidden, np.float32)
        return wb + np.concatenate([rb[: 2 * hidden], zeros]), np.concatenate(
            [zeros, zeros, rb[2 * hidden :]]
        )
    return wb + rb, None


def _cell(
    b: Builder,
    view: OnnxGraph,
    node: onnx.NodeProto,
    k: int,
    acts: list[Activation],
    state_bias: np.ndarray | None,
    flat: _Flat | None,
) -> _Cell:
    kind, hidden = node.op_type, int(attr(node, "hidden_size"))
    r = view.const(node.input[2])[k].astype(np.float32)
    if kind == "GRU" and not attr(node, "linear_before_reset", 0):
        recurrence = [b.const(r[: 2 * hidden].T, "R_zr"), b.const(r[2 * hidden :].T, "R_h")]
    else:
        recurrence = [b.const(r.T, "R")]
    p = view.const(_input(node, 7))
    peepholes = (
        [b.const(v.astype(np.float32), f"P{g}") for v, g in zip(np.split(p[k], 3), "iof", strict=True)]
        if p is not None
        else None
    )
    return _Cell(
        kind,
        acts,
        attr(node, "clip"),
        recurrence,
        b.const(state_bias.astype(np.float32), "hb") if state_bias is not None else None,
        peepholes,
        flat,
    )


def _input_layout(b: Builder, x: Grid) -> tuple[str, bool]:
    """X ([steps, batch, features]) as a tensor for the input projection, and whether that tensor is
    batch-first: whichever of the two layouts needs no transpose (or fewer reshapes)."""
    swapped = transpose(x, (1, 0, 2))
    if cost(swapped) < cost(x):
        return materialize(b, swapped), True
    return materialize(b, x), False


def _initial_states(
    view: OnnxGraph,
    b: Builder,
    node: onnx.NodeProto,
    index: int,
    env: dict[str, Grid],
    state_shape: tuple[int, ...],
) -> list[str]:
    """Per direction, initial state input `index` in the states' layout (zeros when absent)."""
    dirs, layout = len(_directions(node)), attr(node, "layout", 0)
    name = _input(node, index)
    if not name:
        return [b.const(np.zeros(state_shape, np.float32), "zeros")] * dirs
    value = view.const(name)
    if value is not None:
        value = value.transpose(1, 0, 2) if layout else value
        return [b.const(value[k].reshape(state_shape).astype(np.float32), "init") for k in range(dirs)]
    state = _symbolic(view, name, env)
    state = cut(b, transpose(state, (1, 0, 2)) if layout else state, 0)
    states = []
    for k in range(dirs):
        one = reshape(b, select(state, 0, [k], keep_axis=False), state_shape)
        states.append(materialize(b, one))
    return states


def _unroll(view: OnnxGraph, b: Builder, node: onnx.NodeProto, env: dict[str, Grid]) -> dict[str, Grid]:
    """New nodes for `node`; its outputs, by name, as grids of per-step (and per-direction) states."""
    kind, dirs, layout = node.op_type, _directions(node), attr(node, "layout", 0)
    hidden, gates = int(attr(node, "hidden_size")), _GATES[node.op_type]
    x = _symbolic(view, node.input[0], env)
    x = transpose(x, (1, 0, 2)) if layout else x
    steps, batch, _ = x.shape
    x_name, batch_first = _input_layout(b, x)
    # The states take X's layout, so no step needs a transpose.
    time_axis = 1 if batch_first else 0
    state_shape = (batch, 1, hidden) if batch_first else (1, batch, hidden)
    flat = _Flat(
        time_axis,
        b.const(np.array([time_axis], np.int64), "time_axis") if opset_version(view.model) >= 13 else None,
        # [batch, hidden] broadcasts onto [1, batch, hidden], and onto [batch, 1, hidden] for batch 1.
        back=batch_first and batch > 1,
    )
    h_init = _initial_states(view, b, node, 5, env, state_shape)
    c_init = _initial_states(view, b, node, 6, env, state_shape) if kind == "LSTM" else [None] * len(dirs)
    weights = view.const(node.input[1])
    biases = view.const(_input(node, 3))
    if biases is None:
        biases = np.zeros((len(dirs), 2 * gates * hidden), np.float32)

    by_time: list[list[str]] = []  # per direction, the state after each time step (in time order)
    finals: list[tuple[str, str | None]] = []
    for k, (direction, acts) in enumerate(zip(dirs, _activations(node, len(dirs)), strict=True)):
        x_bias, state_bias = _projection_biases(node, biases[k], hidden)
        cell = _cell(b, view, node, k, acts, state_bias, flat)
        xw = b.op("MatMul", [x_name, b.const(weights[k].T.astype(np.float32), "W")], "xw")
        xw = b.op("Add", [xw, b.const(x_bias.astype(np.float32), "xb")], "xwb")
        # Per step, the input part of each gate the step adds separately (GRU: z, r, h; else all).
        parts = b.split(xw, 3, -1, "x_gate") if kind == "GRU" else [xw]
        x_steps = list(zip(*(b.split(p, steps, time_axis, "x_t") for p in parts), strict=True))
        h, c = h_init[k], c_init[k]
        hs: dict[int, str] = {}
        for t in range(steps) if direction == "forward" else reversed(range(steps)):
            if kind == "LSTM":
                h, c = _lstm_step(b, cell, list(x_steps[t]), h, c)
            elif kind == "GRU":
                h = _gru_step(b, cell, list(x_steps[t]), h)
            else:
                h = _rnn_step(b, cell, list(x_steps[t]), h)
            hs[t] = h
        by_time.append([hs[t] for t in range(steps)])
        finals.append((h, c))
    return _output_grids(node, by_time, finals, batch, hidden, state_shape)


def _output_grids(
    node: onnx.NodeProto,
    by_time: list[list[str]],
    finals: list[tuple[str, str | None]],
    batch: int,
    hidden: int,
    state_shape: tuple[int, ...],
) -> dict[str, Grid]:
    """Y [steps, dirs, batch, hidden], Y_h and Y_c [dirs, batch, hidden] (layout 1: batch first) as
    grids whose blocks are the states."""
    dirs, steps = len(by_time), len(by_time[0])
    order = tuple(non1(state_shape))

    def grid(names: dict[tuple[int, ...], str], shape: tuple[int, ...], axes: tuple[int, ...]) -> Grid:
        return regrid(shape, axes, {k: Block(n, state_shape, order) for k, n in names.items()})

    outputs: dict[str, Grid] = {}
    for key, name in zip(("Y", "Y_h", "Y_c"), node.output, strict=False):
        if not name:
            continue
        if key == "Y":
            states = {(t, d): by_time[d][t] for t in range(steps) for d in range(dirs)}
            value = grid(states, (steps, dirs, batch, hidden), (0, 1))
            outputs[name] = transpose(value, (2, 0, 1, 3)) if attr(node, "layout", 0) else value
        else:
            which = 0 if key == "Y_h" else 1
            value = grid({(d,): finals[d][which] for d in range(dirs)}, (dirs, batch, hidden), (0,))
            outputs[name] = transpose(value, (1, 0, 2)) if attr(node, "layout", 0) else value
    return outputs


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _symbolic(view: OnnxGraph, name: str, env: dict[str, Grid]) -> Grid:
    """The grid of a region tensor, or a plain tensor of the graph as one block."""
    if name in env:
        return env[name]
    shape = view.static_shape(name)
    if shape is None:
        raise _Unsupported(f"{name} has no static shape")
    return plain(name, shape)


def _recurrent(node: onnx.NodeProto) -> bool:
    return node.op_type in _GATES and node.domain in ("", "ai.onnx")


@dataclass
class _Region:
    nodes: list[onnx.NodeProto]
    env: dict[str, Grid]
    builder: Builder


def _translate(view: OnnxGraph, nodes: Sequence[onnx.NodeProto], reasons: list[str]) -> _Region:
    """Write out every supported recurrent node of `nodes` (graph order) and absorb the structural ops
    reading their outputs; the input Transpose of a recurrent node is absorbed too."""
    b = Builder(view, "rnn")
    env: dict[str, Grid] = {}
    region: list[onnx.NodeProto] = []
    supported = set()
    for node in nodes:
        if _recurrent(node):
            try:
                _check_node(view, node)
                supported.add(id(node))
            except _Unsupported as exc:
                reasons.append(f"{node.op_type} node {node.name!r} left to onnx2tf: {exc}")
    for node in nodes:
        if id(node) in supported:
            b.prefix = node.name or node.op_type
            try:
                outputs = _unroll(view, b, node, env)
            except _Unsupported as exc:
                reasons.append(f"{node.op_type} node {node.name!r} left to onnx2tf: {exc}")
                continue
            env.update(outputs)
            region.append(node)
        elif node.op_type in STRUCTURAL and node.input and node.input[0] in env:
            value = apply_structural(view, b, node, env)
            if value is not None:
                env[node.output[0]] = value
                region.append(node)
        elif node.op_type == "Transpose" and _feeds_only_recurrent_inputs(view, node, supported):
            shape = view.static_shape(node.input[0])
            if shape is not None:
                env[node.output[0]] = transpose(plain(node.input[0], shape), list(attr(node, "perm")))
                region.append(node)
    return _Region(region, env, b)


def _feeds_only_recurrent_inputs(view: OnnxGraph, node: onnx.NodeProto, supported: set[int]) -> bool:
    readers = view.consumers(node.output[0])
    return (
        bool(readers)
        and attr(node, "perm") is not None
        and not view.is_graph_output(node.output[0])
        and all(id(r) in supported and r.input[0] == node.output[0] for r in readers)
    )


def _components(view: OnnxGraph, region: list[onnx.NodeProto]) -> list[list[onnx.NodeProto]]:
    """The region's nodes grouped by the tensors they pass each other (graph order kept)."""
    parent = list(range(len(region)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {o: i for i, n in enumerate(region) for o in n.output if o}
    for i, node in enumerate(region):
        for name in node.input:
            if name in producer:
                parent[root(i)] = root(producer[name])
    groups: dict[int, list[onnx.NodeProto]] = {}
    for i, node in enumerate(region):
        groups.setdefault(root(i), []).append(node)
    return list(groups.values())


def _batch_major_as_time_major(view: OnnxGraph, node: onnx.NodeProto) -> list[onnx.NodeProto]:
    """`node` with layout=1 as the same node with layout=0 between transposes, which onnxruntime can
    run (it refuses layout=1), to check the replacement against."""
    if not _recurrent(node) or not attr(node, "layout", 0):
        return [node]
    swapped = onnx.NodeProto()
    swapped.CopyFrom(node)
    for a in swapped.attribute:
        if a.name == "layout":
            a.i = 0
    before, after = [], []
    for i in (0, 5, 6):
        if _input(node, i):
            swapped.input[i] = view.fresh(f"{node.input[i]}_time_major")
            before.append(helper.make_node("Transpose", [node.input[i]], [swapped.input[i]], perm=[1, 0, 2]))
    for i, name in enumerate(node.output):
        if name:
            swapped.output[i] = view.fresh(f"{name}_time_major")
            perm = [2, 0, 1, 3] if i == 0 else [1, 0, 2]
            after.append(helper.make_node("Transpose", [swapped.output[i]], [name], perm=perm))
    return [*before, swapped, *after]


def _replacement(
    view: OnnxGraph, nodes: list[onnx.NodeProto], reasons: list[str]
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]] | None:
    """One component translated again on its own: its new nodes and initializers when onnxruntime
    agrees with the nodes they replace, else None (and the reason)."""
    first = next(n for n in nodes if _recurrent(n))
    why = f"{first.op_type} node {first.name!r} left to onnx2tf"
    try:
        region = _translate(view, nodes, [])
        if len(region.nodes) != len(nodes):
            raise _Unsupported("its region translates differently on its own")
        ids = {id(n) for n in nodes}
        produced = {o for n in nodes for o in n.output if o}
        outs = [
            o
            for o in sorted(produced)
            if view.is_graph_output(o) or any(id(r) not in ids for r in view.consumers(o))
        ]
        b = region.builder
        for o in outs:
            materialize(b, region.env[o], out=o)
    except _Unsupported as exc:
        reasons.append(f"{why}: {exc}")
        return None
    except Exception as exc:  # a rewrite never stops a conversion: onnx2tf gets the node as it is
        reasons.append(f"{why} (rnn_unroll failed: {type(exc).__name__}: {exc})")
        return None
    reference = [r for n in nodes for r in _batch_major_as_time_major(view, n)]
    if not outs or not replacement_agrees(view, reference, b.nodes, b.inits, outs, _CHECK_TOLERANCE):
        reasons.append(f"{why}: its written-out replacement does not agree with onnxruntime")
        return None
    return b.nodes, b.inits


def rewrite_with_reasons(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The rewritten model and, for each recurrent node left to onnx2tf, why."""
    view = OnnxGraph(model)
    reasons: list[str] = []
    if not any(_recurrent(n) for n in view.graph.node):
        return view.finish(), reasons
    try:
        components = _components(view, _translate(view, list(view.graph.node), reasons).nodes)
    except Exception as exc:  # a rewrite never stops a conversion: onnx2tf gets the node as it is
        components = []
        reasons.append(f"rnn_unroll failed ({type(exc).__name__}: {exc}); recurrent nodes left to onnx2tf")
    old: list[onnx.NodeProto] = []
    new: list[onnx.NodeProto] = []
    for nodes in components:
        if not any(_recurrent(n) for n in nodes):
            continue
        replacement = _replacement(view, nodes, reasons)
        if replacement is not None:
            old += nodes
            new += replacement[0]
            view.graph.initializer.extend(replacement[1])
    for reason in reasons:
        _LOG.warning(reason)
    if not old:
        return OnnxGraph(model).finish(), reasons
    view.replace(old, new)
    return view.finish(), reasons


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    return rewrite_with_reasons(model)[0]
