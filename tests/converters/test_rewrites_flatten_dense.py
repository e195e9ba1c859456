"""Flatten (or Reshape to [N, -1]) of a feature map into a Gemm -> one Conv covering the map + Flatten:
same outputs; pooled 1x1 maps, sequences ([N, T, F]: no layout onnx2tf changes) and Gemms that are not
a Linear on the flattened map are left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgeport.converters.rewrites import flatten_dense
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def head(
    shape=(1, 4, 3, 5), flatten: str = "Flatten", trans_b: int = 1, bias: bool = True, alpha: float = 1.0
):
    rng = np.random.default_rng(4)
    features = int(np.prod(shape[1:]))
    w = rng.standard_normal((7, features) if trans_b else (features, 7))
    consts = {"w": w}
    if flatten == "Flatten":
        first = helper.make_node("Flatten", ["x"], ["f"], axis=1)
    else:
        first = helper.make_node("Reshape", ["x", "s"], ["f"])
        consts["s"] = np.array([shape[0], -1], np.int64)
    inputs = ["f", "w"]
    if bias:
        consts["b"] = rng.standard_normal(7)
        inputs.append("b")
    gemm = helper.make_node("Gemm", inputs, ["y"], transB=trans_b, alpha=alpha)
    return make_model([first, gemm], {"x": list(shape)}, ["y"], consts)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"flatten": "Reshape"},
        {"trans_b": 0},
        {"bias": False},
        {"shape": (2, 3, 4, 4)},
    ],
)
def test_flatten_dense_becomes_conv(kwargs: dict):
    before = head(**kwargs)
    after = flatten_dense.rewrite(before)
    assert ops(after) == {"Conv": 1, "Flatten": 1}
    assert_same_outputs(before, after)


@pytest.mark.parametrize("kwargs", [{"shape": (1, 16, 1, 1)}, {"alpha": 0.5}, {"shape": (1, 6, 9)}])
def test_pooled_maps_and_scaled_gemms_are_left_alone(kwargs: dict):
    before = head(**kwargs)
    assert ops(flatten_dense.rewrite(before)) == ops(before)
