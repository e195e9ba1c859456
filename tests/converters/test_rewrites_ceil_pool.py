import numpy as np
import torch
import torch.nn.functional as F
from onnx import helper

from edgeport.converters.rewrites import ceil_pool
from edgeport.onnx_graph import attr
from tests.onnx_graphs import assert_same_outputs, make_model, random_feeds, run


def pool_graph(op, size, kernel, stride, pads=(0, 0, 0, 0), count_include_pad=1, ceil_mode=1):
    kwargs = dict(
        kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads), ceil_mode=ceil_mode
    )
    if op == "AveragePool":
        kwargs["count_include_pad"] = count_include_pad
    return make_model([helper.make_node(op, ["x"], ["y"], **kwargs)], {"x": [1, 3, size, size]}, ["y"])


def torch_pool(op, x, kernel, stride, pad, count_include_pad=True):
    t = torch.from_numpy(x)
    if op == "MaxPool":
        return F.max_pool2d(t, kernel, stride, pad, ceil_mode=True).numpy()
    return F.avg_pool2d(t, kernel, stride, pad, ceil_mode=True, count_include_pad=count_include_pad).numpy()


def test_avg_pool_overhang_matches_pytorch_where_onnxruntime_does_not():
    for pad in (0, 1):
        before = pool_graph("AveragePool", 8, 3, 2, pads=(pad,) * 4)
        feeds = random_feeds(before)
        expected = torch_pool("AveragePool", feeds["x"], 3, 2, pad)
        # The reason this rewrite exists: ORT divides the last window by the full kernel size.
        assert np.abs(run(before, feeds)[0] - expected).max() > 1e-2
        after = ceil_pool.rewrite(before)
        np.testing.assert_allclose(run(after, feeds)[0], expected, rtol=1e-6, atol=1e-6)
        assert all(attr(n, "ceil_mode", 0) == 0 for n in after.graph.node)


def test_overhang_becomes_same_padding_when_it_fits():
    before = pool_graph("MaxPool", 15, 2, 2)
    after = ceil_pool.rewrite(before)
    (pool,) = after.graph.node
    assert attr(pool, "auto_pad") == b"SAME_UPPER" and attr(pool, "ceil_mode") == 0
    assert_same_outputs(before, after)
    feeds = random_feeds(before)
    np.testing.assert_allclose(run(after, feeds)[0], torch_pool("MaxPool", feeds["x"], 2, 2, 0))


def test_max_and_exclusive_avg_pool_keep_their_values():
    for before in (
        pool_graph("MaxPool", 10, 3, 2, pads=(1, 1, 1, 1)),
        pool_graph("AveragePool", 10, 3, 2, pads=(1, 1, 1, 1), count_include_pad=0),
        pool_graph("AveragePool", 9, 2, 2, count_include_pad=0),
    ):
        after = ceil_pool.rewrite(before)
        assert after.SerializeToString() != before.SerializeToString()
        assert_same_outputs(before, after)


def test_pools_without_overhang_are_left_alone():
    for graph in (pool_graph("AveragePool", 7, 3, 2), pool_graph("MaxPool", 8, 2, 2, ceil_mode=0)):
        assert ceil_pool.rewrite(graph).SerializeToString() == graph.SerializeToString()
