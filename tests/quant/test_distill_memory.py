"""Synthetic inputs within a memory budget: distillation optimises at most DISTILL_ACTIVATIONS bytes of
activations together (quant/calibration.py), pruning's synthetic pool keeps its asked size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from edgeport.quant import calibration
from edgeport.quant.calibration import DISTILL_ACTIVATIONS, activation_bytes, distill_batches, distill_samples
from edgeport.quant.prune.prune import synthetic_inputs
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)

SPECS = [TensorSpec("x", INPUT_SHAPE)]


def test_a_model_with_large_activations_per_sample_is_distilled_in_smaller_batches() -> None:
    small, large = DISTILL_ACTIVATIONS // 1000, DISTILL_ACTIVATIONS // 20
    assert distill_batches(160, small) == [160]
    sizes = distill_batches(160, large)
    assert sum(sizes) == 160 and len(sizes) > 1
    assert max(sizes) * large <= DISTILL_ACTIVATIONS and max(sizes) - min(sizes) <= 1
    # A sample over the budget on its own is still made, one at a time.
    assert distill_batches(3, 2 * DISTILL_ACTIVATIONS) == [1, 1, 1]
    assert distill_batches(10, 100, budget=300) == [3, 3, 2, 2]


class Wide(nn.Module):
    """Activations grow with the input's area; a large weight that is not an activation."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.table = nn.Parameter(torch.zeros(1000, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean((2, 3)) + self.table[0, :8]


def test_activation_bytes_are_per_sample_and_grow_with_the_activations_not_the_weights() -> None:
    net = Wide().eval()
    torch.manual_seed(0)
    one = activation_bytes(net, [torch.randn(1, 3, 8, 8)])
    assert one == activation_bytes(net, [torch.randn(4, 3, 8, 8)])
    # 4x the area, ~4x the saved tensors; the 4 MB table is not counted.
    assert 3 * one < activation_bytes(net, [torch.randn(1, 3, 16, 16)]) < 5 * one
    assert one < 4 * 1000 * 1000


def test_distillation_past_the_budget_makes_every_input_in_several_seeded_batches() -> None:
    net = coupled().eval()
    per_sample = activation_bytes(net, [torch.zeros(INPUT_SHAPE)])
    samples, report = distill_samples(net, SPECS, 12, 0, {}, steps=5, budget=5 * per_sample)
    again, _ = distill_samples(net, SPECS, 12, 0, {}, steps=5, budget=5 * per_sample)
    assert len(samples) == 12 and report["batches"] == 3 and report["batch"] == 4
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(samples, again, strict=True))
    assert report["loss_end"] < report["loss_start"]
    # The batches are drawn apart, not one batch repeated.
    assert not np.allclose(samples[0]["x"], samples[4]["x"])
    _, whole = distill_samples(net, SPECS, 12, 0, {}, steps=5)
    assert whole["batches"] == 1 and whole["batch"] == 12


def test_the_synthetic_pool_keeps_its_size_when_its_chunks_are_split(monkeypatch: pytest.MonkeyPatch) -> None:
    net = coupled().eval()
    per_sample = activation_bytes(net, [torch.zeros(INPUT_SHAPE)])
    monkeypatch.setattr(calibration, "DISTILL_ACTIVATIONS", 3 * per_sample)
    pool, held, how, _notes = synthetic_inputs(net, SPECS, {}, 10, 4, seed=0)
    assert pool[0].shape[0] == 10 and held[0].shape[0] == 4 and "BatchNorm" in how
    assert torch.isfinite(pool[0]).all() and torch.isfinite(held[0]).all()
