"""quant/onnx_torch.py's Resize (nearest, linear and cubic, every coordinate transformation and nearest
rounding ONNX defines, scales or sizes, cubic's coefficient and exclude_outside) against onnxruntime, at a
batch larger than the exported one."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper

from edgeport.quant import onnx_torch
from tests.quant.helpers import make_model

TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"]
NEAREST = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]
# (scales, sizes) of a [1, 2, 4, 6] input: up, down, uneven, one output row (pytorch_half_pixel's case).
SHAPES = {
    "up2": ([1, 1, 2, 2], None),
    "down_uneven": ([1, 1, 0.5, 0.6], None),
    "up_uneven": ([1, 1, 1.5, 1.75], None),
    "sizes": (None, [1, 2, 7, 5]),
    "sizes_one_row": (None, [1, 2, 1, 9]),
}
CASES = [("linear", t, "round_prefer_floor", s) for t, s in itertools.product(TRANSFORMS, SHAPES)]
CASES += [("nearest", t, n, s) for t, n, s in itertools.product(TRANSFORMS, NEAREST, SHAPES)]
# Cubic: ONNX's coefficient and TensorFlow's, taps outside the input repeating the edge or excluded.
CUBIC = [(-0.75, 0), (-0.5, 0), (-0.75, 1)]
CASES += [
    ("cubic", t, "round_prefer_floor", s, f"a{coeff}-exclude{exclude}")
    for t, s, (coeff, exclude) in itertools.product(TRANSFORMS, SHAPES, CUBIC)
]


def _resize_model(  # noqa: ANN202
    mode: str, transform: str, nearest: str, shape: str, cubic: str = "a-0.75-exclude0", opset: int = 19
):
    scales, sizes = SHAPES[shape]
    inits = {"scales": np.array(scales, np.float32)} if scales else {"sizes": np.array(sizes, np.int64)}
    inputs = ["x", "", "scales"] if scales else ["x", "", "", "sizes"]
    coeff, exclude = cubic.removeprefix("a").split("-exclude")
    node = helper.make_node(
        "Resize",
        inputs,
        ["y"],
        mode=mode,
        coordinate_transformation_mode=transform,
        nearest_mode=nearest,
        cubic_coeff_a=float(coeff),
        exclude_outside=int(exclude),
    )
    return make_model([node], {"x": [1, 2, 4, 6]}, ["y"], inits, opset=opset)


@pytest.mark.parametrize("case", CASES, ids=["-".join(c) for c in CASES])
def test_resize_matches_onnxruntime(case: tuple[str, ...]) -> None:
    model = _resize_model(*case)
    rng = np.random.default_rng(3)
    samples = [{"x": rng.standard_normal((1, 2, 4, 6)).astype(np.float32)} for _ in range(2)]
    assert onnx_torch.check_against_onnxruntime(onnx_torch.onnx_to_torch(model), model, samples) < 1e-5


def test_resize_is_differentiable_for_distillation() -> None:
    import torch

    ev = onnx_torch.onnx_to_torch(_resize_model("linear", "half_pixel", "floor", "up_uneven"))
    x = torch.randn(2, 2, 4, 6, requires_grad=True)
    ev(x).square().sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        ({"mode": "area"}, "Resize mode 'area'"),
        ({"coordinate_transformation_mode": "tf_crop_and_resize"}, "tf_crop_and_resize"),
        ({"antialias": 1}, "antialias"),
    ],
)
def test_resize_forms_it_lacks_are_refused_naming_them(attrs: dict, words: str) -> None:
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], **attrs)
    model = make_model([node], {"x": [1, 2, 4, 6]}, ["y"], {"scales": np.array([1, 1, 2, 2], np.float32)}, 19)
    ev = onnx_torch.onnx_to_torch(model)
    import torch

    with pytest.raises(onnx_torch.UnsupportedOnnxGraph, match=words) as err:
        ev(torch.zeros(1, 2, 4, 6))
    assert err.value.op == "Resize"
