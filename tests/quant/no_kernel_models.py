"""A model with an op TFLite Micro has no kernel for, int8 or float, and no rewrite or replacement for
(tests/quant/test_tflm_ops.py, test_int8.py: refused before calibration)."""

from __future__ import annotations

import torch
from torch import nn

from tests.quant.int8_models import SmallCnn


class Sign(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x) * x.abs().sqrt()


class SignCnn(SmallCnn):
    """SIGN: TFLite's kernels run it (float32), TFLite Micro has none."""

    def __init__(self) -> None:
        super().__init__(act=Sign)
