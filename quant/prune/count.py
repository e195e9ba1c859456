"""Multiply-accumulates of one inference, per Conv/Linear module, and parameter counts.

MACs here are the convolutions' and fully-connected layers' (what pruning removes and what int8
kernels spend their time in): a Conv is output elements x (input channels / groups) x kernel size, a
Linear output elements x input features, for the batch of the inputs given divided by its size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn as nn


def module_macs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """MACs per Conv/Linear module name for one sample (a module called twice counts twice)."""
    macs: dict[str, int] = {}
    batch = max(1, int(inputs[0].shape[0])) if inputs and inputs[0].dim() > 0 else 1

    def hook(name: str):  # noqa: ANN202 - a forward hook
        def count(m: nn.Module, _args: tuple, out: torch.Tensor) -> None:
            if isinstance(m, nn.modules.conv._ConvNd):
                per = (m.in_channels // m.groups) * math.prod(m.kernel_size)
            else:
                per = m.in_features
            macs[name] = macs.get(name, 0) + out.numel() * per // batch

        return count

    watched = (
        (m, hook(name))
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear)
    )
    forward_with_hooks(module, inputs, watched)
    return macs


def forward_with_hooks(
    module: nn.Module, inputs: Sequence[torch.Tensor], hooks: Iterable[tuple[nn.Module, Callable]]
) -> None:
    """One no-grad forward of `module` with each (submodule, forward hook) attached, removed on every path."""
    handles = [m.register_forward_hook(h) for m, h in hooks]
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
