"""GRU / LSTM / RNN nodes -> the recurrence written out step by step in plain ops (no loop).

onnx2tf translates a recurrent node into a TFLite WHILE loop, on which the TFLite Micro interpreter
hangs, or (with `enable_rnn_unroll`) into ~20 ops per time step; it also takes every 4-D tensor for an
image and transposes it. Written out here instead:

* the input projection `X @ W^T + b` for every time step and direction in one MatMul (the state
  biases that are plain sums folded into it), then one Split into steps; the MatMul reads X in the
  layout it arrives in (time-major, or batch-first through the exporter's Transpose), and the states
  are kept in that same layout, so no step needs a transpose;
* per step only the state projection `h @ R^T`, one equal-parts Split into gates and the gate
  arithmetic (GRU and LSTM 12 ops, RNN 3).

The node's outputs are never built as the tensors ONNX defines (Y is 4-D: [steps, directions, batch,
hidden]). Each output is kept as a grid of per-step, per-direction states (`_Blocked`), and the
structural ops that read it (Squeeze, Unsqueeze, Reshape, Flatten, Transpose, Gather, Slice, Concat,
Identity) are applied to the grid instead of to data. A tensor is assembled, with one Concat per grid
axis, only where an ordinary op or a graph output reads it. So whichever way an exporter spells it,
`y[:, -1]`, `h_n[-1]`, a bidirectional sequence, stacked layers (one node per layer) and state outputs
cost no ops of their own, and a step nothing reads is pruned (`y[:, -1]` of a backward pass needs one).

Handled: GRU (either `linear_before_reset`), LSTM (with peepholes), RNN; forward, reverse and
bidirectional; `layout` 0 and 1; initial states as constants, model inputs or computed tensors; the
activations Sigmoid, Tanh, Relu, HardSigmoid, LeakyRelu, Elu, Softsign and Softplus; `clip`;
`sequence_lens` when every sequence is full length. Left to onnx2tf, with the reason (`reasons_left`):
sequence lengths shorter than the sequence, `input_forget`, other activations, weights that are not
constants, shapes that are not static. Every replacement is checked against the region it replaces with
onnxruntime on random inputs; one that disagrees is not applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, attr

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
_STRUCTURAL = {
    "Squeeze",
    "Unsqueeze",
    "Reshape",
    "Flatten",
    "Transpose",
    "Gather",
    "Slice",
    "Concat",
    "Identity",
}


class _Unsupported(Exception):
    """Why a node or a region is left to onnx2tf (one line, shown to the user)."""


# --- symbolic tensors: grids of blocks -------------------------------------------------------------


def _non1(shape: Sequence[int]) -> list[int]:
    return [a for a, s in enumerate(shape) if s != 1]


@dataclass(frozen=True)
class _Block:
    """A tensor of the new graph standing for one block of a logical tensor: the logical block is
    `transpose(tensor, ...)` reshaped, where `order` lists the tensor's axes of size > 1 in the order
    the logical block has them (increasing: a reshape suffices)."""

    name: str
    shape: tuple[int, ...]
    order: tuple[int, ...]

    @property
    def in_order(self) -> bool:
        return list(self.order) == sorted(self.order)


@dataclass(frozen=True, eq=False)
class _Blocked:
    """A logical tensor of `shape` cut along the `grid` axes into blocks of size 1 on those axes;
    `blocks` maps each index over the grid axes (in grid order) to its block."""

    shape: tuple[int, ...]
    grid: tuple[int, ...]
    blocks: dict[tuple[int, ...], _Block]

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.grid else s for a, s in enumerate(self.shape))


def _plain(name: str, shape: Sequence[int]) -> _Blocked:
    return _Blocked(tuple(shape), (), {(): _Block(name, tuple(shape), tuple(_non1(shape)))})


def _make(shape: Sequence[int], grid: Sequence[int], blocks: dict[tuple[int, ...], _Block]) -> _Blocked:
    """A _Blocked with grid axes of size 1 dropped (their blocks are the whole axis)."""
    keep = [i for i, a in enumerate(grid) if shape[a] != 1]
    if len(keep) == len(grid):
        return _Blocked(tuple(shape), tuple(grid), blocks)
    return _Blocked(
        tuple(shape), tuple(grid[i] for i in keep), {tuple(k[i] for i in keep): b for k, b in blocks.items()}
    )


def _transpose(x: _Blocked, perm: Sequence[int]) -> _Blocked:
    perm = list(perm)
    where = [perm.index(a) for a in range(len(perm))]  # old axis -> new axis
    new_grid = sorted(where[g] for g in x.grid)
    rekey = [x.grid.index(perm[a]) for a in new_grid]
    old_block_axes = _non1(x.block_shape)
    blocks = {}
    for key, b in x.blocks.items():
        by_new_axis = sorted(zip((where[a] for a in old_block_axes), b.order, strict=True))
        blocks[tuple(key[i] for i in rekey)] = _Block(b.name, b.shape, tuple(s for _, s in by_new_axis))
    return _Blocked(tuple(x.shape[p] for p in perm), tuple(new_grid), blocks)


def _reshape(b: _Builder, x: _Blocked, shape: Sequence[int]) -> _Blocked | None:
    """`x` reshaped; None when the reshape mixes grid and block axes in a way a grid cannot show."""
    old, new = _non1(x.shape), _non1(shape)
    if [x.shape[a] for a in old] == [shape[a] for a in new]:  # only axes of size 1 come or go
        axis_map = dict(zip(old, new, strict=True))
        return _Blocked(tuple(shape), tuple(axis_map[g] for g in x.grid), dict(x.blocks))
    # One grid axis merged with the block axis after it ([.., dirs, hidden] -> [.., dirs*hidden]): the
    # blocks along that grid axis are concatenated.
    for i in range(len(old) - 1):
        g, a = old[i], old[i + 1]
        merged = [
            *(x.shape[k] for k in old[:i]),
            x.shape[g] * x.shape[a],
            *(x.shape[k] for k in old[i + 2 :]),
        ]
        if g not in x.grid or a in x.grid or merged != [shape[k] for k in new]:
            continue
        inner = x.block_shape
        grid_pos = x.grid.index(g)
        block_axes = _non1(inner)
        axis_map = dict(zip([*old[:i], *old[i + 1 :]], new, strict=True))
        blocks = {}
        for key, first in x.blocks.items():
            if key[grid_pos] != 0:
                continue
            parts = [x.blocks[(*key[:grid_pos], j, *key[grid_pos + 1 :])] for j in range(x.shape[g])]
            if any(p.shape != first.shape or p.order != first.order for p in parts):
                return None
            actual_axis = first.order[block_axes.index(a)]
            name = b.op("Concat", [p.name for p in parts], "cat", axis=actual_axis)
            merged_shape = list(first.shape)
            merged_shape[actual_axis] *= len(parts)
            blocks[(*key[:grid_pos], *key[grid_pos + 1 :])] = _Block(name, tuple(merged_shape), first.order)
        grid = tuple(axis_map[k] for k in x.grid if k != g)
        return _Blocked(tuple(shape), grid, blocks)
    return None


def _select(x: _Blocked, axis: int, indices: list[int], keep_axis: bool) -> _Blocked | None:
    """Blocks at `indices` along `axis` (a grid axis, or one of size 1); `keep_axis` False drops it."""
    if axis in x.grid:
        pos = x.grid.index(axis)
        blocks = {}
        for new_i, old_i in enumerate(indices):
            for key, blk in x.blocks.items():
                if key[pos] == old_i:
                    blocks[(*key[:pos], *([new_i] if keep_axis else []), *key[pos + 1 :])] = blk
    elif x.shape[axis] == 1 and all(i == 0 for i in indices):
        blocks = dict(x.blocks)
        if keep_axis and len(indices) > 1:
            return None
    else:
        return None
    shape = list(x.shape)
    grid = list(x.grid)
    if keep_axis:
        shape[axis] = len(indices)
    else:
        del shape[axis]
        grid = [g - (g > axis) for g in grid if g != axis]
    return _make(shape, grid, blocks)


def _concat(parts: Sequence[_Blocked], axis: int) -> _Blocked | None:
    """Concatenation along `axis`, a grid axis of each part (or of size 1 in it)."""
    first = parts[0]
    others = [g for g in first.grid if g != axis]
    shape = list(first.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    blocks: dict[tuple[int, ...], _Block] = {}
    grid = sorted({*others, axis})
    pos = grid.index(axis)
    offset = 0
    for p in parts:
        if [g for g in p.grid if g != axis] != others or any(
            p.shape[a] != first.shape[a] for a in range(len(shape)) if a != axis
        ):
            return None
        if axis not in p.grid and p.shape[axis] != 1:
            return None
        p_pos = p.grid.index(axis) if axis in p.grid else None
        for key, blk in p.blocks.items():
            rest = tuple(k for i, k in enumerate(key) if i != p_pos)
            index = offset + (key[p_pos] if p_pos is not None else 0)
            blocks[(*rest[:pos], index, *rest[pos:])] = blk
        offset += p.shape[axis]
    return _make(shape, grid, blocks)


# --- building new nodes ----------------------------------------------------------------------------


class _Builder:
    def __init__(self, view: OnnxGraph, prefix: str) -> None:
        self.view, self.prefix = view, prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, value: np.ndarray, hint: str) -> str:
        name = self.view.fresh(f"{self.prefix}_{hint}")
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str, out: str | None = None, **kw) -> str:
        return self.ops(op_type, inputs, hint, 1, [out] if out else None, **kw)[0]

    def ops(
        self, op_type: str, inputs: list[str], hint: str, outputs: int, names: list[str] | None = None, **kw
    ) -> list[str]:
        names = names or [self.view.fresh(f"{self.prefix}_{hint}") for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.view.fresh(self.prefix), **kw))
        return names

    def split(self, tensor: str, parts: int, axis: int, hint: str) -> list[str]:
        # Equal parts with no `split` input: onnx2tf emits one SPLIT (sizes make it a STRIDED_SLICE each).
        return [tensor] if parts == 1 else self.ops("Split", [tensor], hint, parts, axis=axis)

    def reshape(self, tensor: str, shape: Sequence[int], hint: str, out: str | None = None) -> str:
        return self.op("Reshape", [tensor, self.const(np.array(shape, np.int64), "shape")], hint, out=out)


def _block_as(b: _Builder, blk: _Block, shape: tuple[int, ...], out: str | None = None) -> str:
    """The block's tensor with the logical block `shape` (a Transpose only when its order needs one)."""
    name = blk.name
    if not blk.in_order:
        rest = [a for a in range(len(blk.shape)) if a not in blk.order]
        perm = [*rest, *blk.order]
        if shape == tuple(blk.shape[p] for p in perm):
            return b.op("Transpose", [name], "t", out=out, perm=perm)
        name = b.op("Transpose", [name], "t", perm=perm)
    elif shape == blk.shape:
        return b.op("Identity", [name], "id", out=out) if out else name
    return b.reshape(name, shape, "r", out=out)


