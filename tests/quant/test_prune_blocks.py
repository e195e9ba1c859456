"""quant/prune/blocks.py: which modules are residual blocks, and removing them whole through the
allocation (the cost model, the cut, the section)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from edgeport.pipeline import ConvertOptions, ConvertResult, convert_model
from edgeport.quant.prune import prune_module
from edgeport.quant.prune.allocate import CostModel, CostTerm, Sensitivity, allocate
from edgeport.quant.prune.blocks import inside, residual_blocks, residual_spine
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import read_tflite
from tests.quant.models import _randomize_bns
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)

SHAPE = [1, 8, 8, 8]


class Basic(nn.Module):
    """A ResNet basic block: relu(bn(conv(relu(bn(conv(x))))) + x), `out += x` spelled in place."""

    def __init__(self, w: int = 8, in_place: bool = False) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.conv2, self.bn2 = nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w)
        self.shortcut = nn.Sequential()
        self.in_place = in_place

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        if self.in_place:
            out += self.shortcut(x)
            return torch.relu(out)
        return torch.relu(out + self.shortcut(x))


class PreNorm(nn.Module):
    """Two residual adds in one module (a transformer layer's shape): h = x + a(x); y = h + m(h)."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.a = nn.Conv2d(w, w, 1)
        self.m = nn.Sequential(nn.Conv2d(w, 2 * w, 1), nn.GELU(), nn.Conv2d(2 * w, w, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + self.a(x)
        return h + self.m(h)


class Projected(nn.Module):
    """A 1x1 convolution on the shortcut: y = f(x) + g(x), not x plus a branch."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.f, self.g = nn.Conv2d(w, w, 3, padding=1), nn.Conv2d(w, w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.f(x) + self.g(x))


class Scaled(nn.Module):
    """The input scaled on the shortcut: removing the block would not leave x."""

    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.f = nn.Conv2d(w, w, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x) + 2 * x


class Net(nn.Module):
    def __init__(self, w: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(8, w, 3, padding=1)
        self.blocks = nn.Sequential(Basic(w), Basic(w, in_place=True), PreNorm(w), Projected(w), Scaled(w))
        self.shared = Basic(w)  # called twice: not a block to remove
        self.head = nn.Linear(w, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shared(self.shared(self.blocks(torch.relu(self.stem(x)))))
        return self.head(y.mean((2, 3)))


def net() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(Net()).eval()


def silent_net() -> nn.Module:
    """net() with blocks.0's branch silenced (its last BatchNorm's scale and shift zero): removing the
    block changes nothing."""
    model = net()
    with torch.no_grad():
        model.blocks[0].bn2.weight.zero_()
        model.blocks[0].bn2.bias.zero_()
    return model


def example() -> list[torch.Tensor]:
    return [torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))]


def test_residual_blocks_are_the_modules_that_add_a_branch_to_their_input() -> None:
    # Not a projection or scaled shortcut, not a module called twice, not a leaf.
    assert residual_blocks(net(), example()) == ["blocks.0", "blocks.1", "blocks.2"]


def test_a_stage_of_blocks_is_not_taken_for_one() -> None:
    """A Sequential of two blocks is its input plus branches too; its blocks are listed, not it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Sequential(Basic(), Basic()), nn.Conv2d(8, 8, 1)).eval()
    assert residual_blocks(model, example()) == ["1.0", "1.1"]


def test_excluded_modules_are_not_blocks() -> None:
    model = net()
    excluded = list(model.blocks[1].modules()) + [model.blocks[2].a]
    assert residual_blocks(model, example(), excluded) == ["blocks.0"]


def test_residual_spine_on_traces() -> None:
    traces = {
        kind: torch.fx.symbolic_trace(kind())
        for kind in (Basic, PreNorm, Projected, Scaled, lambda: nn.Sequential(Basic(), Basic()))
    }
    assert [residual_spine(gm) for gm in traces.values()] == [True, True, False, False, True]


def test_inside() -> None:
    assert inside("layer1.0.conv1", "layer1.0") and inside("layer1.0", "layer1.0")
    assert not inside("layer1.00.conv1", "layer1.0") and not inside("layer1", "layer1.0")


def test_a_removed_block_takes_its_modules_share_and_the_allocation_weighs_it() -> None:
    """Group 0 (a channel group inside block entry 2) and group 1 (outside); removing the block saves
    group 0's modules whole: at a lower error per MAC than narrowing group 1, it goes first, and group
    0's steps then save nothing."""
    model = CostModel([CostTerm(100, 0, blocks=(2,)), CostTerm(100, 1)])
    assert model.total([1.0, 1.0, 0]) == pytest.approx(100)
    assert model.total([0.5, 1.0, 1]) == pytest.approx(150)
    widths, options = [8, 8, 1], [[8, 4], [8, 4], [1, 0]]
    sens = [Sensitivity([0, 4], [0.0, 1.0]), Sensitivity([0, 4], [0.0, 1.0]), Sensitivity([0, 1], [0.0, 0.5])]
    result = allocate(model, widths, options, sens, 0.5)
    assert result.kept == [8, 8, 0] and result.steps == [(2, 0)]
    # A block that costs more error per MAC than narrowing a group waits its turn.
    sens[0], sens[2] = Sensitivity([0, 4], [0.0, 2.0]), Sensitivity([0, 1], [0.0, 5.0])
    assert allocate(model, widths, options, sens, 0.25).kept == [8, 4, 1]


def test_pruning_removes_a_block_whole_and_lists_it() -> None:
    """A silent block costs nothing to remove: asked for a cut no larger than it, pruning removes it,
    replaces it by identity, and the model's outputs stay those of the unpruned model."""
    model = silent_net()
    specs = [TensorSpec("x", SHAPE)]
    result = prune_module(model, specs, {}, fast_options(ratio=0.1, held_out=8))
    assert result.section.blocks_removed == ["blocks.0"]
    assert isinstance(result.module.blocks[0], nn.Identity)
    # Its inner channels went with it (the stream's group, which passes through it, is listed).
    assert not any(all(inside(m, "blocks.0") for m in g.modules) for g in result.section.groups)
    assert any(any(inside(m, "blocks.0") for m in g.modules) for g in result.section.groups)
    x = example()[0]
    with torch.no_grad():
        assert torch.allclose(result.module(x), model(x), atol=1e-5)
    assert "1 residual block removed" in result.section.describe()


def test_no_prune_blocks_cuts_channels_only() -> None:
    model = silent_net()
    result = prune_module(model, [TensorSpec("x", SHAPE)], {}, fast_options(ratio=0.1, blocks=False))
    assert result.section.blocks_removed == []
    assert not any(isinstance(m, nn.Identity) for m in result.module.modules())


def test_a_removed_block_converts_without_its_operators(tmp_path: Path) -> None:
    """convert --prune: the block is gone from the .tflite (one ADD fewer), verified within the float
    tolerance against the pruned model."""
    source = f"{Path(__file__)}:silent_net"

    def converted(name: str, prune: object) -> ConvertResult:
        return convert_model(
            ConvertOptions(source=source, outdir=tmp_path / name, input_shapes=[SHAPE], prune=prune)
        )

    pruned, unpruned = converted("p", fast_options(ratio=0.1)), converted("u", None)
    assert verified_section(pruned).blocks_removed == ["blocks.0"]
    before, after = (read_tflite(r.outdir / "model_float32.tflite").op_counts for r in (unpruned, pruned))
    assert after["ADD"] == before["ADD"] - 1
