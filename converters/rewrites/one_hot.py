"""One-hot encodings -> a Gather from a constant table (TFLite Micro has no ONE_HOT kernel, int8 or float).

Two spellings are rewritten:
- `OneHot(indices, depth, values)` (PyTorch's F.one_hot, TensorFlow's tf.one_hot), with constant
  depth and values, on integer indices, any axis; a Cast reading its output alone is absorbed;
- `Cast(Equal(x, arange(n)))`, the one-hot written as a comparison with a constant iota along one axis
  where x has size 1 (JAX's jax.nn.one_hot, `(x[..., None] == torch.arange(n)).float()`), which the
  TFLite converter fuses into ONE_HOT itself.
Both become `Gather(table, Clip(x, low, high) + offset)` (a Transpose after it when the one-hot axis
is not the last): the table holds the rows the op produces for every index it can see, including an
all-`off` row for the indices outside the encoding (OneHot counts negative indices from the back,
Equal never matches them), so the result equals the op's for every integer input, out of range too.
A MatMul by constant weights reading the encoding alone is folded into the table (an embedding lookup).
The Clip and Add run on int32 (TFLite Micro has MAXIMUM, MINIMUM, ADD and GATHER for it); int64
indices are cast to int32 first. A node whose preconditions do not hold is left as it is and the log
says why.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgeport.converters.rewrites._axes import axes_node
from edgeport.onnx_graph import OnnxGraph, attr, node_rewrite, opset_version

NAME = "one_hot_to_gather"
log = logging.getLogger(__name__)

# Table elements above this are not worth a lookup (a vocabulary-sized one-hot is a matmul's job).
MAX_TABLE_ELEMENTS = 1 << 22
# Clip takes integers from opset 12 on.
_MIN_OPSET = 12
_INTEGER = {
    TensorProto.INT8,
    TensorProto.INT16,
    TensorProto.INT32,
    TensorProto.INT64,
    TensorProto.UINT8,
    TensorProto.UINT16,
    TensorProto.UINT32,
}
# Output types a Cast may turn the encoding into (a bool table would not run in TFLite Micro's GATHER).
_CASTABLE = {
    TensorProto.FLOAT: np.float32,
    TensorProto.FLOAT16: np.float16,
    TensorProto.DOUBLE: np.float64,
    TensorProto.INT8: np.int8,
    TensorProto.UINT8: np.uint8,
    TensorProto.INT16: np.int16,
    TensorProto.INT32: np.int32,
    TensorProto.INT64: np.int64,
}


def one_hot_table(depth: int, off: float, on: float, dtype: np.dtype, wrap_negative: bool) -> np.ndarray:
    """The rows a one-hot of `depth` gives each index, for lookup at `index + table_offset(...)`.

    Without `wrap_negative` (an Equal against arange): one `off` row for every index below 0, the
    depth rows, one `off` row for every index from `depth` up. With it (ONNX OneHot): indices
    -depth..-1 count from the back, so the depth rows come twice, between the two `off` rows.
    """
    eye = np.where(np.eye(depth, dtype=bool), on, off)
    off_row = np.full((1, depth), off)
    rows = [off_row, eye, eye, off_row] if wrap_negative else [off_row, eye, off_row]
    return np.concatenate(rows).astype(dtype)


def index_bounds(depth: int, wrap_negative: bool) -> tuple[int, int, int]:
    """(low, high, offset): Clip(index, low, high) + offset is the index's row in `one_hot_table`."""
    low = -depth - 1 if wrap_negative else -1
    return low, depth, -low


def _depth(view: OnnxGraph, node: onnx.NodeProto) -> int | str:
    value = view.input_const(node, 1)
    if value is None or value.size != 1:
        return "its depth is not a constant scalar"
    depth = float(value.reshape(-1)[0])
    if depth != int(depth) or depth < 1:
        return f"its depth {depth} is not a positive integer"
    return int(depth)


def _absorbed_cast(view: OnnxGraph, out: str) -> onnx.NodeProto | None:
    """The Cast that alone reads `out` (to a type a table can have), or None."""
    cast = view.only_consumer(out, "Cast")
    return cast if cast is not None and attr(cast, "to") in _CASTABLE else None


