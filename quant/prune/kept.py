"""Which of the unpruned model's channels each module's output keeps, past the layers the cut narrows.

The cut knows, from torch-pruning's index mapping, which output channels every Conv/Linear/BatchNorm it
narrowed keeps. Recovery also compares outputs of modules the cut does not touch but whose output is a
narrowed tensor (a residual block's output: the sum of its last BatchNorm and its shortcut, after a
ReLU). Those inherit the map through the element-wise ops that produce them: one forward follows it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode

# Ops whose output channel c is computed from their operands' channel c alone.
ELEMENTWISE = {
    "add",
    "add_",
    "__add__",
    "__radd__",
    "__iadd__",
    "sub",
    "__sub__",
    "mul",
    "__mul__",
    "__rmul__",
    "relu",
    "relu_",
    "relu6",
    "hardtanh",
    "hardtanh_",
    "leaky_relu",
    "sigmoid",
    "tanh",
    "silu",
    "gelu",
    "hardswish",
    "dropout",
    "clone",
    "contiguous",
}


def _tensors(value: Any) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _tensors(v)


class _Follow(TorchFunctionMode):
    """Carries each tensor's map (held by the tensor itself, so no id is reused during the forward)
    from an element-wise op's operand of the same shape to its output."""

    def __init__(self) -> None:
        super().__init__()
        self.maps: dict[int, tuple[torch.Tensor, list[int]]] = {}

    def mark(self, t: torch.Tensor, keep: Sequence[int]) -> None:
        self.maps[id(t)] = (t, list(keep))

    def of(self, value: Any) -> list[int] | None:
        found = self.maps.get(id(value)) if isinstance(value, torch.Tensor) else None
        return found[1] if found is not None and found[0] is value else None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in ELEMENTWISE and isinstance(out, torch.Tensor):
            for operand in _tensors(args):
                keep = self.of(operand)
                if keep is not None and operand.shape == out.shape:
                    self.mark(out, keep)
                    break
        return out


def stream_maps(
    module: nn.Module, inputs: Sequence[torch.Tensor], kept: Mapping[str, Sequence[int]]
) -> dict[str, list[int]]:
    """{name: the unpruned model's channels its output keeps} for every named module of the cut
    `module` not in `kept` whose output is a tensor `kept`'s modules made narrow, carried through
    element-wise ops (a block's output, a stage's)."""
    follow = _Follow()
    found: dict[str, list[int]] = {}

    def hook(name: str):  # noqa: ANN202 - a forward hook
        def record(_m: nn.Module, _args: tuple, out: object) -> None:
            if not isinstance(out, torch.Tensor):
                return
            if name in kept:
                follow.mark(out, kept[name])
            else:
                keep = follow.of(out)
                if keep is not None and name not in found:
                    found[name] = keep

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if n]
    try:
        with torch.no_grad(), follow:
            module(*[x[:1] for x in inputs])
    finally:
        for h in handles:
            h.remove()
    return found
