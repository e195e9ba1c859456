"""Small seeded models with the couplings pruning must keep consistent: a residual add, a concat, a
depthwise separable block, a flatten into a Linear, a channel split."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
import torch.nn as nn

from edgeport.manifest import Manifest
from edgeport.pipeline import FLOAT32_TOLERANCE, ConvertResult
from edgeport.quant.calibration import DISTILL_STEPS
from edgeport.quant.prune import PruneOptions, PruningSection
from tests.quant.models import _randomize_bns
from tests.quant.stream_models import INPUT_SHAPE


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Pruning tests run PyTorch on one thread: two OpenMP threads on a shared 2-core machine spin against
    each other (10x slower measured). Autouse in every module that imports it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Coupled(nn.Module):
    """stem -> residual block (add) -> concat with a depthwise-separable branch -> split -> flatten -> fc."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(3, w, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(w)
        self.conv1 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(w)
        self.dw = nn.Conv2d(w, w, 3, padding=1, groups=w, bias=False)
        self.bn_dw = nn.BatchNorm2d(w)
        self.pw = nn.Conv2d(w, w, 1, bias=False)
        self.bn_pw = nn.BatchNorm2d(w)
        self.mix = nn.Conv2d(2 * w, 2 * w, 1)
        self.bn_mix = nn.BatchNorm2d(2 * w)
        self.tail = nn.Conv2d(w, w, 3, stride=2, padding=1)
        self.fc = nn.Linear(w * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn0(self.stem(x)))
        b = torch.relu(self.bn1(self.conv1(a)))
        a = torch.relu(self.bn2(self.conv2(b)) + a)
        c = torch.relu(self.bn_dw(self.dw(a)))
        c = torch.relu(self.bn_pw(self.pw(c)))
        m = torch.relu(self.bn_mix(self.mix(torch.cat([a, c], 1))))
        left, right = torch.chunk(m, 2, dim=1)
        t = torch.relu(self.tail(left + right))
        return self.fc(torch.flatten(t, 1))


def coupled(width: int = 16) -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(Coupled(width))


def random_batch(n: int = 4, seed: int = 1, shape: Sequence[int] = INPUT_SHAPE) -> torch.Tensor:
    """`n` seeded standard-normal samples of `shape` (its batch axis replaced by `n`)."""
    return torch.randn(n, *shape[1:], generator=torch.Generator().manual_seed(seed))


def fast_options(**over: object) -> PruneOptions:
    """Options that prune these small models in about a second: 30 % of the FLOPs, widths in steps of 2,
    no recovery, a small synthetic pool made in calibration's 50 distillation steps (pruning's own 200 make
    better images, which these tests of the mechanics do not need); `over` replaces any of them."""
    values = {
        "ratio": 0.3,
        "round_to": 2,
        "min_width": 2,
        "recovery": "none",
        "samples": 16,
        "held_out": 8,
        "synthetic_steps": DISTILL_STEPS,
    }
    return PruneOptions.model_validate({**values, **over})


def verified_section(result: ConvertResult) -> PruningSection:
    """The pruning section a pruned convert wrote, once its verification passed with the float TFLite
    model within FLOAT32_TOLERANCE."""
    ver = result.manifest.verification
    assert ver is not None and ver.passed
    assert all(e.max_rel_error < FLOAT32_TOLERANCE for e in ver.errors if e.stage == "tflite_float32")
    return PruningSection.of(Manifest.read(result.outdir), str(result.outdir))


class PadShortcut(nn.Module):
    """ResNet 'option A': the shortcut pads zero channels, a coupling torch-pruning does not follow."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(16)
        self.conv_c = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn_c = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn_a(self.conv_a(x)))
        b = torch.relu(self.bn_b(self.conv_b(a)) + torch.nn.functional.pad(a, (0, 0, 0, 0, 4, 4)))
        c = torch.relu(self.bn_c(self.conv_c(b)))
        return self.fc(c.mean((2, 3)))
