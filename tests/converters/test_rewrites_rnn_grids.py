"""converters/rewrites/_grids.py: a tensor held as a grid of blocks, structural ops applied to the grid,
then assembled with ONNX ops, equals the same ops applied to the whole tensor in numpy."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgeport.converters.rewrites import _grids as g
from edgeport.onnx_graph import OnnxGraph
from tests.onnx_graphs import run


def builder() -> g.Builder:
    empty = helper.make_model(helper.make_graph([], "empty", [], []))
    return g.Builder(OnnxGraph(empty), "t")


def cut_into_blocks(
    full: np.ndarray, grid: tuple[int, ...], transposed: bool = False
) -> tuple[g.Grid, dict[str, np.ndarray]]:
    """`full` as a Grid over `grid` whose blocks are model inputs holding the blocks with their size-1
    axes dropped (and, if `transposed`, their remaining axes reversed: a transpose still to do)."""
    inner = tuple(1 if a in grid else s for a, s in enumerate(full.shape))
    kept = [a for a in range(full.ndim) if inner[a] != 1]
    blocks, feeds = {}, {}
    for key in np.ndindex(*(full.shape[a] for a in grid)):
        index = [slice(None)] * full.ndim
        for a, k in zip(grid, key, strict=True):
            index[a] = slice(k, k + 1)
        value = full[tuple(index)].reshape([inner[a] for a in kept])
        order = tuple(range(len(kept)))
        if transposed:
            value, order = value.T, tuple(reversed(order))
        name = f"b{'_'.join(map(str, key))}"
        feeds[name] = np.ascontiguousarray(value)
        blocks[key] = g.Block(name, value.shape, order)
    return g.Grid(full.shape, grid, blocks), feeds


def assembled(b: g.Builder, x: g.Grid, feeds: dict[str, np.ndarray]) -> np.ndarray:
    out = g.materialize(b, x, out="out")
    graph = helper.make_graph(
        b.nodes,
        "grid",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in feeds.items()],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, list(x.shape))],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return run(model, feeds)[0]


RNG = np.random.default_rng(0)


def test_a_grid_assembles_to_the_tensor_it_holds() -> None:
    full = RNG.standard_normal((4, 2, 3, 5)).astype(np.float32)  # Y: [steps, dirs, batch, hidden]
    x, feeds = cut_into_blocks(full, (0, 1))
    np.testing.assert_array_equal(assembled(builder(), x, feeds), full)


def test_a_pending_transpose_is_done_when_assembled() -> None:
    full = RNG.standard_normal((4, 3, 5)).astype(np.float32)
    x, feeds = cut_into_blocks(full, (0,), transposed=True)
    b = builder()
    np.testing.assert_array_equal(assembled(b, x, feeds), full)
    assert g.cost(x) > 0 and any(n.op_type == "Transpose" for n in b.nodes)


def test_bidirectional_sequence_spelling_costs_one_concat_per_step() -> None:
    """PyTorch's Y -> [steps, batch, dirs*hidden]: Transpose(0, 2, 1, 3) then Reshape."""
    full = RNG.standard_normal((4, 2, 3, 5)).astype(np.float32)
    x, feeds = cut_into_blocks(full, (0, 1))
    b = builder()
    y = g.reshape(b, g.transpose(x, (0, 2, 1, 3)), (4, 3, 10))
    assert y is not None and y.grid == (0,)
    assert [n.op_type for n in b.nodes] == ["Concat"] * 4
    want = full.transpose(0, 2, 1, 3).reshape(4, 3, 10)
    np.testing.assert_array_equal(assembled(b, y, feeds), want)


def test_picking_and_slicing_grid_axes_only_picks_blocks() -> None:
    full = RNG.standard_normal((6, 3, 5)).astype(np.float32)
    x, feeds = cut_into_blocks(full, (0,))
    last = g.select(x, 0, [5], keep_axis=False)  # y[-1]
    b = builder()
    np.testing.assert_array_equal(assembled(b, last, feeds), full[-1])
    assert [n.op_type for n in b.nodes] == ["Identity"]
    backwards = g.select(x, 0, [4, 2, 0], keep_axis=True)  # y[::-2] from step 4
    np.testing.assert_array_equal(assembled(builder(), backwards, feeds), full[4::-2])


def test_concatenating_grids_along_a_grid_axis_joins_their_blocks() -> None:
    a = RNG.standard_normal((2, 3, 5)).astype(np.float32)
    c = RNG.standard_normal((1, 3, 5)).astype(np.float32)
    x, feeds = cut_into_blocks(a, (0,))
    y, more = cut_into_blocks(c, ())  # one block, named "b"
    joined = g.concat([x, y], 0)  # h_n of two layers: [2, ...] and [1, ...]
    assert joined is not None and joined.grid == (0,)
    np.testing.assert_array_equal(assembled(builder(), joined, {**feeds, **more}), np.concatenate([a, c]))


def test_a_reshape_that_splits_a_grid_axis_is_refused() -> None:
    x, _ = cut_into_blocks(np.zeros((4, 3, 5), np.float32), (0,))
    assert g.reshape(builder(), x, (2, 2, 15)) is None


@pytest.mark.parametrize(
    ("shape", "axis", "want"),
    [([1, 1, 16], 0, 2), ([1, 1, 1], 0, 2), ([1, 1, 16], 1, 1), ([1, 4, 16], 0, 0), ([2, 1, 16], 1, 1)],
)
def test_unambiguous_axis(shape: list[int], axis: int, want: int) -> None:
    assert g.unambiguous_axis(shape, axis) == want


def test_stacked_states_are_assembled_along_the_unambiguous_axis() -> None:
    full = RNG.standard_normal((3, 1, 5)).astype(np.float32)  # h_n of 3 layers, batch 1
    x, feeds = cut_into_blocks(full, (0,))
    b = builder()
    np.testing.assert_array_equal(assembled(b, x, feeds), full)
    (concat,) = [n for n in b.nodes if n.op_type == "Concat"]
    assert helper.get_attribute_value(concat.attribute[0]) == 2
