"""Attention (any spelling) -> batched-head matmuls with no TRANSPOSE.

nn.MultiheadAttention, TransformerEncoderLayer, F.scaled_dot_product_attention and hand-written
`softmax(q @ k^T * s + mask) @ v` all export as a Softmax between two MatMuls whose operands reach back,
through a tangle of Reshape / Transpose / Squeeze / Gather / Split / scalar Mul, to linear projections
of the token features. onnx2tf turns each layout op into a TRANSPOSE (5-7 per attention), mis-lays
4-D `[batch, heads, seq, dim]` tensors as NCHW and has failed on some of them outright. The same
computation with the heads as the batch axis of a matmul needs no layout change at all:

    q_j   = x_q @ Wq[:, cols_q(j)] + bq[cols_q(j)]     # one broadcast batch matmul against [h, E, d]
    p_j   = softmax(q_j @ k_j^T * s + mask_j)          # s folded into Wq, bq
    y     = sum_j (p_j @ v_j) @ Wo[rows_o(j), :] + bo  # == concat heads, then project

The matcher does not parse the layout ops: it *runs* each chain between a projection and a matmul
operand on a tensor of element indices (onnxruntime, int64), which says for every (head, position,
channel) of the operand which (row, column) of the projection it reads. When that map is "position l
reads row l, head j channel i reads a fixed column", the chain is a head split and cols(j) are read off
the map; anything else (batch > 1, a chain that mixes positions) is left alone, with the reason logged.
A chain with no projection before it is read as projecting with the identity. The replacement is then
checked against the original region with onnxruntime on random inputs before it is applied.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.converters.rewrites._index_trace import MOVE_OPS, element_sources
from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, attr, opset_version

NAME = "attention_to_batched_heads"
log = logging.getLogger(__name__)

# Single-input element movers (a Concat would join the operand with something else).
_LAYOUT_OPS = MOVE_OPS - {"Concat"}
# Layout ops that keep the row-major element order (a batch-1 axis moved or dropped is still a reshape).
_ORDER_OPS = {"Reshape", "Unsqueeze", "Squeeze", "Identity", "Flatten"}
_CHECK_TOLERANCE = 1e-5  # relative; the rewrite only reorders float sums and folds scalar scales


class _Skip(Exception):
    """A precondition of the rewrite does not hold; the message says which."""


@dataclass
class _Operand:
    """One matmul operand as `x @ w[:, cols] + b[cols]` per head: cols [h, d] index w's columns."""

    x: str  # the token features, rows in sequence order (any shape [..., e_in])
    w: np.ndarray  # [e_in, e_out]
    b: np.ndarray  # [e_out]
    cols: np.ndarray  # [h, d]
    scale: float


def _scalar(view: OnnxGraph, node: onnx.NodeProto) -> float | None:
    """s for a Mul by / Div by a one-element constant (the data input is input 0 after normalising)."""
    if node.op_type not in ("Mul", "Div") or len(node.input) != 2:
        return None
    consts = [view.const(i) for i in node.input]
    if node.op_type == "Div":
        c = consts[1]
        return None if c is None or c.size != 1 or consts[0] is not None else 1.0 / float(c.reshape(-1)[0])
    k = 0 if consts[0] is not None else 1
    if consts[k] is None or consts[k].size != 1 or consts[1 - k] is not None:
        return None
    return float(consts[k].reshape(-1)[0])


def _data_input(view: OnnxGraph, node: onnx.NodeProto) -> str:
    if node.op_type == "Mul" and view.const(node.input[0]) is not None:
        return node.input[1]
    return node.input[0]


def _walk_back(view: OnnxGraph, tensor: str) -> tuple[str, list[onnx.NodeProto], float]:
    """(source, chain from source to `tensor`, product of scalar scales) over layout ops and Mul/Div."""
    chain: list[onnx.NodeProto] = []
    scale = 1.0
    while (node := view.producer(tensor)) is not None:
        s = _scalar(view, node)
        if node.op_type in _LAYOUT_OPS and all(view.const(i) is not None for i in node.input[1:] if i):
            pass
        elif s is not None:
            scale *= s
        else:
            break
        chain.append(node)
        tensor = _data_input(view, node)
    return tensor, chain[::-1], scale