def _materialize(b: _Builder, x: _Blocked, out: str | None = None) -> str:
    """The logical tensor: each block in its logical shape, concatenated along the grid axes."""
    inner = x.block_shape

    def assemble(prefix: tuple[int, ...], out: str | None) -> str:
        level = len(prefix)
        if level == len(x.grid):
            return _block_as(b, x.blocks[prefix], inner, out)
        parts = [assemble((*prefix, i), None) for i in range(x.shape[x.grid[level]])]
        return b.op("Concat", parts, "cat", out=out, axis=x.grid[level])

    return assemble((), out)


def _cost(x: _Blocked) -> int:
    """Transposes and reshapes `_materialize` would emit."""
    inner = x.block_shape
    return sum(2 * (not blk.in_order) + (blk.shape != inner) for blk in x.blocks.values())


def _cut(b: _Builder, x: _Blocked, axis: int) -> _Blocked:
    """`x` with `axis` made a grid axis (one Split of the assembled tensor when it is not one yet)."""
    if axis in x.grid or x.shape[axis] == 1:
        return x
    parts = b.split(_materialize(b, x), x.shape[axis], axis, "cut")
    shape = list(x.shape)
    inner = list(shape)
    inner[axis] = 1
    return _Blocked(
        tuple(shape),
        (axis,),
        {(i,): _Block(p, tuple(inner), tuple(_non1(inner))) for i, p in enumerate(parts)},
    )


