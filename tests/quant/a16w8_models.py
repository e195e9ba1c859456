"""Small seeded models for the a16w8 tests (no training: their weights are what they are for).

WideResidual is a conv + residual block whose residual sum has a range set by two channels 64 times
wider than the other fourteen (as after a backbone's residual sums in a real detector); its head reads
every channel with the wide ones scaled back down, so the small channels carry most of the output.
Per-tensor int8 gives those small channels a few steps of the sum's range; int16 gives them 256 times
more.
"""

from __future__ import annotations

import torch
from torch import nn

SHAPE = (3, 16, 16)
WIDE_GAIN = 64.0
WIDE_CHANNELS = 2


class WideResidual(nn.Module):
    def __init__(self, seed: int = 0, gain: float = WIDE_GAIN) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 16, 1)
        self.head = nn.Conv2d(16, 4, 1)
        with torch.no_grad():
            wide = torch.ones(16)
            wide[:WIDE_CHANNELS] = gain
            self.stem.weight.mul_(wide[:, None, None, None])
            self.stem.bias.mul_(wide)
            self.head.weight.div_(wide[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.stem(x))
        b = a + self.pw(self.dw(a))
        return self.head(torch.relu(b))


class Seed1(WideResidual):
    def __init__(self) -> None:
        super().__init__(seed=1)


class Seed2(WideResidual):
    def __init__(self) -> None:
        super().__init__(seed=2)


class Detector(nn.Module):
    """A detector head: conv + hardswish, a product with a second conv (a MUL of two activations), a
    transposed conv and a sigmoid map. HARD_SWISH (fused by the converter) and onnx2tf's [1, 1, 1, C]
    TRANSPOSE_CONV bias are what a16w8 rewrites first."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(3, 8, 1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.up(nn.functional.hardswish(self.conv(x)) * self.gate(x)))


class Bilinear(nn.Module):
    """A conv + bilinear upsampling: TFLite Micro's RESIZE_BILINEAR has int8 and float kernels, no int16."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(self.conv(x), scale_factor=2, mode="bilinear", align_corners=False)


class GeluBlock(nn.Module):
    """Conv, erf GELU, conv, GELU again through a residual sum: TFLite Micro has no GELU kernel, so the
    integer models write each GELU out (quant/tflm_gelu.py), here in int16 ops."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mid = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = nn.functional.gelu(self.stem(x))
        return self.head(nn.functional.gelu(a + self.mid(a)))
