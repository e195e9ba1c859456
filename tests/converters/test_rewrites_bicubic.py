"""Bicubic Resize -> Gathers and weighted sums: the same values as PyTorch's bicubic interpolation
(every coordinate mode it exports, scale factors and sizes, up and down), no Resize left."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from edgeport.converters.rewrites import bicubic_resize
from edgeport.onnx_resize import cubic_taps
from tests.onnx_graphs import make_model, ops, run


def exported(kwargs: dict, shape: list[int]) -> onnx.ModelProto:
    class Resize(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.interpolate(x, mode="bicubic", **kwargs)

    buf = io.BytesIO()
    torch.onnx.export(Resize(), (torch.zeros(shape),), buf, dynamo=False, opset_version=17)
    return onnx.shape_inference.infer_shapes(onnx.load_from_string(buf.getvalue()))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 2, "align_corners": False},
        {"scale_factor": 2, "align_corners": True},
        {"size": (17, 11), "align_corners": True},
        {"size": (20, 7), "align_corners": False},
        {"scale_factor": 0.5, "align_corners": False},
        {"scale_factor": (1.5, 3), "align_corners": False},
    ],
)
def test_matches_torch_bicubic(kwargs: dict):
    shape = [1, 3, 9, 13]
    before = exported(kwargs, shape)
    after = bicubic_resize.rewrite(before)
    assert "Resize" not in ops(after) and ops(after)["Gather"] >= 4
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(x, mode="bicubic", **kwargs).numpy()
    (got,) = run(after, {after.graph.input[0].name: x.numpy()})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exclude", [False, True])
def test_weights_sum_to_one_and_indices_stay_inside(exclude: bool):
    idx, w = cubic_taps(5, 12, 12 / 5, "half_pixel", exclude_outside=exclude)
    np.testing.assert_allclose(w.sum(0), 1.0, atol=1e-6)
    assert idx.min() == 0 and idx.max() == 4


@pytest.mark.parametrize(
    "attrs",
    [
        {"exclude_outside": 1},
        {"coordinate_transformation_mode": "half_pixel_symmetric"},
        {"cubic_coeff_a": -0.5, "coordinate_transformation_mode": "asymmetric"},
    ],
)
def test_matches_onnxruntime_beyond_what_torch_exports(attrs: dict):
    # ONNX forms PyTorch's bicubic never writes (exclude_outside, TensorFlow's coefficient, the newer
    # coordinate mode), against onnxruntime's own cubic Resize.
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic", **attrs)
    scales = np.array([1, 1, 1.5, 0.6], np.float32)
    before = make_model([node], {"x": [1, 2, 6, 10]}, ["y"], {"scales": scales}, opset=19)
    before = onnx.shape_inference.infer_shapes(before)
    after = bicubic_resize.rewrite(before)
    assert "Resize" not in ops(after)
    x = np.random.default_rng(0).standard_normal((1, 2, 6, 10)).astype(np.float32)
    (expected,) = run(before, {"x": x})
    (got,) = run(after, {"x": x})
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "attrs",
    [
        {"mode": "linear"},
        {"mode": "cubic", "antialias": 1},
        {"mode": "cubic", "coordinate_transformation_mode": "tf_crop_and_resize"},
    ],
)
def test_other_resizes_are_left_alone(attrs: dict):
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    scales = np.array([1, 1, 2, 2], np.float32)
    before = make_model([node], {"x": [1, 2, 4, 4]}, ["y"], {"scales": scales}, opset=19)
    assert ops(bicubic_resize.rewrite(before)) == {"Resize": 1}
