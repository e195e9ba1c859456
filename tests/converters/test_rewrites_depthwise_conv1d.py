"""Depthwise Conv1d -> Unsqueeze, 2-D depthwise Conv, Squeeze: same outputs; grouped and 2-D convs
are left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from edgeport.converters.rewrites import depthwise_conv1d
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def conv1d(channels: int = 6, groups: int = 6, multiplier: int = 1, **attrs):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((channels * multiplier, channels // groups, 3))
    b = rng.standard_normal(channels * multiplier)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=groups, **attrs)
    return make_model([node], {"x": [1, channels, 21]}, ["y"], {"w": w, "b": b})


@pytest.mark.parametrize(
    ("multiplier", "attrs"),
    [
        (1, {"pads": [1, 1]}),
        (2, {"strides": [2], "pads": [0, 2]}),
        (1, {"dilations": [3], "pads": [3, 3]}),
        (1, {}),
    ],
)
def test_depthwise_conv1d_runs_as_2d(multiplier: int, attrs: dict):
    before = conv1d(multiplier=multiplier, **attrs)
    after = depthwise_conv1d.rewrite(before)
    assert ops(after) == {"Unsqueeze": 1, "Conv": 1, "Squeeze": 1}
    assert_same_outputs(before, after)


def test_grouped_and_dense_convs_are_left_alone():
    for model in (conv1d(groups=2), conv1d(groups=1)):
        assert ops(depthwise_conv1d.rewrite(model)) == {"Conv": 1}