def _trace(view: OnnxGraph, chain: Sequence[onnx.NodeProto], source: str, target: str) -> np.ndarray:
    try:
        return element_sources(view, chain, source, target)
    except ValueError as exc:
        raise _Skip(str(exc)) from exc


def _projection(view: OnnxGraph, tensor: str) -> tuple[str, np.ndarray, np.ndarray, list[onnx.NodeProto]]:
    """(x, w [e_in, e_out], b [e_out], nodes) for tensor = x @ w + b; the identity when it is not one."""
    node = view.producer(tensor)
    nodes: list[onnx.NodeProto] = []
    bias = None
    if node is not None and node.op_type == "Gemm" and len(node.input) >= 2:
        w = view.const(node.input[1])
        b = view.const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        plain = (
            not attr(node, "transA", 0) and attr(node, "alpha", 1.0) == 1.0 and attr(node, "beta", 1.0) == 1.0
        )
        if w is not None and w.ndim == 2 and plain:
            w = w.T if attr(node, "transB", 0) else w
            b = np.zeros(w.shape[1], np.float32) if b is None else b
            if b.size in (1, w.shape[1]) and b.ndim <= 2:
                return node.input[0], w, np.broadcast_to(b.reshape(-1), w.shape[1]), [node]
    if node is not None and node.op_type == "Add":
        consts = [view.const(i) for i in node.input]
        k = 0 if consts[0] is not None else 1
        inner = view.producer(node.input[1 - k])
        if (
            consts[k] is not None
            and consts[1 - k] is None
            and inner is not None
            and inner.op_type == "MatMul"
        ):
            bias, nodes, node = consts[k], [node], inner
    if node is not None and node.op_type == "MatMul":
        w = view.const(node.input[1])
        if w is not None and w.ndim == 2 and view.const(node.input[0]) is None:
            e_out = w.shape[1]
            if bias is None:
                bias = np.zeros(e_out, np.float32)
            if bias.size in (1, e_out) and bias.ndim <= 1:
                return node.input[0], w, np.broadcast_to(bias.reshape(-1), e_out), [*nodes, node]
    shape = view.static_shape(tensor)
    if shape is None:
        raise _Skip(f"{tensor} has no static shape")
    return tensor, np.eye(shape[-1], dtype=np.float32), np.zeros(shape[-1], np.float32), []


def _head_columns(index: np.ndarray, e_out: int, length: int, what: str) -> np.ndarray:
    """cols [h, d] from an index map [h, length, d] into a [rows, e_out] projection output."""
    rows, cols = index // e_out, index % e_out
    if not (rows == np.arange(length)[None, :, None]).all():
        raise _Skip(f"{what}: positions do not map to projection rows one to one (batch > 1?)")
    if not (cols == cols[:, :1, :]).all():
        raise _Skip(f"{what}: a head channel reads different columns at different positions")
    return cols[:, 0, :]


def _operand(
    view: OnnxGraph, tensor: str, transposed: bool, region: list[onnx.NodeProto], what: str
) -> _Operand:
    """Read operand `tensor` ([..., L, d], or [..., d, L] when transposed) as a per-head projection."""
    shape = view.static_shape(tensor)
    if shape is None or len(shape) < 2:
        raise _Skip(f"{what} has no static shape")
    source, chain, scale = _walk_back(view, tensor)
    x, w, b, proj_nodes = _projection(view, source)
    index = _trace(view, chain, source, tensor)
    heads = int(np.prod(shape[:-2]))
    index = index.reshape(heads, shape[-2], shape[-1])
    if transposed:
        index = index.transpose(0, 2, 1)
    cols = _head_columns(index, w.shape[1], index.shape[1], what)
    region.extend(chain + proj_nodes)
    return _Operand(x, w.astype(np.float32), b.astype(np.float32), cols, scale)