def _emit(
    view: OnnxGraph,
    old: list[onnx.NodeProto],
    nodes: list[onnx.NodeProto],
    indices: str,
    table: np.ndarray,
    bounds: tuple[int, int, int],
    axis: int,
    rank: int,
    out: str,
) -> None:
    """Replace `old` by `nodes` (which make `indices`), Cast? -> Clip -> Add -> Gather(table) ->
    Transpose? writing `out`; `rank` is the indices' rank, `axis` the encoding's in the output."""
    hint = old[0].name or "one_hot"
    low, high, offset = bounds
    nodes = list(nodes)
    if axis == rank and (folded := _folded_matmul(view, out, table, rank + 1)) is not None:
        dense, table = folded
        old, out = [*old, *dense], dense[-1].output[0]
    if view.elem_type(indices) != TensorProto.INT32:
        as_int32 = view.fresh(f"{hint}_int32")
        nodes.append(helper.make_node("Cast", [indices], [as_int32], name=view.fresh(f"{hint}_cast"), to=6))
        indices = as_int32

    def const(value: int, what: str) -> str:
        return view.add_initializer(np.array(value, np.int32), f"{hint}_{what}")

    clipped, rows = view.fresh(f"{hint}_clipped"), view.fresh(f"{hint}_rows")
    clip_in = [indices, const(low, "low"), const(high, "high")]
    nodes.append(helper.make_node("Clip", clip_in, [clipped], name=view.fresh(f"{hint}_clip")))
    nodes.append(
        helper.make_node("Add", [clipped, const(offset, "offset")], [rows], name=view.fresh(f"{hint}_add"))
    )
    lookup = out if axis == rank else view.fresh(f"{hint}_lookup")
    table_name = view.add_initializer(table, f"{hint}_table")
    nodes.append(
        helper.make_node("Gather", [table_name, rows], [lookup], name=view.fresh(f"{hint}_gather"), axis=0)
    )
    if axis != rank:  # the encoding's axis comes last out of the Gather
        perm = [*range(axis), rank, *range(axis, rank)]
        nodes.append(
            helper.make_node("Transpose", [lookup], [out], name=view.fresh(f"{hint}_axis"), perm=perm)
        )
    view.replace(old, nodes)


def _folded_matmul(
    view: OnnxGraph, out: str, table: np.ndarray, out_rank: int
) -> tuple[list[onnx.NodeProto], np.ndarray] | None:
    """([the MatMul, its bias Add if any], table @ weights + bias) when `out` is read only by a MatMul
    with constant 2-D float weights: a one-hot times a matrix is a row lookup (an embedding), and
    looking the row up in the product drops the matmul (magika: 2048 x 257 x 64 multiply-adds) and the
    0/1 table. A constant bias over the last axis, added to the product alone, goes into the table too
    (in int8 the sum is then rounded once, as the dense layer's was). With off = 0 and on = 1 each row
    is the weights row plus the bias, computed as the graph computes it, bit for bit."""
    matmul = view.only_consumer(out, "MatMul")
    if matmul is None or matmul.input[0] != out or table.dtype.kind != "f":
        return None
    weights = view.const(matmul.input[1])
    if (
        weights is None
        or weights.ndim != 2
        or weights.shape[0] != table.shape[1]
        or weights.dtype.kind != "f"
    ):
        return None
    dtype = np.result_type(table.dtype, weights.dtype)
    product = (table.astype(np.float64) @ weights.astype(np.float64)).astype(dtype)
    add = view.only_consumer(matmul.output[0], "Add")
    if add is None or add.input[0] == add.input[1]:
        return [matmul], product
    bias = view.const(add.input[1] if add.input[0] == matmul.output[0] else add.input[0])
    if (
        bias is None
        or bias.dtype != dtype
        or bias.ndim > out_rank
        or bias.shape[-1:] != (weights.shape[1],)
        or any(size != 1 for size in bias.shape[:-1])
    ):
        return [matmul], product
    return [matmul, add], (product + bias.reshape(-1)).astype(dtype)


def _skip(node: onnx.NodeProto, why: str) -> bool:
    log.info("%s: %s (%s) left as it is: %s", NAME, node.name or node.output[0], node.op_type, why)
    return False


