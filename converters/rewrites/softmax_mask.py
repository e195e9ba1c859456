"""A -inf (or float32-max) attention mask before a Softmax, added or selected -> a Where with a finite fill.

`scores + mask` with a constant mask of 0 / -inf (a causal attn_mask, a key_padding_mask, SDPA's
is_causal) cannot be quantized: the int8 step of a tensor holding -inf or -3.4e38 is itself infinite
or 1e36, so the quantizer refuses the model. The masked scores are replaced, not added to:
Where(keep, scores + finite part of the mask, min(row) - MARGIN), the row being the Softmax's axis;
a Where(mask, -inf, scores) (masked_fill) gets the same fill in place of its constant.
A masked score is then at least MARGIN below every kept one of its row, so its probability is at
most exp(-MARGIN) (1.3e-14) instead of 0, and the kept probabilities are the same bit for bit: the
Softmax's sum starts at exp(0) = 1 for the row's largest score, and the masked terms together stay
below half a float32 ulp of it for rows of up to millions of positions. (A row with every position
masked, NaN before, becomes uniform.) The fill follows the row instead of being one large constant,
and the margin is no larger than exactness needs, because an int8 tensor's step is its range / 255:
a constant -1e4 would leave the kept scores a step of about 40, a margin of 104 (exp itself
underflowing to 0) a range widened by 104 instead of 32.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version

NAME = "softmax_mask_to_where"

# Mask values at or below this are "masked" (-inf, float32's lowest, -1e30 spellings of it).
MASKED_BELOW = -1e30
# How far below its row's smallest score a masked position is put (see the module docstring).
MARGIN = 32.0


def _softmax_axis(view: OnnxGraph, softmax: onnx.NodeProto, rank: int) -> int | None:
    """The Softmax's one axis (opset 13 on; before, Softmax flattens the trailing axes: only the last
    axis is one row then)."""
    axis = int(attr(softmax, "axis", -1 if opset_version(view.model) >= 13 else 1))
    axis = axis + rank if axis < 0 else axis
    if opset_version(view.model) < 13 and axis != rank - 1:
        return None
    return axis if 0 <= axis < rank else None


def _split_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(keep, finite part) of an additive mask with masked entries; None if it has none, or NaN/+inf."""
    masked = mask <= MASKED_BELOW
    if not masked.any() or np.isnan(mask).any() or np.isposinf(mask).any():
        return None
    return ~masked, np.where(masked, 0.0, mask).astype(np.float32)


def _add_scores(
    view: OnnxGraph, node: onnx.NodeProto, hint: str
) -> tuple[np.ndarray, str, list[onnx.NodeProto]] | None:
    """Add(scores, mask) or Add(mask, scores): (keep, the scores with the mask's finite part added,
    the nodes that add it)."""
    consts = [view.input_const(node, i) for i in (0, 1)]
    if len(node.input) != 2 or (consts[0] is None) == (consts[1] is None):
        return None
    side = 0 if consts[0] is not None else 1
    scores = node.input[1 - side]
    split = _split_mask(np.asarray(consts[side], np.float32))
    if split is None or view.static_shape(scores) != view.static_shape(node.output[0]):
        return None
    keep, finite = split
    if not finite.any():
        return keep, scores, []
    biased = view.fresh(f"{hint}_biased")
    bias = view.add_initializer(finite, f"{hint}_bias")
    return keep, biased, [helper.make_node("Add", [scores, bias], [biased], name=view.fresh(f"{hint}_add"))]