def _scores_chain(view: OnnxGraph, softmax: onnx.NodeProto, region: list[onnx.NodeProto]):
    """(scores MatMul, alpha, beta) for softmax input = alpha * MatMul + beta (scalar Muls, const Adds)."""
    alpha, beta = 1.0, np.zeros((), np.float32)
    ops: list[tuple[str, object]] = []
    tensor = softmax.input[0]
    while (node := view.producer(tensor)) is not None and node.op_type != "MatMul":
        s = _scalar(view, node)
        if s is not None:
            ops.append(("scale", s))
            tensor = _data_input(view, node)
        elif node.op_type == "Add" and len(node.input) == 2:
            consts = [view.const(i) for i in node.input]
            k = 0 if consts[0] is not None else 1
            if consts[k] is None or consts[1 - k] is not None:
                raise _Skip(f"the scores are added to a computed tensor at {node.name} (only constant masks)")
            ops.append(("add", consts[k].astype(np.float32)))
            tensor = node.input[1 - k]
        else:
            raise _Skip(f"the softmax input comes from {node.op_type} {node.name}, not q @ k^T")
        region.append(node)
    if node is None:
        raise _Skip("the softmax input is not computed by a MatMul")
    for kind, value in reversed(ops):  # from the MatMul outwards
        if kind == "scale":
            alpha, beta = alpha * value, beta * value
        else:
            beta = beta + value
    return node, alpha, beta


def _out_chain(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]):
    """(layout chain, out-projection nodes, z, w [e, e_o], b, y) after `tensor`, or None without one."""
    chain: list[onnx.NodeProto] = []
    while len(users := view.consumers(tensor)) == 1 and not view.is_graph_output(tensor):
        node = users[0]
        if node.op_type in _LAYOUT_OPS and node.input[0] == tensor:
            if not all(view.const(i) is not None for i in node.input[1:] if i) or len(node.output) != 1:
                return None
            chain.append(node)
            tensor = node.output[0]
            continue
        if node.op_type in ("MatMul", "Gemm") and node.input[0] == tensor:
            following = view.consumers(node.output[0])
            candidates = [node.output[0]]
            if len(following) == 1 and following[0].op_type == "Add":
                candidates.insert(0, following[0].output[0])  # with its bias, if it is one
            for candidate in candidates:
                z, w, b, nodes = _projection(view, candidate)
                if nodes and z == tensor:
                    region.extend(chain + nodes)
                    return chain, z, w.astype(np.float32), b.astype(np.float32), candidate
        return None
    return None


def _order_preserving_after(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]) -> str:
    """Follow single-consumer reshapes (and transposes of batch-1 axes) forward; the last tensor."""
    while len(users := view.consumers(tensor)) == 1 and not view.is_graph_output(tensor):
        node = users[0]
        if not _keeps_order(view, node) or node.input[0] != tensor:
            break
        region.append(node)
        tensor = node.output[0]
    return tensor


def _keeps_order(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type in _ORDER_OPS:
        return len(node.output) == 1
    if node.op_type == "Transpose":
        shape = view.static_shape(node.input[0])
        perm = list(attr(node, "perm", []))
        if shape is None or not perm:
            return False
        moved = [p for p in perm if shape[p] != 1]
        return moved == sorted(moved)
    return False


def _root(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]) -> str:
    """The earliest tensor with the same row-major elements as `tensor` (skips batch-1 transposes)
    through ops only the region reads, which join the region."""
    while (node := view.producer(tensor)) is not None and _keeps_order(view, node):
        inside = {id(n) for n in region}
        if any(view.const(i) is None for i in node.input[1:] if i) or view.is_graph_output(tensor):
            break
        if any(id(c) not in inside for c in view.consumers(tensor)):
            break
        region.append(node)
        tensor = node.input[0]
    return tensor