def one_hot_problem(view: OnnxGraph, node: onnx.NodeProto) -> str:
    """Why this OneHot node cannot become a Gather ("" when it can)."""
    if opset_version(view.model) < _MIN_OPSET:
        return f"opset {opset_version(view.model)} has no integer Clip (needs {_MIN_OPSET})"
    depth = _depth(view, node)
    if isinstance(depth, str):
        return depth
    values = view.input_const(node, 2)
    if values is None or values.size != 2:
        return "its values are not a constant pair (off, on)"
    if view.elem_type(node.input[0]) not in _INTEGER:
        return "its indices are not integers"
    if view.rank(node.input[0]) is None:
        return "the rank of its indices is unknown"
    if (2 * depth + 2) * depth > MAX_TABLE_ELEMENTS:
        return f"depth {depth} needs a table over {MAX_TABLE_ELEMENTS} elements"
    return ""


def _one_hot(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    why = one_hot_problem(view, node)
    if why:
        return _skip(node, why)
    indices, depth, values = node.input[0], int(_depth(view, node)), view.input_const(node, 2)
    rank = int(view.rank(indices))
    axis = int(attr(node, "axis", -1))
    axis = axis + rank + 1 if axis < 0 else axis
    old, out, dtype = [node], node.output[0], values.dtype
    cast = _absorbed_cast(view, out)
    if cast is not None:
        old, out, dtype = [node, cast], cast.output[0], np.dtype(_CASTABLE[attr(cast, "to")])
    off, on = values.reshape(-1).tolist()
    table = one_hot_table(depth, off, on, dtype, wrap_negative=True)
    _emit(view, old, [], indices, table, index_bounds(depth, True), axis, rank, out)
    return True


def iota_axis(value: np.ndarray) -> int | None:
    """The axis along which the constant `value` is 0, 1, ..., n-1 (every other axis of size 1)."""
    long = [i for i, size in enumerate(value.shape) if size != 1]
    if len(long) > 1 or value.size < 1:
        return None
    flat = value.reshape(-1)
    if not np.array_equal(flat, np.arange(flat.size)):
        return None
    return long[0] if long else value.ndim - 1


def _equal_iota(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    sides = [(view.const(node.input[i]), node.input[1 - i]) for i in (0, 1)]
    found = next(((c, x) for c, x in sides if c is not None and iota_axis(c) is not None), None)
    if found is None or view.const(found[1]) is not None:
        return False  # not a one-hot: no constant iota, or a constant comparison
    iota, x = found
    if opset_version(view.model) < _MIN_OPSET:
        return _skip(node, f"opset {opset_version(view.model)} has no integer Clip (needs {_MIN_OPSET})")
    cast = _absorbed_cast(view, node.output[0])
    if cast is None:
        return _skip(node, "a comparison with an iota read by other than one Cast to a number")
    if view.elem_type(x) not in _INTEGER:
        return _skip(node, "it compares non-integers with the iota")
    shape = view.static_shape(x)
    if shape is None or len(shape) < iota.ndim:
        return _skip(node, "its other input has an unknown shape or a lower rank than the iota")
    depth = iota.size
    axis = len(shape) - iota.ndim + iota_axis(iota)
    if shape[axis] != 1:
        return _skip(node, f"its other input has size {shape[axis]}, not 1, on the iota's axis")
    if (depth + 2) * depth > MAX_TABLE_ELEMENTS:
        return _skip(node, f"depth {depth} needs a table over {MAX_TABLE_ELEMENTS} elements")
    hint = node.name or "one_hot"
    squeezed = view.fresh(f"{hint}_indices")
    squeeze = axes_node(view, "Squeeze", x, [axis], squeezed, view.fresh(f"{hint}_squeeze"))
    table = one_hot_table(depth, 0, 1, np.dtype(_CASTABLE[attr(cast, "to")]), wrap_negative=False)
    bounds = index_bounds(depth, False)
    _emit(view, [node, cast], [squeeze], squeezed, table, bounds, axis, len(shape) - 1, cast.output[0])
    return True


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type == "OneHot":
        return _one_hot(view, node)
    if node.op_type == "Equal":
        return _equal_iota(view, node)
    return False


rewrite = node_rewrite(_match)