def _gemm_scores(
    view: OnnxGraph, node: onnx.NodeProto, hint: str
) -> tuple[np.ndarray, str, list[onnx.NodeProto]] | None:
    """Gemm(A, B, mask) (onnxsim fuses q @ kT + mask into one): (keep, the Gemm's output with the
    mask's finite part as its C, that Gemm)."""
    mask = view.input_const(node, 2) if len(node.input) > 2 and node.input[2] else None
    beta = float(attr(node, "beta", 1.0))
    split = (
        None if mask is None or beta <= 0 else _split_mask(np.asarray(mask, np.float32) * np.float32(beta))
    )
    if split is None:
        return None
    keep, _ = split
    finite = np.where(keep, mask, 0.0).astype(np.float32)
    scores = view.fresh(f"{hint}_scores")
    gemm = onnx.NodeProto()
    gemm.CopyFrom(node)
    gemm.name, gemm.output[0] = view.fresh(f"{hint}_gemm"), scores
    if finite.any():
        gemm.input[2] = view.add_initializer(finite, f"{hint}_bias")
    else:
        del gemm.input[2]
    return keep, scores, [gemm]


def _where_scores(
    view: OnnxGraph, node: onnx.NodeProto, hint: str
) -> tuple[str, str, list[onnx.NodeProto], int] | None:
    """Where(cond, masked, scores) or Where(cond, scores, masked) with `masked` a constant of masked
    values only (masked_fill(mask, -inf)): (cond, scores, no nodes, the operand the fill replaces)."""
    for side in (1, 2):
        value = view.input_const(node, side)
        if value is None or not (np.asarray(value, np.float32) <= MASKED_BELOW).all():
            continue
        scores = node.input[3 - side]
        if view.input_const(node, 3 - side) is not None or not view.is_float32(scores):
            return None
        if view.static_shape(scores) != view.static_shape(node.output[0]):
            return None
        return node.input[0], scores, [], side
    return None


def _keep_form(
    finder: Callable[[OnnxGraph, onnx.NodeProto, str], tuple[np.ndarray, str, list[onnx.NodeProto]] | None],
) -> Callable[[OnnxGraph, onnx.NodeProto, str], tuple[str, str, list[onnx.NodeProto], int] | None]:
    """An additive-mask finder as a Where: its keep array becomes the condition, the fill the else."""

    def find(
        view: OnnxGraph, node: onnx.NodeProto, hint: str
    ) -> tuple[str, str, list[onnx.NodeProto], int] | None:
        found = finder(view, node, hint)
        if found is None or np.ndim(found[0]) > len(view.static_shape(node.output[0]) or []):
            return None
        keep, scores, nodes = found
        return view.add_initializer(keep, f"{hint}_keep"), scores, nodes, 2

    return find


_FINDERS = {"Add": _keep_form(_add_scores), "Gemm": _keep_form(_gemm_scores), "Where": _where_scores}


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type not in _FINDERS or not view.is_float32(node.output[0]):
        return False
    softmax = view.only_consumer(node.output[0], "Softmax")
    shape = view.static_shape(node.output[0])
    axis = None if softmax is None or shape is None else _softmax_axis(view, softmax, len(shape))
    if axis is None:
        return False
    hint = node.name or "mask"
    found = _FINDERS[node.op_type](view, node, hint)
    if found is None:
        return False
    cond, scores, nodes, fill_side = found
    low, fill = view.fresh(f"{hint}_row_min"), view.fresh(f"{hint}_fill")
    if opset_version(view.model) >= 18:
        axes = view.add_initializer(np.array([axis], np.int64), f"{hint}_axis")
        nodes.append(helper.make_node("ReduceMin", [scores, axes], [low], name=view.fresh(hint), keepdims=1))
    else:
        nodes.append(
            helper.make_node("ReduceMin", [scores], [low], name=view.fresh(hint), axes=[axis], keepdims=1)
        )
    margin = view.add_initializer(np.array(MARGIN, np.float32), f"{hint}_margin")
    operands = [cond, fill, scores] if fill_side == 1 else [cond, scores, fill]
    nodes += [
        helper.make_node("Sub", [low, margin], [fill], name=view.fresh(f"{hint}_fill_sub")),
        helper.make_node("Where", operands, [node.output[0]], name=view.fresh(f"{hint}_where")),
    ]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)
