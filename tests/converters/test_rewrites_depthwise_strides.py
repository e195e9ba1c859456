"""Depthwise Conv with unequal strides -> stride-1 conv + strided Slice: same outputs under onnxruntime;
other convs are left alone; a PyTorch model with a (2, 1) depthwise conv converts end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from edgeport.converters.rewrites import depthwise_strides
from edgeport.pipeline import ConvertOptions, convert_model
from tests.onnx_graphs import assert_same_outputs, make_model, ops


def conv(channels: int = 6, groups: int = 6, multiplier: int = 1, kernel: int = 3, **attrs):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((channels * multiplier, channels // groups, kernel, kernel))
    b = rng.standard_normal(channels * multiplier)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=groups, **attrs)
    return make_model([node], {"x": [1, channels, 13, 10]}, ["y"], {"w": w, "b": b})


@pytest.mark.parametrize(
    ("multiplier", "kernel", "attrs"),
    [
        (1, 3, {"strides": [2, 1], "pads": [1, 1, 1, 1]}),
        (1, 3, {"strides": [1, 2], "pads": [1, 1, 1, 1]}),
        (2, 5, {"strides": [2, 1], "pads": [2, 1, 2, 0]}),
        (1, 3, {"strides": [3, 2]}),
        (1, 3, {"strides": [2, 1], "pads": [2, 2, 2, 2], "dilations": [2, 2]}),
    ],
)
def test_unequal_strides_become_a_stride1_conv_and_a_slice(multiplier: int, kernel: int, attrs: dict):
    before = conv(multiplier=multiplier, kernel=kernel, **attrs)
    after = depthwise_strides.rewrite(before)
    assert ops(after) == {"Conv": 1, "Slice": 1}
    (new_conv,) = [n for n in after.graph.node if n.op_type == "Conv"]
    assert [a.ints for a in new_conv.attribute if a.name == "strides"] == [[1, 1]]
    for seed in range(3):
        assert_same_outputs(before, after, seed=seed)


@pytest.mark.parametrize(
    ("groups", "attrs"),
    [
        (1, {"strides": [2, 1], "pads": [1, 1, 1, 1]}),  # a regular conv
        (2, {"strides": [2, 1], "pads": [1, 1, 1, 1]}),  # grouped, not depthwise
        (6, {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # depthwise with equal strides
        (6, {"strides": [2, 1], "auto_pad": "SAME_UPPER"}),  # pads that depend on the stride
    ],
)
def test_other_convs_are_left_alone(groups: int, attrs: dict):
    before = conv(groups=groups, **attrs)
    after = depthwise_strides.rewrite(before)
    assert after.graph.SerializeToString() == before.graph.SerializeToString()


class TallDepthwise(torch.nn.Module):
    """Halves only the height with a depthwise conv, as Paddle OCR's recognition backbones do."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = torch.nn.Conv2d(3, 8, 1)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, stride=(2, 1), padding=1, groups=8)
        self.head = torch.nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.depthwise(torch.relu(self.expand(x)))))


def tall_depthwise() -> torch.nn.Module:
    torch.manual_seed(0)
    return TallDepthwise().eval()


def strided_depthwise_1d() -> torch.nn.Module:
    # depthwise_conv1d_to_2d runs it as a 2-D conv with strides (1, 2).
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv1d(4, 8, 1),
        torch.nn.ReLU(),
        torch.nn.Conv1d(8, 8, 3, stride=2, padding=1, groups=8),
    ]
    return torch.nn.Sequential(*layers).eval()


@pytest.mark.parametrize(
    ("builder", "shape"), [("tall_depthwise", [1, 3, 16, 12]), ("strided_depthwise_1d", [1, 4, 32])]
)
def test_a_strided_depthwise_pytorch_model_converts(tmp_path: Path, builder: str, shape: list[int]):
    # Without the rewrite onnx2tf writes a .tflite with no SignatureDefs, which LiteRT refuses.
    opts = ConvertOptions(
        source=f"{Path(__file__).resolve()}:{builder}", outdir=tmp_path / "out", input_shapes=[shape]
    )
    result = convert_model(opts)
    assert (tmp_path / "out" / "model_float32.tflite").is_file()
    assert depthwise_strides.NAME in [
        r.name for r in result.pass_reports if getattr(r, "applied", False) is True
    ]