def _head_average(
    view: OnnxGraph, probs: str, mix: onnx.NodeProto, shape: list[int]
) -> tuple[list[onnx.NodeProto], str] | None:
    """([Reshape, ReduceMean], output) when the probabilities' only use is need_weights' average over
    heads (`average_attn_weights=True`): reshaped to [..., heads, L, L], then a mean over the head axis."""
    others = [n for n in view.consumers(probs) if n is not mix]
    if len(others) != 1 or others[0].op_type != "Reshape" or view.is_graph_output(probs):
        return None
    (reshape,) = others
    r_shape = view.static_shape(reshape.output[0])
    if r_shape is None or r_shape[-3:] != shape or any(d != 1 for d in r_shape[:-3]):
        return None
    mean = view.only_consumer(reshape.output[0], "ReduceMean")
    if mean is None or view.static_shape(mean.output[0]) is None:
        return None
    axes = view.const(mean.input[1]) if len(mean.input) > 1 and mean.input[1] else attr(mean, "axes", None)
    if axes is None or [int(a) % len(r_shape) for a in np.reshape(axes, -1)] != [len(r_shape) - 3]:
        return None
    return [reshape, mean], mean.output[0]


def _match(view: OnnxGraph, softmax: onnx.NodeProto, done: set[str], reasons: list[str]) -> bool:
    if softmax.op_type != "Softmax" or softmax.output[0] in done:
        return False
    done.add(softmax.output[0])  # each attention is looked at once, rewritten or not
    where = f"attention at {softmax.name or softmax.output[0]} left as it is"
    if opset_version(view.model) < 13:
        reasons.append(f"{where}: opset < 13 (Softmax flattens its input there)")
        log.info("%s: %s", NAME, reasons[-1])
        return False
    try:
        return _rewrite_one(view, softmax, done)
    except _Skip as why:
        reasons.append(f"{where}: {why}")
        log.info("%s: %s", NAME, reasons[-1])
        return False
    except (ValueError, IndexError, KeyError) as exc:  # a shape this matcher did not foresee
        reasons.append(f"{where}: {type(exc).__name__}: {exc}")
        log.warning("%s: %s", NAME, reasons[-1])
        return False


