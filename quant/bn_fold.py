"""Batch-norm folding as an ONNX pass: remove every BN that can be removed exactly.

A batch norm at inference is a per-channel affine map y = a*x + b (a = gamma/sqrt(var+eps),
b = beta - mean*a). Following Yvinec et al. 2022 ("To fold or not to fold", arXiv 2203.14646), a BN
can be removed iff the affine can be absorbed by linear layers on one side of it such that every
path between the BN and those layers only crosses ops that commute with the affine, and every other
reader of a tensor whose value changes is compensated. This pass searches both directions:

* backward: push (a, b) up to the producing Conv / ConvTranspose / Gemm / MatMul, through
  Add/Sub (both branches: one takes (a, b), the other (a, 0)), Concat (the affine is split per
  input), MaxPool (a > 0), Average/GlobalAveragePool, Relu/LeakyRelu/PRelu/Clip (a > 0 and b = 0
  only: a shift does not commute with a ReLU) and shape ops that keep the channel axis. A tensor
  whose value changes but that other nodes also read is compensated by folding the inverse affine
  forward into those readers; if they cannot absorb it exactly, the fold is refused.
* forward: fold (a, b) into the Conv / ConvTranspose / Gemm / MatMul that read the BN output
  (through the same shape ops and pools). The scale always folds; the shift only when the layer
  does not zero-pad (a padded border would see 0 instead of b: not exact, so refused).

A BN that folds nowhere becomes ONE op: a depthwise 1x1 Conv on 4-D tensors (onnx2tf emits a single
DEPTHWISE_CONV_2D; a Mul+Add pair becomes MUL+ADD plus sometimes a TRANSPOSE), else one Mul+Add.
Degenerate statistics (non-finite values, var+eps <= 0) are warned about and left as they are.
Exporters may already have turned BNs into Mul-by-constant + Add-constant pairs: those are
recognised and handled the same way.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, set_attr, text_attr

LINEAR_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
SHAPE_OPS = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Identity", "Dropout")
_FLOATS = (np.float32, np.float64, np.float16)


@dataclass
class Affine:
    """y = scale * x + shift along axis `axis` of a rank-`rank` tensor (float64 vectors)."""

    scale: np.ndarray
    shift: np.ndarray
    axis: int
    rank: int

    @property
    def channels(self) -> int:
        return int(self.scale.shape[0])

    def has_shift(self) -> bool:
        return bool(np.any(self.shift != 0))

    def invertible(self) -> bool:
        return bool(np.all(self.scale != 0) and np.all(np.isfinite(1.0 / self.scale)))

    def inverse(self) -> Affine:
        return Affine(1.0 / self.scale, -self.shift / self.scale, self.axis, self.rank)

    def with_axis(self, axis: int, rank: int) -> Affine:
        return Affine(self.scale, self.shift, axis, rank)

    def scale_only(self) -> Affine:
        return Affine(self.scale, np.zeros_like(self.shift), self.axis, self.rank)

    def broadcast_shape(self) -> list[int]:
        """Shape that broadcasts a per-channel vector against the tensor (NumPy/ONNX rules)."""
        return [self.channels] + [1] * (self.rank - self.axis - 1)


@dataclass
class BnFoldReport:
    found: list[dict[str, Any]] = field(default_factory=list)
    folded: list[dict[str, Any]] = field(default_factory=list)
    left: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Pre-activation statistics (mean beta, std |gamma|) of tensors that a BN was folded into,
    # keyed by tensor name: what data-free high-bias absorption (equalize.absorb_high_bias) needs.
    activation_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": "fold_batch_norms",
            "found": len(self.found),
            "folded": len(self.folded),
            "left": len(self.left),
            "folded_detail": self.folded,
            "left_detail": self.left,
            "warnings": self.warnings,
        }


class Plan:
    """Pending weight edits for one fold; nothing touches the graph until `commit`.

    Edits to the same node compose (an output-channel scale and an input-channel scale of one conv
    commute), so each reads the pending value left by the previous one.
    """

    def __init__(self, g: OnnxGraph) -> None:
        self.g = g
        self.values: dict[tuple[int, int], tuple[onnx.NodeProto, int, np.ndarray]] = {}
        self.structural: list = []
        self.tensors: set[str] = set()
        self.into: list[str] = []
        self.via: list[str] = []
        self.folded_stats: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def snapshot(self) -> tuple:
        return (dict(self.values), list(self.structural), set(self.tensors), list(self.into), list(self.via))

    def restore(self, state: tuple) -> None:
        self.values, self.structural, self.tensors, self.into, self.via = (
            dict(state[0]),
            list(state[1]),
            set(state[2]),
            list(state[3]),
            list(state[4]),
        )

    def get(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        key = (id(node), index)
        if key in self.values:
            return self.values[key][2]
        return self.g.input_const(node, index)

    def put(self, node: onnx.NodeProto, index: int, value: np.ndarray) -> None:
        self.values[(id(node), index)] = (node, index, value)

    def visit(self, tensor: str) -> bool:
        """Mark `tensor` as changed by this plan; False if it already was (two paths meet)."""
        if tensor in self.tensors:
            return False
        self.tensors.add(tensor)
        return True

    def finite(self) -> bool:
        return all(np.all(np.isfinite(v)) for _, _, v in self.values.values())

    def commit(self) -> None:
        for node, index, value in self.values.values():
            self.g.set_input_const(node, index, value, hint=f"{node.name}_folded{index}")
        for edit in self.structural:
            edit()
        self.g.reindex()


def _float_weight(value: np.ndarray | None) -> bool:
    return value is not None and value.dtype.type in _FLOATS


def _as(value: np.ndarray, like: np.ndarray | None) -> np.ndarray:
    dtype = like.dtype if like is not None and like.dtype.type in _FLOATS else np.float32
    return np.asarray(value).astype(dtype)


def has_padding(node: onnx.NodeProto) -> bool:
    """Whether a Conv / pool zero-pads its input (explicit pads or a SAME auto_pad)."""
    if text_attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return True
    return any(p != 0 for p in attr(node, "pads", []) or [])


def _map_axis(src: list[int] | None, dst: list[int] | None, axis: int) -> int | None:
    """Axis of `dst` holding the same channels as `axis` of `src` after a reshape, if any."""
    if src is None or dst is None or axis >= len(src):
        return None
    before = int(np.prod(src[:axis]))
    for j in range(len(dst)):
        if int(np.prod(dst[:j])) == before and dst[j] == src[axis]:
            return j
    return None


class Folder:
    """Moves a per-channel affine through the graph into linear layers: `back` into what produces a
    tensor, `fwd` into what reads it; every weight edit goes into a Plan (also used by equalize.py)."""

    def __init__(self, g: OnnxGraph) -> None:
        self.g = g

    # ----- backward: make tensor `t` hold A(t) ------------------------------------------------------
    def back(self, plan: Plan, t: str, A: Affine, came_from: onnx.NodeProto, depth: int = 0) -> str | None:
        g = self.g
        if depth > 64:
            return "path too long"
        if g.is_graph_output(t):
            return f"tensor {t} is a graph output"
        if g.is_graph_input(t):
            return "reaches the graph input"
        if not plan.visit(t):
            return f"tensor {t} reached twice"
        node = g.producer(t)
        if node is None or node.op_type == "Constant" or g.is_initializer(t):
            return f"tensor {t} is a constant"
        # Other readers of t would see A(t): compensate them with the inverse, or refuse.
        others = [c for c in g.consumers(t) if c is not came_from]
        if others:
            if not A.invertible():
                return f"tensor {t} has other readers and the scale has zeros"
            for c in others:
                why = self.fwd_consumer(plan, c, t, A.inverse(), depth + 1)
                if why:
                    return f"other reader {c.name} of {t}: {why}"
        op = node.op_type
        if op in LINEAR_OPS:
            why = self.absorb_out(plan, node, A)
            if why is None:
                plan.into.append(node.name)
            return why
        if op in ("Add", "Sub"):
            return self._back_add(plan, node, A, depth)
        if op == "Concat":
            return self._back_concat(plan, node, A, depth)
        if op in ("Relu", "LeakyRelu", "PRelu", "Clip"):
            if A.has_shift():
                return f"a shift does not commute with {op} {node.name}"
            if not np.all(A.scale > 0):
                return f"a non-positive scale cannot pass through {op} {node.name}"
            if op == "PRelu" and g.const(node.input[1]) is None:
                return f"PRelu {node.name} has a non-constant slope"
            if op == "Clip":
                why = self._scale_clip(plan, node, A)
                if why:
                    return why
            plan.via.append(op)
            return self.back(plan, node.input[0], A, node, depth + 1)
        if op in ("MaxPool", "GlobalMaxPool"):
            if not np.all(A.scale > 0):
                return f"a non-positive scale cannot pass through {op} {node.name}"
            if len([o for o in node.output if o]) > 1:
                return f"{op} {node.name} also outputs indices"
            plan.via.append(op)
            return self.back(plan, node.input[0], A, node, depth + 1)
        if op in ("AveragePool", "GlobalAveragePool"):
            if op == "AveragePool" and has_padding(node) and attr(node, "count_include_pad", 0):
                return f"AveragePool {node.name} averages zero padding"
            plan.via.append(op)
            return self.back(plan, node.input[0], A, node, depth + 1)
        if op in SHAPE_OPS:
            axis = self._axis_through(node, A.axis, forward=False)
            if axis is None or g.rank(node.input[0]) is None:
                return f"{op} {node.name} does not keep the channel axis"
            plan.via.append(op)
            return self.back(plan, node.input[0], A.with_axis(axis, g.rank(node.input[0])), node, depth + 1)
        return f"producer {node.name} ({op}) is not linear"

    def _back_add(self, plan: Plan, node: onnx.NodeProto, A: Affine, depth: int) -> str | None:
        g = self.g
        u, v = node.input[0], node.input[1]
        cu, cv = g.const(u), g.const(v)
        sign = -1.0 if node.op_type == "Sub" else 1.0
        if cu is not None and cv is not None:
            return f"{node.op_type} {node.name} is constant"
        if cu is not None or cv is not None:
            # Add(x, c): A(x + c) = a*x + (a*c + b); the constant takes the shift.
            ci = 0 if cu is not None else 1
            if node.op_type == "Sub" and ci == 0:
                return f"Sub {node.name} negates its input"
            c = cu if cu is not None else cv
            if not _float_weight(c) or c.ndim > A.rank:
                return f"constant of {node.name} is not a float per-channel constant"
            bshape = A.broadcast_shape()
            new_c = A.scale.reshape(bshape) * c.astype(np.float64) + sign * A.shift.reshape(bshape)
            out_shape = g.static_shape(node.output[0])
            if out_shape is None or np.broadcast_shapes(new_c.shape, tuple(out_shape)) != tuple(out_shape):
                return f"constant of {node.name} does not broadcast per channel"
            plan.put(node, ci, _as(new_c, c))
            data = node.input[1 - ci]
            if g.shape(data) != g.shape(node.output[0]):
                return f"{node.op_type} {node.name} broadcasts its input"
            plan.via.append(node.op_type)
            return self.back(plan, data, A.scale_only(), node, depth + 1)
        if g.rank(u) != A.rank or g.rank(v) != A.rank or g.shape(u) != g.shape(v):
            return f"{node.op_type} {node.name} broadcasts its inputs"
        if u == v:
            return f"{node.op_type} {node.name} reads one tensor twice"
        # a*(u -/+ v) + b: one branch takes (a, b), the other (a, 0) (for Sub it is subtracted).
        second = A.scale_only()
        plan.via.append(node.op_type)
        state = plan.snapshot()
        why_first = self.back(plan, u, A, node, depth + 1) or self.back(plan, v, second, node, depth + 1)
        if why_first is None:
            return None
        # The shift can go to either branch: retry with the other one taking it.
        plan.restore(state)
        moved = Affine(A.scale, sign * A.shift, A.axis, A.rank)
        why = self.back(plan, u, A.scale_only(), node, depth + 1) or self.back(
            plan, v, moved, node, depth + 1
        )
        return None if why is None else why_first

    def _back_concat(self, plan: Plan, node: onnx.NodeProto, A: Affine, depth: int) -> str | None:
        g = self.g
        axis = attr(node, "axis", 0)
        axis = axis + A.rank if axis < 0 else axis
        plan.via.append("Concat")
        if axis != A.axis:
            for inp in node.input:
                why = self.back(plan, inp, A, node, depth + 1)
                if why:
                    return why
            return None
        start = 0
        for inp in node.input:
            shape = g.shape(inp)
            if shape is None or shape[axis] is None:
                return f"Concat {node.name}: unknown channel count of {inp}"
            n = int(shape[axis])
            piece = Affine(A.scale[start : start + n], A.shift[start : start + n], A.axis, A.rank)
            start += n
            why = self.back(plan, inp, piece, node, depth + 1)
            if why:
                return why
        return None if start == A.channels else f"Concat {node.name}: channel count mismatch"

    def _scale_clip(self, plan: Plan, node: onnx.NodeProto, A: Affine) -> str | None:
        """a*clip(x, lo, hi) = clip(a*x, a*lo, a*hi) for a > 0; ONNX Clip bounds are scalars."""
        if len(node.input) > 1 or not node.attribute:  # opset >= 11: bounds are inputs
            bounds = [plan.get(node, i) if i < len(node.input) and node.input[i] else None for i in (1, 2)]
            if any(
                i < len(node.input) and node.input[i] and b is None
                for i, b in zip((1, 2), bounds, strict=True)
            ):
                return f"Clip {node.name} has non-constant bounds"
            lo, hi = bounds
        else:
            lo, hi = attr(node, "min", None), attr(node, "max", None)
            lo = None if lo is None else np.array(lo, np.float32)
            hi = None if hi is None else np.array(hi, np.float32)
        uniform = np.allclose(A.scale, A.scale[0], rtol=1e-7, atol=0)
        needs_scaling = [b for b in (lo, hi) if b is not None and float(b) != 0.0]
        if needs_scaling and not uniform:
            return f"Clip {node.name} would need per-channel bounds (ReLU6 with a per-channel scale)"
        if not needs_scaling:
            return None
        s = float(A.scale[0])
        if len(node.input) > 1 or not node.attribute:
            for i, b in zip((1, 2), (lo, hi), strict=True):
                if b is not None:
                    plan.put(node, i, _as(np.asarray(b, np.float64) * s, b))
        else:

            def edit(node=node, lo=lo, hi=hi, s=s) -> None:
                if lo is not None:
                    set_attr(node, "min", float(lo) * s)
                if hi is not None:
                    set_attr(node, "max", float(hi) * s)

            plan.structural.append(edit)
        return None

    def _axis_through(self, node: onnx.NodeProto, axis: int, forward: bool) -> int | None:
        g = self.g
        src, dst = g.static_shape(node.input[0]), g.static_shape(node.output[0])
        if node.op_type in ("Identity", "Dropout"):
            return axis
        if node.op_type == "Transpose":
            perm = attr(node, "perm", None)
            if perm is None:
                n = g.rank(node.input[0])
                perm = list(range(n))[::-1] if n else None
            if perm is None:
                return None
            return list(perm).index(axis) if forward else int(perm[axis])
        return _map_axis(src, dst, axis) if forward else _map_axis(dst, src, axis)

    # ----- linear layers absorbing an affine on their output ----------------------------------------
    def absorb_out(self, plan: Plan, node: onnx.NodeProto, A: Affine) -> str | None:
        g = self.g
        op = node.op_type
        w = plan.get(node, 1)
        if not _float_weight(w):
            return f"{op} {node.name} has non-constant or non-float weights"
        out_rank = g.rank(node.output[0])
        a, b = A.scale, A.shift
        if op in ("Conv", "ConvTranspose"):
            if A.axis != 1:
                return f"affine is not on the channel axis of {node.name}"
            if op == "Conv":
                if w.shape[0] != A.channels:
                    return f"channel mismatch at {node.name}"
                new_w = w * a.reshape([-1] + [1] * (w.ndim - 1))
            else:
                group = attr(node, "group", 1)
                per = w.shape[1]
                if per * group != A.channels:
                    return f"channel mismatch at {node.name}"
                wr = w.reshape([group, w.shape[0] // group, per] + list(w.shape[2:]))
                new_w = (wr * a.reshape([group, 1, per] + [1] * (w.ndim - 2))).reshape(w.shape)
            bias = plan.get(node, 2) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and bias is None:
                return f"{op} {node.name} has a non-constant bias"
            new_b = a * (bias.astype(np.float64) if bias is not None else 0.0) + b
            plan.put(node, 1, _as(new_w, w))
            plan.put(node, 2, _as(new_b, w))
            return None
        if op == "Gemm":
            if out_rank != 2 or A.axis != 1:
                return f"affine is not on the output features of {node.name}"
            trans_b = attr(node, "transB", 0)
            n = w.shape[0] if trans_b else w.shape[1]
            if n != A.channels:
                return f"channel mismatch at {node.name}"
            new_w = w * (a[:, None] if trans_b else a[None, :])
            plan.put(node, 1, _as(new_w, w))
            return self._gemm_bias(plan, node, lambda c: a * c, b, w)
        if op == "MatMul":
            if w.ndim != 2 or A.axis != out_rank - 1 or w.shape[1] != A.channels:
                return f"affine is not on the output features of MatMul {node.name}"
            plan.put(node, 1, _as(w * a[None, :], w))
            if A.has_shift():
                return self._matmul_bias(plan, node, b, w)
            return None
        return f"{op} is not linear"

    def _gemm_bias(
        self, plan: Plan, node: onnx.NodeProto, on_c, add: np.ndarray, w: np.ndarray
    ) -> str | None:
        """Set Gemm's C to on_c(C) + add/beta (C absent or beta = 0: C = add, beta = 1)."""
        beta = float(attr(node, "beta", 1.0))
        has_c = len(node.input) > 2 and bool(node.input[2])
        c = plan.get(node, 2) if has_c else None
        if has_c and c is None:
            return f"Gemm {node.name} has a non-constant C"
        if has_c and beta != 0.0:
            plan.put(node, 2, _as(on_c(c.astype(np.float64)) + add / beta, w))
        else:
            if not np.any(add != 0):
                return None
            plan.put(node, 2, _as(add, w))
            if beta != 1.0:
                plan.structural.append(lambda node=node: _set_beta_one(node))
        return None

    def _matmul_bias(self, plan: Plan, node: onnx.NodeProto, add: np.ndarray, w: np.ndarray) -> str | None:
        """MatMul has no bias: turn a rank-2 MatMul into Gemm (which has one), else refuse."""
        g = self.g
        pending = plan.get(node, 2) if (id(node), 2) in plan.values else None
        if g.rank(node.input[0]) == 2:
            plan.put(node, 2, _as(add + (pending if pending is not None else 0.0), w))
            if pending is None:
                plan.structural.append(lambda node=node: _matmul_to_gemm(node))
            return None
        return f"MatMul {node.name} has no bias to take the shift (input rank > 2)"

    # ----- forward: consumers of tensor t now receive x where they used to receive A(x) -------------
    def fwd(self, plan: Plan, t: str, A: Affine, skip: onnx.NodeProto | None, depth: int = 0) -> str | None:
        g = self.g
        if g.is_graph_output(t):
            return f"tensor {t} is a graph output"
        for c in g.consumers(t):
            if c is skip:
                continue
            why = self.fwd_consumer(plan, c, t, A, depth + 1)
            if why:
                return why
        return None

    def fwd_consumer(self, plan: Plan, c: onnx.NodeProto, t: str, A: Affine, depth: int) -> str | None:
        g = self.g
        if depth > 64:
            return "path too long"
        op = c.op_type
        slots = [i for i, name in enumerate(c.input) if name == t]
        if op in LINEAR_OPS:
            if slots != [0]:
                return f"{c.name} reads the tensor as a weight"
            why = self.absorb_in(plan, c, A)
            if why is None:
                plan.into.append(c.name)
            return why
        if slots != [0]:
            return f"{op} {c.name} reads the tensor in another slot"
        out = c.output[0]
        if not plan.visit(out):
            return f"tensor {out} reached twice"
        if op in ("MaxPool", "GlobalMaxPool"):
            if not np.all(A.scale > 0) or len([o for o in c.output if o]) > 1:
                return f"{op} {c.name} needs a positive scale"
            plan.via.append(op)
            return self.fwd(plan, out, A, None, depth)
        if op in ("AveragePool", "GlobalAveragePool"):
            if op == "AveragePool" and has_padding(c) and attr(c, "count_include_pad", 0):
                return f"AveragePool {c.name} averages zero padding"
            plan.via.append(op)
            return self.fwd(plan, out, A, None, depth)
        if op in SHAPE_OPS:
            axis = self._axis_through(c, A.axis, forward=True)
            if axis is None or g.rank(out) is None:
                return f"{op} {c.name} does not keep the channel axis"
            plan.via.append(op)
            return self.fwd(plan, out, A.with_axis(axis, g.rank(out)), None, depth)
        return f"reader {c.name} ({op}) cannot absorb it"

    def absorb_in(self, plan: Plan, node: onnx.NodeProto, A: Affine) -> str | None:
        """node(A(x)) == node'(x): fold the affine into the input channels of a linear layer."""
        op = node.op_type
        w = plan.get(node, 1)
        if not _float_weight(w):
            return f"{op} {node.name} has non-constant or non-float weights"
        a, b = A.scale, A.shift
        shift = A.has_shift()
        if op == "Conv":
            if A.axis != 1:
                return f"affine is not on the channel axis of {node.name}"
            group = attr(node, "group", 1)
            out_c, per_in = w.shape[0], w.shape[1]
            if per_in * group != A.channels:
                return f"channel mismatch at {node.name}"
            if shift and has_padding(node):
                return f"Conv {node.name} zero-pads: the shift would be wrong at the borders"
            # input channel read by (o, i) in a grouped conv: group(o) * per_in + i
            chan = (np.arange(out_c)[:, None] // (out_c // group)) * per_in + np.arange(per_in)[None, :]
            spatial = [1] * (w.ndim - 2)
            new_w = w * a[chan].reshape([out_c, per_in] + spatial)
            bias = plan.get(node, 2) if len(node.input) > 2 and node.input[2] else None
            if len(node.input) > 2 and node.input[2] and bias is None:
                return f"Conv {node.name} has a non-constant bias"
            plan.put(node, 1, _as(new_w, w))
            if shift:
                delta = (
                    (w.astype(np.float64) * b[chan].reshape([out_c, per_in] + spatial))
                    .reshape(out_c, -1)
                    .sum(1)
                )
                plan.put(node, 2, _as((bias.astype(np.float64) if bias is not None else 0.0) + delta, w))
            return None
        if op == "ConvTranspose":
            if A.axis != 1 or w.shape[0] != A.channels:
                return f"channel mismatch at {node.name}"
            if shift:
                return f"ConvTranspose {node.name}: a shift is not uniform across the overlapping outputs"
            plan.put(node, 1, _as(w * a.reshape([-1] + [1] * (w.ndim - 1)), w))
            return None
        if op == "Gemm":
            if attr(node, "transA", 0) or A.axis != 1 or A.rank != 2:
                return f"Gemm {node.name} reads a transposed input"
            trans_b = attr(node, "transB", 0)
            if (w.shape[1] if trans_b else w.shape[0]) != A.channels:
                return f"channel mismatch at {node.name}"
            alpha = float(attr(node, "alpha", 1.0))
            delta = alpha * (w.astype(np.float64) @ b if trans_b else b @ w.astype(np.float64))
            plan.put(node, 1, _as(w * (a[None, :] if trans_b else a[:, None]), w))
            if shift:
                return self._gemm_bias(plan, node, lambda c: c, delta, w)
            return None
        if op == "MatMul":
            if w.ndim != 2 or A.axis != A.rank - 1 or w.shape[0] != A.channels:
                return f"affine is not on the reduced axis of MatMul {node.name}"
            plan.put(node, 1, _as(w * a[:, None], w))
            if shift:
                return self._matmul_bias(plan, node, b @ w.astype(np.float64), w)
            return None
        return f"{op} is not linear"


def _set_beta_one(node: onnx.NodeProto) -> None:
    set_attr(node, "beta", 1.0)


def _matmul_to_gemm(node: onnx.NodeProto) -> None:
    node.op_type = "Gemm"


# ----- finding BNs -------------------------------------------------------------------------------------
@dataclass
class _Candidate:
    name: str
    kind: str
    nodes: list[onnx.NodeProto]
    input: str
    output: str
    affine: Affine | None
    problem: str | None = None
    stats: tuple[np.ndarray, np.ndarray] | None = None  # (beta, |gamma|) of a real BN


def _bn_candidate(g: OnnxGraph, node: onnx.NodeProto) -> _Candidate:
    name = node.name
    cand = _Candidate(name, "BatchNormalization", [node], node.input[0], node.output[0], None)
    if attr(node, "training_mode", 0) or len([o for o in node.output if o]) > 1:
        cand.problem = "training-mode BatchNormalization (batch statistics are not constant)"
        return cand
    params = [g.const(n) for n in node.input[1:5]]
    if any(p is None for p in params):
        cand.problem = "BatchNormalization with non-constant parameters"
        return cand
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    eps = float(attr(node, "epsilon", 1e-5))
    rank = g.rank(node.input[0])
    if rank is None:
        cand.problem = "unknown input rank"
        return cand
    if not all(np.all(np.isfinite(p)) for p in (gamma, beta, mean, var)) or not np.isfinite(eps):
        cand.problem = "degenerate statistics: NaN or inf in scale/bias/mean/var"
        return cand
    if np.any(var + eps <= 0):
        bad = np.flatnonzero(var + eps <= 0)
        cand.problem = (
            f"degenerate statistics: var + epsilon <= 0 in {bad.size} of {var.size} channels "
            f"(first {bad[:4].tolist()}), its output is NaN or inf there"
        )
        return cand
    scale = gamma / np.sqrt(var + eps)
    shift = beta - mean * scale
    # Checked in float32, the precision the folded weights are stored in.
    if not all(np.all(np.abs(v) <= np.finfo(np.float32).max) for v in (scale, shift)):
        cand.problem = "degenerate statistics: the folded scale overflows float32"
        return cand
    cand.affine = Affine(scale, shift, 1, rank)
    cand.stats = (beta, np.abs(gamma))
    return cand


def _per_channel(c: np.ndarray, shape: list[int | None] | None) -> tuple[int | None, np.ndarray] | None:
    """(axis, vector) if constant `c` broadcast against `shape` varies along at most one axis."""
    if shape is None or c.ndim > len(shape):
        return None
    if c.size == 1:
        return None, c.reshape(-1).astype(np.float64)
    full = [1] * (len(shape) - c.ndim) + list(c.shape)
    axes = [i for i, d in enumerate(full) if d != 1]
    if len(axes) != 1 or shape[axes[0]] not in (None, full[axes[0]]):
        return None
    return axes[0], c.reshape(-1).astype(np.float64)


def _data_and_const(g: OnnxGraph, node: onnx.NodeProto) -> tuple[str, np.ndarray, int] | None:
    if len(node.input) != 2:
        return None
    c0, c1 = g.const(node.input[0]), g.const(node.input[1])
    if (c0 is None) == (c1 is None):
        return None
    return (node.input[1], c0, 0) if c0 is not None else (node.input[0], c1, 1)


def _affine_pair_candidate(g: OnnxGraph, first: onnx.NodeProto) -> _Candidate | None:
    """Mul/Div by a constant followed by Add/Sub of a constant (or the other order), per channel."""
    scale_ops, shift_ops = ("Mul", "Div"), ("Add", "Sub")
    if first.op_type not in scale_ops + shift_ops:
        return None
    mid = first.output[0]
    readers = g.consumers(mid)
    if len(readers) != 1 or g.is_graph_output(mid):
        return None
    second = readers[0]
    if (first.op_type in scale_ops) == (
        second.op_type in scale_ops
    ) or second.op_type not in scale_ops + shift_ops:
        return None
    d1, d2 = _data_and_const(g, first), _data_and_const(g, second)
    if d1 is None or d2 is None or d2[0] != mid:
        return None
    x = d1[0]
    shape = g.shape(x)
    if shape is None or len(shape) < 1 or g.shape(second.output[0]) != shape:
        return None
    pieces = {}
    for node, (_, c, slot) in ((first, d1), (second, d2)):
        if node.op_type in ("Div", "Sub") and slot == 0:
            return None  # c / x or c - x is not an affine map of x with a positive orientation
        if not _float_weight(c):
            return None
        pc = _per_channel(c, shape)
        if pc is None:
            return None
        pieces[node.op_type] = pc
    axes = {ax for ax, _ in pieces.values() if ax is not None}
    if len(axes) > 1:
        return None
    axis = axes.pop() if axes else (1 if len(shape) >= 2 else 0)
    channels = shape[axis]
    if channels is None:
        return None
    vec = {k: np.broadcast_to(v, (channels,)).astype(np.float64) for k, (_, v) in pieces.items()}
    if "Div" in vec:
        if np.any(vec["Div"] == 0):
            return None
        mul = 1.0 / vec["Div"]
    else:
        mul = vec["Mul"]
    add = vec["Add"] if "Add" in vec else -vec["Sub"]
    scale, shift = (mul, add) if first.op_type in scale_ops else (mul, mul * add)
    if not (np.all(np.isfinite(scale)) and np.all(np.isfinite(shift))):
        return None
    name = f"{first.name}+{second.name}"
    return _Candidate(
        name,
        f"{first.op_type}+{second.op_type}",
        [first, second],
        x,
        second.output[0],
        Affine(scale, shift, axis, len(shape)),
    )


def _find(g: OnnxGraph, done: set[str]) -> _Candidate | None:
    for node in g.graph.node:
        if node.op_type == "BatchNormalization" and node.name not in done:
            return _bn_candidate(g, node)
    # Scale-then-shift pairs first: in MatMul -> Add(bias) -> Mul -> Add, the BN is the last two.
    for first_ops in (("Mul", "Div"), ("Add", "Sub")):
        for node in g.graph.node:
            if node.op_type in first_ops:
                cand = _affine_pair_candidate(g, node)
                if cand is not None and cand.name not in done:
                    return cand
    return None


# ----- the pass ----------------------------------------------------------------------------------------
def _standalone(g: OnnxGraph, cand: _Candidate) -> tuple[str, list[str]]:
    """Replace a BN that folds nowhere by one per-channel op; returns (what it is now, new node names).

    Mul+Add pairs found in the graph are left as they are: they may be part of a pattern onnx2tf
    recognises (hard-sigmoid, normalisation), and rewriting them would not be a fold.
    """
    A = cand.affine
    assert A is not None
    first = cand.nodes[0]
    if cand.kind != "BatchNormalization":
        return f"{cand.kind} (unchanged)", []
    if A.rank == 4 and A.axis == 1:
        # onnx2tf emits one DEPTHWISE_CONV_2D for this; Mul+Add would be MUL, ADD (+ a TRANSPOSE).
        w = g.add_initializer(A.scale.astype(np.float32).reshape(-1, 1, 1, 1), f"{first.name}_dw_w")
        bias = g.add_initializer(A.shift.astype(np.float32), f"{first.name}_dw_b")
        conv = helper.make_node(
            "Conv",
            [cand.input, w, bias],
            [cand.output],
            name=g.fresh(f"{first.name}_dwconv"),
            group=A.channels,
            kernel_shape=[1, 1],
        )
        g.remove_node(first)
        g.graph.node.append(conv)
        g.reindex()
        return "depthwise 1x1 Conv", [conv.name]
    # Other ranks: no single TFLite op applies a per-channel affine without reshapes, so Mul+Add.
    shape = A.broadcast_shape()
    scale = g.add_initializer(A.scale.astype(np.float32).reshape(shape), f"{first.name}_scale")
    shift = g.add_initializer(A.shift.astype(np.float32).reshape(shape), f"{first.name}_shift")
    mid = g.fresh(f"{first.name}_scaled")
    mul = helper.make_node("Mul", [cand.input, scale], [mid], name=g.fresh(f"{first.name}_mul"))
    add = helper.make_node("Add", [mid, shift], [cand.output], name=g.fresh(f"{first.name}_add"))
    g.remove_node(first)
    g.graph.node.extend([mul, add])
    g.reindex()
    return "Mul+Add", [mul.name, add.name]


def fold_batch_norms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, BnFoldReport]:
    """Fold every exactly-foldable batch norm (and Mul+Add per-channel affine pair) of `model`.

    Returns the new model (the input is not modified) and a report of what was found, folded
    (and into which nodes), and left (and why).
    """
    g = OnnxGraph(model)
    g.name_unnamed_nodes()  # the report refers to nodes by name
    report = BnFoldReport()
    done: set[str] = set()
    folder = Folder(g)
    while (cand := _find(g, done)) is not None:
        done.add(cand.name)
        entry: dict[str, Any] = {"name": cand.name, "kind": cand.kind}
        if cand.affine is not None:
            entry["channels"] = cand.affine.channels
        report.found.append(dict(entry))
        if cand.affine is None:
            message = f"{cand.kind} {cand.name}: {cand.problem}; left unfolded"
            warnings.warn(message, stacklevel=2)
            report.warnings.append(message)
            report.left.append({**entry, "reason": cand.problem, "now": "unchanged"})
            continue
        A = cand.affine
        reasons = []
        first, last = cand.nodes[0], cand.nodes[-1]

        plan = Plan(g)
        why = folder.back(plan, cand.input, A, first)
        if why is None and plan.finite():
            direction = "backward"
        else:
            reasons.append(f"backward: {why or 'would produce non-finite weights'}")
            plan = Plan(g)
            plan.visit(cand.output)
            why = folder.fwd(plan, cand.output, A, None) if A.rank is not None else "unknown rank"
            if why is None and not g.consumers(cand.output):
                why = "output is unused"
            direction = "forward" if why is None and plan.finite() else None
            if direction is None:
                reasons.append(f"forward: {why or 'would produce non-finite weights'}")
        if direction is None:
            now, new_nodes = _standalone(g, cand)
            done.update(new_nodes)
            report.left.append({**entry, "reason": "; ".join(reasons), "now": now})
            continue
        plan.commit()
        if direction == "backward":
            g.bypass(first, last, cand.input)
            stats = cand.stats
            producer = g.producer(cand.output if g.is_graph_output(cand.output) else cand.input)
            if stats is not None and not plan.via and producer is not None and producer.op_type in LINEAR_OPS:
                tensor = producer.output[0]
                report.activation_stats[tensor] = {"mean": stats[0].tolist(), "std": stats[1].tolist()}
        else:
            g.bypass(first, last, cand.input)
        report.folded.append(
            {
                **entry,
                "direction": direction,
                "into": sorted(set(plan.into)),
                "through": sorted(set(plan.via)),
            }
        )
    return g.finish(), report