# --- the recurrent node ----------------------------------------------------------------------------


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _directions(node: onnx.NodeProto) -> list[str]:
    value = attr(node, "direction", b"forward")
    dirs = _DIRECTIONS.get(value.decode() if isinstance(value, bytes) else str(value))
    if dirs is None:
        raise _Unsupported(f"direction {value!r}")
    return dirs


def _activations(node: onnx.NodeProto, directions: int) -> list[list[tuple[str, dict[str, float]]]]:
    """Per direction, the (op, attributes) of each activation (GRU f, g; LSTM f, g, h; RNN f)."""
    raw = attr(node, "activations")
    names = [a.decode() if isinstance(a, bytes) else a for a in raw] if raw else []
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


def _activate(b: _Builder, act: tuple[str, dict[str, float]], x: str, hint: str) -> str:
    return b.op(act[0], [x], hint, **act[1])


def _unroll(
    view: OnnxGraph, b: _Builder, node: onnx.NodeProto, env: dict[str, _Blocked]
) -> dict[str, _Blocked]:
    """New nodes for `node`; its outputs ('Y', 'Y_h', 'Y_c' as named in the graph) as grids."""
    kind, dirs, layout = node.op_type, _directions(node), attr(node, "layout", 0)
    acts = _activations(node, len(dirs))
    hidden = int(attr(node, "hidden_size"))
    gates = _GATES[kind]
    clip = attr(node, "clip")

    x = _symbolic(view, node.input[0], env)
    if layout == 1:
        x = _transpose(x, (1, 0, 2))
    steps, batch, _ = x.shape
    # Read X in whichever layout needs no transpose (time-major, or batch-first as it arrived); the
    # states take that layout too: [1, batch, hidden] or [batch, 1, hidden].
    batch_first = _cost(_transpose(x, (1, 0, 2))) < _cost(x)
    x_name = _materialize(b, _transpose(x, (1, 0, 2)) if batch_first else x)
    time_axis = 1 if batch_first else 0
    state_shape = (batch, 1, hidden) if batch_first else (1, batch, hidden)

    weights, recurrences = view.const(node.input[1]), view.const(node.input[2])
    biases = view.const(_input(node, 3))
    if biases is None:
        biases = np.zeros((len(dirs), 2 * gates * hidden), np.float32)
    peepholes = view.const(_input(node, 7))

    def initial(index: int, hint: str) -> list[str]:
        """Per direction, the initial state in the state layout (zeros when the input is absent)."""
        name = _input(node, index)
        if not name:
            return [b.const(np.zeros(state_shape, np.float32), hint)] * len(dirs)
        value = view.const(name)
        if value is not None:
            if layout == 1:
                value = value.transpose(1, 0, 2)
            return [b.const(value[k].reshape(state_shape).astype(np.float32), hint) for k in range(len(dirs))]
        state = _symbolic(view, name, env)
        if layout == 1:
            state = _transpose(state, (1, 0, 2))
        state = _cut(b, state, 0)
        out = []
        for k in range(len(dirs)):
            one = _select(state, 0, [k], keep_axis=False)
            one = _reshape(b, one, (batch, hidden))
            one = _reshape(b, one, state_shape)
            out.append(_materialize(b, one))
        return out

    def clipped(t: str) -> str:
        if clip is None:
            return t
        lo, hi = b.const(np.array(-clip, np.float32), "lo"), b.const(np.array(clip, np.float32), "hi")
        return b.op("Clip", [t, lo, hi], "clip")

    h_init = initial(5, "h0")
    c_init = initial(6, "c0") if kind == "LSTM" else [None] * len(dirs)
    by_time: list[list[str]] = []  # per direction, the state after each time step (in time order)
    finals: list[tuple[str, str | None]] = []
    for k, direction in enumerate(dirs):
        f_act, *other_acts = acts[k]
        w, r, bias = weights[k], recurrences[k], biases[k]
        wb, rb = bias[: gates * hidden], bias[gates * hidden :]
        lbr = kind == "GRU" and attr(node, "linear_before_reset", 0)
        if kind == "GRU" and lbr:
            # z and r add both biases outside any product; the candidate's state bias sits inside r * (.).
            x_bias = wb + np.concatenate([rb[: 2 * hidden], np.zeros(hidden, np.float32)])
            h_bias = np.concatenate([np.zeros(2 * hidden, np.float32), rb[2 * hidden :]])
        else:
            x_bias, h_bias = wb + rb, None
        xw = b.op("MatMul", [x_name, b.const(w.T.astype(np.float32), "W")], "xw")
        xw = b.op("Add", [xw, b.const(x_bias.astype(np.float32), "xb")], "xwb")
        if kind == "GRU":
            # The gates' input parts, per gate then per step.
            xg = [b.split(g, steps, time_axis, "x_t") for g in b.split(xw, 3, -1, "x_gate")]
        else:
            xs = b.split(xw, steps, time_axis, "x_t")
        h, c = h_init[k], c_init[k]
        if kind == "GRU" and not lbr:
            r_zr = b.const(r[: 2 * hidden].T.astype(np.float32), "R_zr")
            r_n = b.const(r[2 * hidden :].T.astype(np.float32), "R_n")
        else:
            rt = b.const(r.T.astype(np.float32), "R")
        hb = b.const(h_bias.astype(np.float32), "hb") if h_bias is not None else None
        if peepholes is not None:
            p_i, p_o, p_f = (
                b.const(p.astype(np.float32), f"p{g}")
                for p, g in zip(np.split(peepholes[k], 3), "iof", strict=True)
            )
        hs: dict[int, str] = {}
        for t in range(steps) if direction == "forward" else reversed(range(steps)):
            if kind == "RNN":
                pre = b.op("Add", [xs[t], b.op("MatMul", [h, rt], "hr")], "pre")
                h = _activate(b, f_act, clipped(pre), "h")
            elif kind == "GRU":
                g_act = other_acts[0]
                if lbr:
                    h_z, h_r, h_n = b.split(
                        b.op("Add", [b.op("MatMul", [h, rt], "hr"), hb], "hrb"), 3, -1, "h_gate"
                    )
                else:
                    h_z, h_r = b.split(b.op("MatMul", [h, r_zr], "hr"), 2, -1, "h_gate")
                z = _activate(b, f_act, clipped(b.op("Add", [xg[0][t], h_z], "z_in")), "z")
                r_gate = _activate(b, f_act, clipped(b.op("Add", [xg[1][t], h_r], "r_in")), "r")
                if lbr:
                    rh = b.op("Mul", [r_gate, h_n], "rh")
                else:
                    rh = b.op("MatMul", [b.op("Mul", [r_gate, h], "rh_in"), r_n], "rh")
                n = _activate(b, g_act, clipped(b.op("Add", [xg[2][t], rh], "n_in")), "n")
                # h' = (1 - z) * n + z * h == n + z * (h - n)
                h = b.op("Add", [n, b.op("Mul", [z, b.op("Sub", [h, n], "h_n")], "zh")], "h")
            else:
                g_act, h_act = other_acts
                g_i, g_o, g_f, g_c = b.split(
                    b.op("Add", [xs[t], b.op("MatMul", [h, rt], "hr")], "g"), 4, -1, "gate"
                )
                if peepholes is not None:
                    g_i = b.op("Add", [g_i, b.op("Mul", [p_i, c], "pc")], "gi")
                    g_f = b.op("Add", [g_f, b.op("Mul", [p_f, c], "pc")], "gf")
                i = _activate(b, f_act, clipped(g_i), "i")
                f = _activate(b, f_act, clipped(g_f), "f")
                cand = _activate(b, g_act, clipped(g_c), "cand")
                c = b.op("Add", [b.op("Mul", [f, c], "fc"), b.op("Mul", [i, cand], "ic")], "c")
                if peepholes is not None:
                    g_o = b.op("Add", [g_o, b.op("Mul", [p_o, c], "pc")], "go")
                o = _activate(b, f_act, clipped(g_o), "o")
                h = b.op("Mul", [o, _activate(b, h_act, c, "tc")], "h")
            hs[t] = h
        by_time.append([hs[t] for t in range(steps)])
        finals.append((h, c))

    order = tuple(_non1(state_shape))

    def grid(
        names: dict[tuple[int, ...], str], shape: tuple[int, ...], grid_axes: tuple[int, ...]
    ) -> _Blocked:
        return _make(shape, grid_axes, {k: _Block(n, state_shape, order) for k, n in names.items()})

    outputs: dict[str, _Blocked] = {}
    keys = ["Y", "Y_h", "Y_c"]
    for key, name in zip(keys, node.output, strict=False):
        if not name:
            continue
        if key == "Y":
            value = grid(
                {(t, d): by_time[d][t] for t in range(steps) for d in range(len(dirs))},
                (steps, len(dirs), batch, hidden),
                (0, 1),
            )
            outputs[name] = _transpose(value, (2, 0, 1, 3)) if layout == 1 else value
        else:
            which = 0 if key == "Y_h" else 1
            value = grid({(d,): finals[d][which] for d in range(len(dirs))}, (len(dirs), batch, hidden), (0,))
            outputs[name] = _transpose(value, (1, 0, 2)) if layout == 1 else value
    return outputs


