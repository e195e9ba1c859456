"""Models written the way quant/tflm_ops.py's OP_WORKAROUNDS tells users to write them."""

from __future__ import annotations

from functools import partial

from torch import nn

from tests.quant.int8_models import SmallCnn


class TanhGeluCnn(SmallCnn):
    """GeluCnn (int8_models.py) with the GELU TFLite Micro runs: the tanh approximation."""

    def __init__(self) -> None:
        super().__init__(act=partial(nn.GELU, approximate="tanh"))
