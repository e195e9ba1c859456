import numpy as np
import pytest
from onnx import helper

from edgeport.converters.rewrites import spatial_mean
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def mean_graph(shape=(1, 6, 5, 7), axes=(2, 3), keepdims=0, opset=17):
    consts = {"w": np.random.default_rng(0).standard_normal((shape[1], shape[1], *[1] * (len(shape) - 2)))}
    conv = helper.make_node("Conv", ["x", "w"], ["f"], kernel_shape=[1] * (len(shape) - 2))
    if opset >= 18:
        consts["axes"] = np.array(axes, np.int64)
        mean = helper.make_node("ReduceMean", ["f", "axes"], ["y"], keepdims=keepdims)
    else:
        mean = helper.make_node("ReduceMean", ["f"], ["y"], axes=list(axes), keepdims=keepdims)
    return make_model([conv, mean], {"x": list(shape)}, ["y"], consts, opset=opset)


@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("opset", [17, 18])
def test_mean_over_space_becomes_global_average_pool(keepdims: int, opset: int):
    for shape, axes in (((1, 6, 5, 7), (2, 3)), ((1, 6, 5, 7), (-1, -2)), ((2, 4, 3, 5, 2), (2, 3, 4))):
        before = mean_graph(shape, axes, keepdims, opset)
        after = spatial_mean.rewrite(before)
        assert "ReduceMean" not in ops(after) and ops(after)["GlobalAveragePool"] == 1
        assert_same_outputs(before, after)


def test_other_means_are_left_alone():
    for graph in (mean_graph(axes=(1,)), mean_graph(axes=(1, 2, 3)), mean_graph(shape=(1, 6, 9), axes=(2,))):
        assert spatial_mean.rewrite(graph).SerializeToString() == graph.SerializeToString()