# --- structural ops on grids -----------------------------------------------------------------------


def _symbolic(view: OnnxGraph, name: str, env: dict[str, _Blocked]) -> _Blocked:
    """The grid of a region tensor, or a plain tensor of the graph as one block."""
    if name in env:
        return env[name]
    shape = view.static_shape(name)
    if shape is None:
        raise _Unsupported(f"{name} has no static shape")
    return _plain(name, shape)


def _ints(view: OnnxGraph, node: onnx.NodeProto, index: int, attribute: str) -> list[int] | None:
    value = view.const(_input(node, index)) if _input(node, index) else attr(node, attribute)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def _structural(
    view: OnnxGraph, b: _Builder, node: onnx.NodeProto, env: dict[str, _Blocked]
) -> _Blocked | None:
    """`node` applied to grids, or None when its result cannot stay a grid."""
    out_shape = view.static_shape(node.output[0])
    if out_shape is None or len(node.output) != 1:
        return None
    op = node.op_type
    if op == "Concat":
        if not all(i in env for i in node.input):
            return None
        axis = int(attr(node, "axis")) % len(out_shape)
        return _concat([env[i] for i in node.input], axis)
    x = env[node.input[0]]
    if any(i in env for i in node.input[1:]):
        return None
    if op in ("Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity"):
        return _reshape(b, x, out_shape)
    if op == "Transpose":
        perm = attr(node, "perm") or list(reversed(range(len(x.shape))))
        return _transpose(x, list(perm))
    if op == "Gather":
        indices = view.const(_input(node, 1))
        if indices is None or indices.ndim > 1:
            return None
        axis = int(attr(node, "axis", 0)) % len(x.shape)
        picked = [int(i) % x.shape[axis] for i in indices.reshape(-1)]
        return _select(x, axis, picked, keep_axis=indices.ndim == 1)
    if op == "Slice":
        starts, ends = _ints(view, node, 1, "starts"), _ints(view, node, 2, "ends")
        axes = _ints(view, node, 3, "axes") or list(range(len(starts or [])))
        steps = _ints(view, node, 4, "steps") or [1] * len(axes)
        if starts is None or ends is None or len({len(starts), len(ends), len(axes), len(steps)}) != 1:
            return None
        for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
            axis %= len(x.shape)
            picked = list(range(*slice(start, end, step).indices(x.shape[axis])))
            if picked == list(range(x.shape[axis])):
                continue
            x = _select(x, axis, picked, keep_axis=True)
            if x is None:
                return None
        return x
    return None


