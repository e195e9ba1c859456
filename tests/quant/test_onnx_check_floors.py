"""The evaluator's onnxruntime check judges a probability map near 0 against its scale (converters/
verify.scale_floors), as verification does: onnxruntime's approximate logistic kernel differs from
torch.sigmoid by ~1e-8 where both are ~0, a large error relative to such an output's own maximum.
PP-OCRv4 det (a sigmoid text map, ~0 on inputs without text) was refused by --prune for it."""

from __future__ import annotations

import numpy as np
from onnx import helper

from edgeport.converters.verify import scale_floors
from edgeport.quant import onnx_torch
from edgeport.quant.prune.onnx_source import prunable_module
from edgeport.tensors import TensorSpec, random_inputs
from tests.quant.helpers import make_model


def _dark_map():  # noqa: ANN202 - a Conv whose sigmoid output is ~0 everywhere
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["c"], ["y"]),
    ]
    inits = {"w": 0.1 * rng.standard_normal((4, 3, 3, 3)), "b": np.full(4, -12.0)}
    return make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)


def test_a_probability_map_near_0_is_checked_against_its_scale() -> None:
    model = _dark_map()
    samples = random_inputs([TensorSpec("x", [1, 3, 8, 8])], 2, 0)
    ev = onnx_torch.onnx_to_torch(model)
    floors = scale_floors(model)
    assert floors == {"y": floors["y"]}
    # Without the floor the relative error is measured against an output of ~1e-5: not a real difference.
    assert onnx_torch.check_against_onnxruntime(ev, model, samples) > onnx_torch.CHECK_TOLERANCE
    assert onnx_torch.check_against_onnxruntime(ev, model, samples, floors) < onnx_torch.CHECK_TOLERANCE
    module = prunable_module(model, [TensorSpec("x", [1, 3, 8, 8])], floors)
    assert module.layers
