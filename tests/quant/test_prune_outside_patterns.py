"""Patterns of architectures written outside edgeport (torchvision's ShuffleNetV2) that pruning
failed on, rebuilt as small modules: ShuffleNetV2's stride-1 units (chunk, concat, channel shuffle)
made torch-pruning's width inference divide by zero."""

from __future__ import annotations

import torch
import torch.nn as nn

from edgeport.quant.prune import prune_module
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo.models import _conv_bn
from tests.zoo.shuffle import _shuffle_view


class ShuffleV2Unit(nn.Module):
    """torchvision's ShuffleNetV2 stride-1 unit: half the channels pass, half go through the branch."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            _conv_bn(half, half, 1, act=nn.ReLU()),
            _conv_bn(half, half, 3, groups=half),
            _conv_bn(half, half, 1, act=nn.ReLU()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = x.chunk(2, dim=1)
        return _shuffle_view(torch.cat([kept, self.branch(branch)], dim=1), 2)


class ShuffleV2Stage(nn.Module):
    def __init__(self, units: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.units = nn.Sequential(*[ShuffleV2Unit(16) for _ in range(units)])
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.stem(x)).mean((2, 3)))


def test_shufflenet_v2_units_prune_their_branches() -> None:
    """Three units in a row: torch-pruning inferred a concat input 0 channels wide and its channel
    shuffle's reshape divided by it. The branches' inner channels prune; the channels the shuffle
    couples are kept whole, each with a note naming its module."""
    torch.manual_seed(0)
    model = ShuffleV2Stage().eval()
    result = prune_module(model, [TensorSpec("x", [1, 3, 16, 16])], {}, fast_options(ratio=0.2))
    assert result.section.removed() >= 0.2
    narrowed = {g.module for g in result.section.groups if g.channels_after < g.channels_before}
    assert narrowed and all(name.startswith("units.") and ".branch." in name for name in narrowed)
    assert any(note.startswith("stem.0: kept whole") for note in result.section.kept_whole)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert result.module(x).shape == model(x).shape == (2, 10)
