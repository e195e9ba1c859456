"""Small models TFLite Micro cannot run as the converter writes them (tests/quant/test_tflm_ops.py)."""

from __future__ import annotations

import torch
from torch import nn

SPECTRUM = (20, 16)  # [frames, frequency bins]
IMAGE = (3, 8, 8)


class LogMel(nn.Module):
    """A log-mel front end: TFLite Micro's LOG kernel is float32 only."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mel = nn.Linear(SPECTRUM[1], 8, bias=False)
        with torch.no_grad():
            self.mel.weight.abs_()
        self.conv = nn.Conv1d(8, 12, 3, padding=1)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mel = torch.log(self.mel(x * x) + 1e-3)
        return self.head(torch.relu(self.conv(mel.transpose(1, 2))).mean(-1))


class HardSigmoidNet(nn.Module):
    """nn.Hardsigmoid between convs: the TFLite converter fuses its clamp into RELU_0_TO_1."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(IMAGE[0], 8, 3, padding=1)
        self.gate = nn.Hardsigmoid()
        self.out = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gate(self.conv(x)))


class ImageAndVector(nn.Module):
    """Two inputs, ordered differently in the converted graph than in the Keras model (like multi_io)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(IMAGE[0], 8, 3, padding=1)
        self.meta = nn.Linear(6, 8)
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        pooled = torch.relu(self.conv(image)).mean((2, 3))
        return self.head(torch.cat([pooled, torch.relu(self.meta(meta))], dim=1))


class IndexSelect(nn.Module):
    """index_select with a constant permutation: PyTorch exports its indices as int64."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(IMAGE[0], 6, 3, padding=1)
        self.register_buffer("order", torch.tensor([3, 0, 5, 1, 4, 2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.index_select(self.conv(x), 1, self.order).mean((2, 3))