# --- the pass --------------------------------------------------------------------------------------


def _recurrent(node: onnx.NodeProto) -> bool:
    return node.op_type in _GATES and node.domain in ("", "ai.onnx")


@dataclass
class _Region:
    nodes: list[onnx.NodeProto]
    env: dict[str, _Blocked]
    builder: _Builder


def _translate(view: OnnxGraph, nodes: Sequence[onnx.NodeProto], reasons: list[str]) -> _Region:
    """Write out every supported recurrent node of `nodes` (graph order) and absorb the structural ops
    reading their outputs; the input Transpose of a recurrent node is absorbed too."""
    b = _Builder(view, "rnn")
    env: dict[str, _Blocked] = {}
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
        elif node.op_type in _STRUCTURAL and node.input and node.input[0] in env:
            value = _structural(view, b, node, env)
            if value is not None:
                env[node.output[0]] = value
                region.append(node)
        elif node.op_type == "Transpose" and _feeds_only_recurrent_inputs(view, node, supported):
            shape = view.static_shape(node.input[0])
            if shape is not None:
                env[node.output[0]] = _transpose(_plain(node.input[0], shape), list(attr(node, "perm")))
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
            _materialize(b, region.env[o], out=o)
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


def reasons_left(model: onnx.ModelProto) -> list[str]:
    """Why each recurrent node of `model` that this rewrite leaves alone is left (empty: none is)."""
    return rewrite_with_reasons(model)[1]
