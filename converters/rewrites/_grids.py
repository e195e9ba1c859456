"""Tensors kept as grids of blocks while a rewrite builds a region, assembled only where read.

A rewrite that produces a tensor piece by piece (rnn_unroll: one state per time step and direction)
keeps it as a `Grid`: the logical tensor's shape, the axes it is cut along, and for each index along
those axes the new graph's tensor holding that block. The structural ops an exporter puts after such
a tensor (Squeeze, Unsqueeze, Reshape, Flatten, Identity, Transpose, Gather, Slice, Concat) are applied
to the grid (`apply_structural`), which costs no op: picking `y[:, -1]` picks a block, a transpose
re-labels axes, joining directions concatenates blocks. `materialize` assembles the tensor (a Concat
per grid axis) for readers that need the data.

A block's tensor may differ from its logical block by axes of size 1 and by a transpose it has not had
yet (`Block.order`), so a layout change is paid for once, where the tensor is assembled, if at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.onnx_graph import OnnxGraph, attr

STRUCTURAL = {
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


def non1(shape: Sequence[int]) -> list[int]:
    return [a for a, s in enumerate(shape) if s != 1]


@dataclass(frozen=True)
class Block:
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
class Grid:
    """A logical tensor of `shape` cut along the `grid` axes into blocks of size 1 on those axes;
    `blocks` maps each index over the grid axes (in grid order) to its block."""

    shape: tuple[int, ...]
    grid: tuple[int, ...]
    blocks: dict[tuple[int, ...], Block]

    @property
    def block_shape(self) -> tuple[int, ...]:
        return tuple(1 if a in self.grid else s for a, s in enumerate(self.shape))


def plain(name: str, shape: Sequence[int]) -> Grid:
    return Grid(tuple(shape), (), {(): Block(name, tuple(shape), tuple(non1(shape)))})


def regrid(shape: Sequence[int], grid: Sequence[int], blocks: dict[tuple[int, ...], Block]) -> Grid:
    """A Grid with grid axes of size 1 dropped (their blocks are the whole axis)."""
    keep = [i for i, a in enumerate(grid) if shape[a] != 1]
    if len(keep) == len(grid):
        return Grid(tuple(shape), tuple(grid), blocks)
    return Grid(
        tuple(shape), tuple(grid[i] for i in keep), {tuple(k[i] for i in keep): b for k, b in blocks.items()}
    )


def transpose(x: Grid, perm: Sequence[int]) -> Grid:
    perm = list(perm)
    where = [perm.index(a) for a in range(len(perm))]  # old axis -> new axis
    new_grid = sorted(where[g] for g in x.grid)
    rekey = [x.grid.index(perm[a]) for a in new_grid]
    old_block_axes = non1(x.block_shape)
    blocks = {}
    for key, b in x.blocks.items():
        by_new_axis = sorted(zip((where[a] for a in old_block_axes), b.order, strict=True))
        blocks[tuple(key[i] for i in rekey)] = Block(b.name, b.shape, tuple(s for _, s in by_new_axis))
    return Grid(tuple(x.shape[p] for p in perm), tuple(new_grid), blocks)


def reshape(b: Builder, x: Grid, shape: Sequence[int]) -> Grid | None:
    """`x` reshaped; None when the reshape mixes grid and block axes in a way a grid cannot show."""
    old, new = non1(x.shape), non1(shape)
    if [x.shape[a] for a in old] == [shape[a] for a in new]:  # only axes of size 1 come or go
        axis_map = dict(zip(old, new, strict=True))
        return Grid(tuple(shape), tuple(axis_map[g] for g in x.grid), dict(x.blocks))
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
        block_axes = non1(inner)
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
            blocks[(*key[:grid_pos], *key[grid_pos + 1 :])] = Block(name, tuple(merged_shape), first.order)
        grid = tuple(axis_map[k] for k in x.grid if k != g)
        return Grid(tuple(shape), grid, blocks)
    return None


def select(x: Grid, axis: int, indices: list[int], keep_axis: bool) -> Grid | None:
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
    return regrid(shape, grid, blocks)


def concat(parts: Sequence[Grid], axis: int) -> Grid | None:
    """Concatenation along `axis`, a grid axis of each part (or of size 1 in it)."""
    first = parts[0]
    others = [g for g in first.grid if g != axis]
    shape = list(first.shape)
    shape[axis] = sum(p.shape[axis] for p in parts)
    blocks: dict[tuple[int, ...], Block] = {}
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
    return regrid(shape, grid, blocks)


# --- new nodes -----------------------------------------------------------------------------------


class Builder:
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


def block_as(b: Builder, blk: Block, shape: tuple[int, ...], out: str | None = None) -> str:
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


def unambiguous_axis(block_shape: Sequence[int], axis: int) -> int:
    """The axis to concatenate blocks of `block_shape` along instead of `axis`, so that no other axis
    gives the same data in a reordered shape.

    When every axis up to `axis` and the one after it have size 1, concatenating along the later
    axis gives the same data, with its shape a permutation of the right one (h_n [2, 1, 16] from
    [1, 1, 16] states comes out [1, 2, 16]); onnx2tf checks a Concat's candidate axes last to first
    against onnxruntime, ignoring dimension order, and keeps the first that matches, i.e. the wrong one.
    The first axis after `axis` of size > 1 (else the last) has no such twin; a Reshape restores the
    shape."""
    if (
        any(d != 1 for d in block_shape[: axis + 1])
        or axis + 1 >= len(block_shape)
        or block_shape[axis + 1] != 1
    ):
        return axis
    return next((a for a in range(axis + 1, len(block_shape)) if block_shape[a] != 1), len(block_shape) - 1)


def materialize(b: Builder, x: Grid, out: str | None = None) -> str:
    """The logical tensor: each block in its logical shape, concatenated along the grid axes."""
    inner = x.block_shape
    if len(x.grid) == 1 and (axis := unambiguous_axis(inner, x.grid[0])) != x.grid[0]:
        parts = [block_as(b, x.blocks[(i,)], inner) for i in range(x.shape[x.grid[0]])]
        return b.reshape(b.op("Concat", parts, "cat", axis=axis), x.shape, "r", out=out)

    def assemble(prefix: tuple[int, ...], out: str | None) -> str:
        level = len(prefix)
        if level == len(x.grid):
            return block_as(b, x.blocks[prefix], inner, out)
        parts = [assemble((*prefix, i), None) for i in range(x.shape[x.grid[level]])]
        return b.op("Concat", parts, "cat", out=out, axis=x.grid[level])

    return assemble((), out)


def cost(x: Grid) -> int:
    """Transposes and reshapes `_materialize` would emit."""
    inner = x.block_shape
    return sum(2 * (not blk.in_order) + (blk.shape != inner) for blk in x.blocks.values())


def cut(b: Builder, x: Grid, axis: int) -> Grid:
    """`x` with `axis` made a grid axis (one Split of the assembled tensor when it is not one yet)."""
    if axis in x.grid or x.shape[axis] == 1:
        return x
    parts = b.split(materialize(b, x), x.shape[axis], axis, "cut")
    shape = list(x.shape)
    inner = list(shape)
    inner[axis] = 1
    return Grid(
        tuple(shape),
        (axis,),
        {(i,): Block(p, tuple(inner), tuple(non1(inner))) for i, p in enumerate(parts)},
    )


# --- structural ops ------------------------------------------------------------------------------


def _input(node: onnx.NodeProto, i: int) -> str:
    return node.input[i] if len(node.input) > i else ""


def _ints(view: OnnxGraph, node: onnx.NodeProto, index: int, attribute: str) -> list[int] | None:
    value = view.const(_input(node, index)) if _input(node, index) else attr(node, attribute)
    return None if value is None else [int(v) for v in np.asarray(value).reshape(-1)]


def apply_structural(view: OnnxGraph, b: Builder, node: onnx.NodeProto, env: dict[str, Grid]) -> Grid | None:
    """`node` applied to grids, or None when its result cannot stay a grid."""
    out_shape = view.static_shape(node.output[0])
    if out_shape is None or len(node.output) != 1:
        return None
    op = node.op_type
    if op == "Concat":
        if not all(i in env for i in node.input):
            return None
        axis = int(attr(node, "axis")) % len(out_shape)
        return concat([env[i] for i in node.input], axis)
    x = env[node.input[0]]
    if any(i in env for i in node.input[1:]):
        return None
    if op in ("Squeeze", "Unsqueeze", "Reshape", "Flatten", "Identity"):
        return reshape(b, x, out_shape)
    if op == "Transpose":
        perm = attr(node, "perm") or list(reversed(range(len(x.shape))))
        return transpose(x, list(perm))
    if op == "Gather":
        indices = view.const(_input(node, 1))
        if indices is None or indices.ndim > 1:
            return None
        axis = int(attr(node, "axis", 0)) % len(x.shape)
        picked = [int(i) % x.shape[axis] for i in indices.reshape(-1)]
        return select(x, axis, picked, keep_axis=indices.ndim == 1)
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
            x = select(x, axis, picked, keep_axis=True)
            if x is None:
                return None
        return x
    return None