def _rewrite_one(view: OnnxGraph, softmax: onnx.NodeProto, done: set[str]) -> bool:
    probs_shape = view.static_shape(softmax.output[0])
    if probs_shape is None or len(probs_shape) < 2:
        raise _Skip("the softmax has no static shape")
    if int(attr(softmax, "axis", -1)) % len(probs_shape) != len(probs_shape) - 1:
        raise _Skip("the softmax is not over the last axis")
    mixes = [
        n
        for n in view.consumers(softmax.output[0])
        if n.op_type == "MatMul" and n.input[0] == softmax.output[0]
    ]
    if len(mixes) != 1:
        raise _Skip("the softmax output is not multiplied with v (exactly once)")
    (mix,) = mixes
    region: list[onnx.NodeProto] = [softmax, mix]
    scores, alpha, beta = _scores_chain(view, softmax, region)
    region.append(scores)
    q = _operand(view, scores.input[0], False, region, "q")
    k = _operand(view, scores.input[1], True, region, "k")
    v = _operand(view, mix.input[1], False, region, "v")
    heads, lq, lk = q.cols.shape[0], probs_shape[-2], probs_shape[-1]
    if k.cols.shape[0] != heads or v.cols.shape[0] != heads or int(np.prod(probs_shape[:-2])) != heads:
        raise _Skip("q, k and v have different head counts (broadcast heads)")
    out = _out_chain(view, mix.output[0], region)
    mix_shape = view.static_shape(mix.output[0])
    dv = v.cols.shape[1]
    if out is not None:
        out_layout, z, w_o, b_o, y = out
        z_shape = view.static_shape(z)
        index = _trace(view, out_layout, mix.output[0], z)
        if z_shape is None or index.size != heads * lq * dv:
            raise _Skip("the attention output is not reshaped into the out-projection one to one")
        j, pos, i = np.unravel_index(index.reshape(lq, -1), (heads, lq, dv))
        if not (pos == np.arange(lq)[:, None]).all() or not ((j == j[:1]) & (i == i[:1])).all():
            raise _Skip("the head merge before the out-projection mixes positions")
        # Row c of w_o multiplies channel (j, i) of the heads: Wo_heads[j, i] = w_o[c].
        wo_heads = np.zeros((heads, dv, w_o.shape[1]), np.float32)
        wo_heads[j[0], i[0]] = w_o
        y = _order_preserving_after(view, y, region)
    else:
        y = mix.output[0]
    y_shape = view.static_shape(y)
    if y_shape is None or mix_shape is None:
        raise _Skip("the attention output has no static shape")

    # Only y (and the probabilities, which need_weights returns) may leave the region.
    probs_out = softmax.output[0]
    average = _head_average(view, probs_out, mix, [heads, lq, lk])
    if average is not None:
        region.extend(average[0])
    members = {id(n) for n in region}
    keep_probs = view.is_graph_output(probs_out) or any(
        id(c) not in members for c in view.consumers(probs_out)
    )
    leaving = {y, probs_out} | ({average[1]} if average else set())
    for node in region:
        for name in node.output:
            if name in leaving:
                continue
            if view.is_graph_output(name) or any(id(c) not in members for c in view.consumers(name)):
                raise _Skip(f"{name} inside the attention is also used outside it")
    if q.cols.shape[1] != k.cols.shape[1]:
        raise _Skip("q and k head sizes differ")
    q.scale *= alpha * k.scale
    k.scale = 1.0

    base = softmax.name or "attention"
    new_nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def name(hint: str) -> str:
        return view.fresh(f"{base}_{hint}")

    def const(value: np.ndarray, hint: str) -> str:
        n = name(hint)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), n))
        return n

    def node(op: str, inputs: list[str], hint: str, outputs: list[str] | None = None, **kw) -> list[str]:
        outs = outputs or [name(hint)]
        new_nodes.append(helper.make_node(op, inputs, outs, name=name(hint + "_op"), **kw))
        return outs

    # Rows of x in sequence order as [L, e_in]; operands sharing x and head size share one matmul.
    heads_of: dict[int, str] = {}
    groups: dict[tuple[str, int], list[int]] = {}
    ops = (q, k, v)
    for n_op, op in enumerate(ops):
        groups.setdefault((_root(view, op.x, region), op.cols.shape[1]), []).append(n_op)
    for (x_root, _), members_ in groups.items():
        x_shape = view.static_shape(x_root)
        e_in = ops[members_[0]].w.shape[0]
        if x_shape is None or x_shape[-1] != e_in or int(np.prod(x_shape)) % e_in:
            raise _Skip("the projection input has no static shape")
        rows = int(np.prod(x_shape)) // e_in
        if rows != (lq if members_[0] == 0 else lk):
            raise _Skip("the projection input holds more rows than positions (batch > 1?)")
        x2 = (
            x_root
            if len(x_shape) == 2
            else node("Reshape", [x_root, const(np.array([rows, e_in], np.int64), "rows")], "x2d")[0]
        )
        w = np.concatenate([ops[m].w[:, ops[m].cols].transpose(1, 0, 2) * ops[m].scale for m in members_])
        b = np.concatenate([ops[m].b[ops[m].cols][:, None, :] * ops[m].scale for m in members_])
        if np.any(b):
            # The bias rides in the matmul as a row of w against a column of ones: an Add of
            # [heads, L, d] with L == d would look channels-first to onnx2tf, which then transposes
            # before the Split (measured: 1 TRANSPOSE at sequence 8, head size 8).
            ones = const(np.ones((rows, 1), np.float32), "ones")
            (x2,) = node("Concat", [x2, ones], "x_ones", axis=1)
            w = np.concatenate([w, b], axis=1)
        (h_all,) = node("MatMul", [x2, const(w.astype(np.float32), "w_heads")], "heads")
        if len(members_) == 1:
            heads_of[members_[0]] = h_all
        else:
            parts = node(
                "Split",
                [h_all, const(np.array([heads] * len(members_), np.int64), "split")],
                "part",
                outputs=[name("part") for _ in members_],
                axis=0,
            )
            heads_of.update(zip(members_, parts, strict=True))
    (kt,) = node("Transpose", [heads_of[1]], "kT", perm=[0, 2, 1])
    (s,) = node("MatMul", [heads_of[0], kt], "scores")
    mask = np.broadcast_to(beta, probs_shape).reshape(heads, lq, lk) if np.any(beta) else None
    if keep_probs or average is not None:
        # The probabilities leave the region (need_weights). onnx2tf takes any non-MatMul 3-D result
        # whose last two sizes are equal ([h, L, L]) for channels-first and transposes it when a
        # Reshape reads it, so the weights came out transposed: the softmax runs on [h * L, L].
        (s,) = node("Reshape", [s, const(np.array([heads * lq, lk], np.int64), "rows")], "scores2d")
        if mask is not None:
            (s,) = node("Add", [s, const(mask.reshape(heads * lq, lk).astype(np.float32), "mask")], "masked")
        (p2,) = node("Softmax", [s], "probs2d", axis=-1)
        if keep_probs:
            shape = const(np.array(probs_shape, np.int64), "probs_shape")
            node("Reshape", [p2, shape], "probs_out", outputs=[probs_out])
        if average is not None:  # the mean over heads, on [heads, L * L]
            (flat,) = node("Reshape", [p2, const(np.array([heads, lq * lk], np.int64), "flat")], "flat")
            if opset_version(view.model) >= 18:
                (mean,) = node(
                    "ReduceMean", [flat, const(np.array([0], np.int64), "axis0")], "mean", keepdims=1
                )
            else:
                (mean,) = node("ReduceMean", [flat], "mean", axes=[0], keepdims=1)
            shape = const(np.array(view.static_shape(average[1]), np.int64), "mean_shape")
            node("Reshape", [mean, shape], "mean_out", outputs=[average[1]])
        (p,) = node("Reshape", [p2, const(np.array([heads, lq, lk], np.int64), "heads_shape")], "probs")
        done.add(p2)
    else:
        if mask is not None:
            if (mask == mask[:1]).all():
                mask = mask[:1]
            (s,) = node("Add", [s, const(mask.astype(np.float32), "mask")], "masked")
        (p,) = node("Softmax", [s], "probs", axis=-1)
        done.add(p)
    (o,) = node("MatMul", [p, heads_of[2]], "mix")
    if out is None:
        node("Reshape", [o, const(np.array(y_shape, np.int64), "mix_shape")], "mix_out", outputs=[y])
    else:
        (oh,) = node("MatMul", [o, const(wo_heads, "wo_heads")], "proj")
        (t,) = node("ReduceSum", [oh, const(np.array([0], np.int64), "axis0")], "head_sum", keepdims=0)
        if np.any(b_o):
            (t,) = node(
                "Add", [t, const(np.broadcast_to(b_o, [w_o.shape[1]]).astype(np.float32), "bo")], "out"
            )
        if y_shape != [lq, w_o.shape[1]]:
            node("Reshape", [t, const(np.array(y_shape, np.int64), "y_shape")], "y", outputs=[y])
        else:
            new_nodes[-1].output[0] = y

    members = {id(n) for n in region}
    old_nodes = [n for n in view.graph.node if id(n) in members]
    outputs = [y] + ([probs_out] if keep_probs else []) + ([average[1]] if average else [])
    if not replacement_agrees(view, old_nodes, new_nodes, inits, outputs, _CHECK_TOLERANCE):
        raise _Skip("the batched-head form did not reproduce the region on random inputs")
    view.graph.initializer.extend(inits)
    view.replace(old_nodes, new_nodes)
    return True


def rewrite_with_reasons(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """The rewritten model and, for each Softmax that looked like attention but was left alone, why."""
    view = OnnxGraph(model)
    done: set[str] = set()
    reasons: list[str] = []
    view.rewrite_each(lambda graph, node: _match(graph, node, done, reasons))
    return view.finish(), reasons


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    return rewrite_with_reasons(model)[0]
