"""Self-attention (nn.MultiheadAttention as exported) -> batched-head matmuls with no TRANSPOSE.

PyTorch exports the packed q/k/v projection, the head split and the head merge as a tangle of 5-D
Reshape/Unsqueeze/Transpose/Squeeze/Gather ops; onnx2tf turns it into 5 TRANSPOSEs (and, with plain
onnx2tf, permutes the [batch, seq, dim] input too). The same computation with the heads as the batch
axis of a matmul needs no layout change at all:

    qkv   = reshape(x, [L, E]) @ W_heads + b_heads     # W_heads: [3h, E, d], broadcast batch matmul
    q,k,v = split(qkv, 3, axis=0)                       # [h, L, d] each; 1/sqrt(d) folded into W_q
    o     = softmax(q @ k^T) @ v                        # [h, L, d]
    y     = sum_h(o @ Wo_heads) + bo                    # Wo_heads: [h, d, E] == concat-then-project

The matcher is deliberately loose: it anchors on Softmax, walks the layout-only ops back to one
packed in-projection (MatMul + bias) and forward to the out-projection (Gemm or MatMul + Add), and
then *checks* the replacement against the original region with onnxruntime on random inputs. A region
that is not exactly this computation (masks, cross-attention, batch > 1, ...) is left untouched.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites._region_check import replacement_agrees
from edgeport.onnx_graph import OnnxGraph, attr

NAME = "attention_to_batched_heads"

_LAYOUT_OPS = {"Reshape", "Transpose", "Unsqueeze", "Squeeze", "Gather", "Split", "Slice", "Identity"}
_CHECK_TOLERANCE = 1e-5  # relative; the rewrite only reorders float sums and folds one scale


def _walk_back(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]) -> tuple[str, float] | None:
    """Follow layout ops and scalar Muls back from `tensor`; returns (first non-layout tensor, scale)."""
    scale = 1.0
    while True:
        node = view.producer(tensor)
        if node is None:
            return None
        if node.op_type in _LAYOUT_OPS:
            region.append(node)
            tensor = node.input[0]
        elif node.op_type == "Mul" and len(node.input) == 2:
            consts = [view.const(i) for i in node.input]
            k = 0 if consts[0] is not None else 1
            if consts[k] is None or consts[k].size != 1 or consts[1 - k] is not None:
                return None
            region.append(node)
            scale *= float(consts[k].reshape(-1)[0])
            tensor = node.input[1 - k]
        else:
            return tensor, scale


def _in_projection(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]):
    """(x, W [E, 3E], b [3E]) for tensor = x @ W + b (bias optional)."""
    node = view.producer(tensor)
    bias = None
    if node is not None and node.op_type == "Add":
        consts = [view.const(i) for i in node.input]
        k = 0 if consts[0] is not None else 1
        if consts[k] is None or consts[1 - k] is not None:
            return None
        bias = consts[k]
        region.append(node)
        node = view.producer(node.input[1 - k])
    if node is None or node.op_type != "MatMul" or view.const(node.input[1]) is None:
        return None
    weight = view.const(node.input[1])
    if weight.ndim != 2 or weight.shape[1] != 3 * weight.shape[0]:
        return None
    region.append(node)
    if bias is None:
        bias = np.zeros(weight.shape[1], np.float32)
    if bias.shape != (weight.shape[1],):
        return None
    return node.input[0], weight, bias


def _out_projection(view: OnnxGraph, tensor: str, region: list[onnx.NodeProto]):
    """Follow layout ops forward to y = o @ Wo^T + bo; returns (y name, Wo^T [E, E], bo [E])."""
    while True:
        users = view.consumers(tensor)
        if len(users) != 1 or view.is_graph_output(tensor):
            return None
        node = users[0]
        region.append(node)
        if node.op_type in ("Reshape", "Transpose"):
            tensor = node.output[0]
            continue
        if node.op_type == "Gemm" and len(node.input) == 3:
            w, b = view.const(node.input[1]), view.const(node.input[2])
            if w is None or b is None or attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0:
                return None
            if attr(node, "beta", 1.0) != 1.0:
                return None
            return node.output[0], (w.T if attr(node, "transB", 0) else w), b
        if node.op_type == "MatMul" and view.const(node.input[1]) is not None:
            w = view.const(node.input[1])
            add = view.only_consumer(node.output[0], "Add")
            b = view.const(next(i for i in add.input if i != node.output[0])) if add is not None else None
            if add is None or b is None:  # out_proj without bias
                return node.output[0], w, np.zeros(w.shape[-1], np.float32)
            region.append(add)
            return add.output[0], w, b
        return None


def _match(view: OnnxGraph, softmax: onnx.NodeProto) -> bool:
    if softmax.op_type != "Softmax":
        return False
    scores = view.producer(softmax.input[0])
    mix = view.only_consumer(softmax.output[0], "MatMul")
    if scores is None or scores.op_type != "MatMul" or mix is None or mix.input[0] != softmax.output[0]:
        return False
    region: list[onnx.NodeProto] = [scores, softmax, mix]
    walks = [_walk_back(view, t, region) for t in (scores.input[0], scores.input[1], mix.input[1])]
    if any(w is None for w in walks) or len({w[0] for w in walks}) != 1:
        return False
    proj = _in_projection(view, walks[0][0], region)
    out = _out_projection(view, mix.output[0], region)
    score_shape = view.static_shape(scores.output[0])
    if proj is None or out is None or score_shape is None:
        return False
    x, w_in, b_in = proj
    y, w_out, b_out = out
    x_shape, y_shape = view.static_shape(x), view.static_shape(y)
    e = w_in.shape[0]
    heads, length = int(np.prod(score_shape[:-2])), score_shape[-1]
    if x_shape is None or y_shape != [length, e] or int(np.prod(x_shape)) != length * e or e % heads:
        return False
    if w_out.shape != (e, e) or b_out.shape != (e,) or not view.is_float32(x):
        return False
    # Every intermediate result must stay inside the region (only y leaves it).
    members = {id(n) for n in region}
    for node in region:
        for name in node.output:
            if name != y and (
                view.is_graph_output(name) or any(id(c) not in members for c in view.consumers(name))
            ):
                return False
    d = e // heads
    scale = walks[0][1] * walks[1][1]
    w_in, b_in = w_in.astype(np.float32).copy(), b_in.astype(np.float32).copy()
    w_in[:, :e] *= scale  # fold q*s_q @ (k*s_k)^T into q's projection
    b_in[:e] *= scale
    # Column j*d..(j+1)*d of W ([E, 3E]) is head j of q (j < h), of k, then of v.
    w_heads = w_in.reshape(e, 3 * heads, d).transpose(1, 0, 2).copy()
    b_heads = b_in.reshape(3 * heads, 1, d)
    wo_heads = w_out.astype(np.float32).reshape(heads, d, e)

    def name(hint: str) -> str:
        return view.fresh(f"{softmax.name or 'attention'}_{hint}")

    x2, qkv0, qkv, q, k, kt, s, p, o, oh, o2 = (
        name(n) for n in ("x2d", "qkv0", "qkv", "q", "k", "kT", "scores", "probs", "heads", "proj", "sum")
    )
    consts = {
        "shape": np.array([length, e], np.int64),
        "w_heads": w_heads,
        "b_heads": b_heads,
        "split": np.array([heads] * 3, np.int64),
        "wo_heads": wo_heads,
        "axis0": np.array([0], np.int64),
        "bo": b_out.astype(np.float32),
    }
    c = {key: name(key) for key in consts}
    v = name("v")
    new_nodes = [
        helper.make_node("Reshape", [x, c["shape"]], [x2], name=name("reshape")),
        helper.make_node("MatMul", [x2, c["w_heads"]], [qkv0], name=name("qkv_matmul")),
        helper.make_node("Add", [qkv0, c["b_heads"]], [qkv], name=name("qkv_bias")),
        helper.make_node("Split", [qkv, c["split"]], [q, k, v], name=name("split"), axis=0),
        helper.make_node("Transpose", [k], [kt], name=name("k_t"), perm=[0, 2, 1]),
        helper.make_node("MatMul", [q, kt], [s], name=name("scores")),
        helper.make_node("Softmax", [s], [p], name=name("softmax"), axis=-1),
        helper.make_node("MatMul", [p, v], [o], name=name("mix")),
        helper.make_node("MatMul", [o, c["wo_heads"]], [oh], name=name("out_matmul")),
        helper.make_node("ReduceSum", [oh, c["axis0"]], [o2], name=name("head_sum"), keepdims=0),
        helper.make_node("Add", [o2, c["bo"]], [y], name=name("out_bias")),
    ]
    inits = [onnx.numpy_helper.from_array(np.asarray(val), c[key]) for key, val in consts.items()]

    # Prove the replacement on random inputs before committing to it.
    old_nodes = [n for n in view.graph.node if id(n) in members]
    if not replacement_agrees(view, old_nodes, new_nodes, inits, [y], _CHECK_TOLERANCE):
        return False
    view.graph.initializer.extend(inits)
    view.replace(old_nodes, new_nodes)
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()
