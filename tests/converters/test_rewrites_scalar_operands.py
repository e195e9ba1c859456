"""[1]-shaped constants of Add/Sub/Mul/Div -> rank-0 scalars: same outputs under onnxruntime; constants
that set the output's rank, or whose other operand is constant too, are left alone; a PyTorch model
with Paddle's `x * w + b` ([1]-shaped parameters) before a depthwise conv converts end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper, numpy_helper

from edgeport.converters.rewrites import scalar_operands
from edgeport.pipeline import ConvertOptions, convert_model
from tests.onnx_graphs import assert_same_outputs, make_model


def const_shapes(model) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in model.graph.initializer}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("const_first", [False, True])
def test_one_element_constants_become_scalars(op: str, const_first: bool):
    inputs = ["c", "x"] if const_first else ["x", "c"]
    node = helper.make_node(op, inputs, ["y"])
    before = make_model([node], {"x": [1, 4, 5, 3]}, ["y"], {"c": np.array([[1.75]])})
    after = scalar_operands.rewrite(before)
    assert [d for name, d in const_shapes(after).items() if name in after.graph.node[0].input] == [[]]
    for seed in range(3):
        assert_same_outputs(before, after, seed=seed)


def test_a_shared_constant_keeps_its_shape_for_other_readers():
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["m"]),
        helper.make_node("Concat", ["c", "c"], ["pair"], axis=0),
        helper.make_node("Add", ["m", "pair"], ["y"]),
    ]
    before = make_model(nodes, {"x": [2, 3, 2]}, ["y"], {"c": np.array([0.5])})
    after = scalar_operands.rewrite(before)
    assert const_shapes(after)["c"] == [1]
    assert_same_outputs(before, after)


def test_rank_setting_and_constant_only_operands_are_left_alone():
    wider = make_model(  # [1, 1, 1] makes the rank-1 input's result rank 3: not a scalar's job
        [helper.make_node("Add", ["x", "c"], ["y"])], {"x": [4]}, ["y"], {"c": np.ones((1, 1, 1))}
    )
    both = helper.make_node("Mul", ["a", "c"], ["y"])
    folded = make_model([both], {}, ["y"], {"a": np.array([2.0]), "c": np.array([3.0])})
    for before in (wider, folded):
        after = scalar_operands.rewrite(before)
        assert after.graph.SerializeToString() == before.graph.SerializeToString()
    assert numpy_helper.to_array(wider.graph.initializer[0]).shape == (1, 1, 1)


class ScaledDepthwise(torch.nn.Module):
    """Paddle's learnable-scalar affine (PP-OCRv4) between an activation and a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.expand = torch.nn.Conv2d(3, 8, 1)
        self.scale = torch.nn.Parameter(torch.tensor([1.5]))
        self.shift = torch.nn.Parameter(torch.tensor([0.25]))
        self.depthwise = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.depthwise(torch.relu(self.expand(x)) * self.scale + self.shift)


def scaled_depthwise() -> torch.nn.Module:
    torch.manual_seed(0)
    return ScaledDepthwise().eval()


def test_a_scalar_affine_before_a_depthwise_conv_converts(tmp_path: Path):
    # Without the rewrite onnx2tf writes a .tflite with no SignatureDefs, which LiteRT refuses.
    opts = ConvertOptions(
        source=f"{Path(__file__).resolve()}:scaled_depthwise",
        outdir=tmp_path / "out",
        input_shapes=[[1, 3, 16, 16]],
    )
    result = convert_model(opts)
    assert (tmp_path / "out" / "model_float32.tflite").is_file()
    assert scalar_operands.NAME in [
        r.name for r in result.pass_reports if getattr(r, "applied", False) is True
    ]
