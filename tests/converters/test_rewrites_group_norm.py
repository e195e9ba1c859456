"""GroupNorm's Reshape / InstanceNormalization / Reshape export -> per-channel statistics averaged over
each group by a 1x1 conv: same outputs, no reshape of the channel axis left."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from edgeport.converters.rewrites import group_norm
from tests.onnx_graphs import make_model, max_rel_error, ops


def grouped_graph(shape: list[int], groups: int, scale=None, bias=None, opset: int = 17) -> onnx.ModelProto:
    rng = np.random.default_rng(3)
    consts = {
        "grouped": np.array([shape[0], groups, -1], np.int64),
        "back": np.array(shape, np.int64),
        "s": np.ones(groups) if scale is None else scale,
        "b": np.zeros(groups) if bias is None else bias,
        "gamma": rng.standard_normal([shape[1]] + [1] * (len(shape) - 2)),
    }
    nodes = [
        helper.make_node("Reshape", ["x", "grouped"], ["r"]),
        helper.make_node("InstanceNormalization", ["r", "s", "b"], ["n"], epsilon=1e-3),
        helper.make_node("Reshape", ["n", "back"], ["y0"]),
        helper.make_node("Mul", ["y0", "gamma"], ["y"]),
    ]
    return make_model(nodes, {"x": shape}, ["y"], consts, opset=opset)


@pytest.mark.parametrize(
    ("shape", "groups"), [([1, 8, 5, 6], 4), ([1, 8, 5, 6], 1), ([2, 6, 11], 3), ([1, 4, 3, 3], 4)]
)
def test_group_norm_keeps_outputs_without_reshapes(shape: list[int], groups: int):
    before = grouped_graph(shape, groups)
    after = group_norm.rewrite(before)
    assert "Reshape" not in ops(after) and "InstanceNormalization" not in ops(after)
    assert max_rel_error(before, after) < 1e-5


@pytest.mark.parametrize("opset", [17, 18])
def test_group_scale_and_bias_and_opsets(opset: int):
    before = grouped_graph(
        [1, 6, 4, 4], 3, scale=np.array([0.5, 2.0, -1.0]), bias=np.array([0.1, 0, -3]), opset=opset
    )
    after = group_norm.rewrite(before)
    assert ops(after)["Conv"] == 2
    assert max_rel_error(before, after) < 1e-5


def test_torch_group_norm_export_is_matched():
    net = torch.nn.GroupNorm(2, 6).eval()
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.randn(1, 6, 5, 7),), buf, dynamo=False, opset_version=17)
    model = onnx.load_from_string(buf.getvalue())
    model = onnx.shape_inference.infer_shapes(model)
    from edgeport.converters import onnx_prepare

    model, _ = onnx_prepare.simplify(model, fuse_bn=False)
    after = group_norm.rewrite(model)
    assert "InstanceNormalization" not in ops(after)
    assert max_rel_error(model, after) < 1e-5


def test_reshape_to_other_shapes_is_left_alone():
    before = grouped_graph([1, 8, 4, 4], 4)
    before.graph.node[2].input[1] = "grouped"  # second reshape no longer restores the input shape
    before.graph.ClearField("output")
    before.graph.output.extend([helper.make_tensor_value_info("n", onnx.TensorProto.FLOAT, None)])
    after = group_norm.rewrite(before)
    assert ops(after) == ops(before)


def test_group_average_weight():
    w = group_norm.group_average(4, 2, 2)
    assert w.shape == (4, 4, 1, 1)
    np.testing.assert_array_equal(
        w[:, :, 0, 0], [[0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0.5, 0.5]]
    )
