"""Constant padding on the channel axis as a layer torch-pruning can prune across.

Option-A residual shortcuts (the CIFAR ResNets of He et al. 2016, akamaster's LambdaLayer:
`F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))`) widen the residual stream between stages by padding
channels. torch-pruning's dependency graph takes the pad for element-wise and couples channel i of one
stage with channel i of the next, so the whole stream (the stem and every block's output convolution,
across stages) becomes one group whose cut is not the same as zeroing it: it was kept whole.

Here each such pad becomes a selection: a 1x1 convolution (a Linear on [N, C]) whose output channel
o copies input channel o - before, or is the pad value. Only the modules whose own forward pads
channels (a residual block, a LambdaLayer) are traced with torch.fx and replaced by their traces.
A selection's input and output channels are independent, like any convolution's, so each stage's
stream is its own group (a customized pruner keeps torch-pruning's magnitude importance from
counting its 0/1 weights). After the cut a selection is written back as the memory op it is (slice
and pad, or a gather from its input and one pad channel): no MACs. A module fx cannot trace keeps
its pad (and its stream whole), unless it makes its selections itself (SelectsOwnPads: the ONNX
evaluator of quant/prune/onnx_source.py, whose constant channel Pad nodes become selections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from edgeport.errors import exception_line
from edgeport.quant.prune.count import forward_with_hooks, in_width

PAD_FUNCTIONS = (F.pad, torch.constant_pad_nd)


class _Selection:
    """Marks a selection layer: `value` fills the output channels that copy no input."""

    value: float = 0.0


class ChannelSelectLinear(_Selection, nn.Linear):
    pass


class ChannelSelect1d(_Selection, nn.Conv1d):
    pass


class ChannelSelect2d(_Selection, nn.Conv2d):
    pass


class ChannelSelect3d(_Selection, nn.Conv3d):
    pass


SELECTION_TYPES: tuple[type[nn.Module], ...] = (
    ChannelSelectLinear,
    ChannelSelect1d,
    ChannelSelect2d,
    ChannelSelect3d,
)
_BY_RANK = {2: ChannelSelectLinear, 3: ChannelSelect1d, 4: ChannelSelect2d, 5: ChannelSelect3d}


def is_selection(module: nn.Module) -> bool:
    return isinstance(module, _Selection)


def customized_pruners() -> dict[type[nn.Module], Any]:
    """torch-pruning pruners for the selection layers: its own convolution / linear pruning, as
    separate instances so that its importance functions (which compare against the built-in ones)
    leave the selections' weights out of every channel's score."""
    from torch_pruning.pruner import function

    return {
        cls: function.LinearPruner() if cls is ChannelSelectLinear else function.ConvPruner()
        for cls in SELECTION_TYPES
    }


def channel_pad(rank: int, pad: Sequence[Any], mode: str = "constant") -> tuple[int, int] | None:
    """(before, after) that `F.pad(x, pad, mode)` adds on axis 1 of a rank-`rank` tensor, when it is a
    constant pad that changes axis 1 and not axis 0; else None."""
    if mode != "constant" or rank < 2 or rank > 5 or len(pad) % 2:
        return None
    if not all(isinstance(p, int) for p in pad) or len(pad) > 2 * rank or any(pad[2 * (rank - 1) :]):
        return None
    axis = rank - 2  # pairs run from the last axis backwards
    if len(pad) <= 2 * axis:
        return None
    before, after = int(pad[2 * axis]), int(pad[2 * axis + 1])
    return None if before == after == 0 else (before, after)


def split_channel_pad(
    rank: int, pad: Sequence[Any], mode: str = "constant"
) -> tuple[tuple[int, int], tuple[int, ...]] | None:
    """A channel pad (`channel_pad`) as its (before, after) on axis 1, a selection layer's, and the
    padding it adds to the axes after the channels (F.pad's order; () when none), a pad run before the
    selection: the same values, as the selection copies each padded channel whole and fills the new ones
    with the pad value. None where `channel_pad` is. Both the fx trace and the ONNX evaluator split so."""
    where = channel_pad(rank, pad, mode)
    if where is None:
        return None
    rest = tuple(int(p) for p in pad[: 2 * (rank - 2)])
    return where, rest if any(rest) else ()


def _pad_args(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[Any, Any, str, float]:
    """(input, pad, mode, value) of an F.pad / torch.constant_pad_nd call."""
    names = ("input", "pad", "mode", "value")
    given = dict(zip(names, args, strict=False)) | dict(kwargs)
    value = 0.0 if given.get("value") is None else given["value"]
    return given.get("input"), given.get("pad"), given.get("mode", "constant"), value


def selection(rank: int, channels: int, before: int, after: int, value: float) -> nn.Module:
    """The 1x1 layer that does `before`/`after` channel padding of `channels` channels."""
    out = channels + before + after
    cls = _BY_RANK[rank]
    bias = value != 0
    if cls is ChannelSelectLinear:
        layer: nn.Module = cls(channels, out, bias=bias)
    else:
        layer = cls(channels, out, 1, bias=bias)
    weight = torch.zeros(out, channels)
    copied = torch.zeros(out, dtype=torch.bool)
    for o in range(out):
        i = o - before
        if 0 <= i < channels:
            weight[o, i] = 1.0
            copied[o] = True
    with torch.no_grad():
        layer.weight.copy_(weight.reshape(layer.weight.shape))
        if layer.bias is not None:
            layer.bias.copy_(torch.where(copied, 0.0, float(value)))
    layer.value = float(value)
    return layer.requires_grad_(False)


class _PadProbe(TorchFunctionMode):
    """The modules whose own forward makes a channel pad (the innermost module running at the call;
    "" for the model's), with the arguments of their first call, in call order."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.names = {m: n for n, m in module.named_modules()}
        self.running: list[nn.Module] = []
        self.args: dict[nn.Module, tuple] = {}
        self.owners: dict[str, tuple[nn.Module, tuple]] = {}
        self.root = module

    def enter(self, m: nn.Module, args: tuple) -> None:
        self.running.append(m)
        if m not in self.args:  # copied: a later in-place op must not change what the trace runs on
            self.args[m] = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)

    def leave(self, _m: nn.Module, _args: tuple, _out: object) -> None:
        self.running.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in PAD_FUNCTIONS:
            x, pad, mode, _value = _pad_args(args, kwargs or {})
            is_pad = isinstance(x, torch.Tensor) and isinstance(pad, list | tuple)
            if is_pad and channel_pad(x.dim(), list(pad), mode) is not None:
                owner = self.running[-1] if self.running else self.root
                self.owners.setdefault(self.names[owner], (owner, self.args.get(owner, ())))
        return func(*args, **(kwargs or {}))


@runtime_checkable
class SelectsOwnPads(Protocol):
    """A module that makes its own channel pads selection layers, where fx cannot trace it
    (quant/prune/onnx_source.py's ONNX evaluator runs a graph node by node)."""

    def channel_pads_as_selections(self, *inputs: torch.Tensor) -> tuple[list[str], dict[str, str]]:
        """Replace its channel pads by selection layers, in place (`inputs`: the arguments of its
        first call); their module names in it, and {pad: why} for each channel pad it keeps."""
        ...


def pad_owners(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, tuple[nn.Module, tuple]]:
    """{name: (module, the arguments of its first call)} of the modules whose own forward pads
    channels, in call order, from one forward of `module` on `inputs`."""
    probe = _PadProbe(module)
    forward_with_hooks(
        module,
        inputs,
        ((m, probe.leave) for m in module.modules()),
        pre_hooks=((m, probe.enter) for m in module.modules()),
        mode=probe,
    )
    return probe.owners


def pads_as_selections(
    module: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[nn.Module, list[str], list[str]]:
    """(`module` with the channel pads as selection layers, the selections' names, notes). Only the
    modules whose own forward pads channels are traced with fx and replaced, in place (the rest of
    the model keeps its classes and calls; the model itself is returned traced when its own forward
    pads; one that is SelectsOwnPads makes its selections itself, and says which it keeps and why). One
    that fx cannot trace, or whose trace computes something else, keeps its pad (its stream then stays
    coupled, and the cut check keeps it whole) with a note; so does each pad a SelectsOwnPads keeps."""
    names: list[str] = []
    notes: list[str] = []
    for owner_name, (owner, args) in pad_owners(module, inputs).items():
        where = owner_name or "the model"
        if isinstance(owner, SelectsOwnPads):
            made, kept = owner.channel_pads_as_selections(*args)
            names += [f"{owner_name}.{n}" if owner_name else n for n in made]
            notes += [kept_pad_note(f"{where}, {pad}", why) for pad, why in kept.items()]
            continue
        why = kept_pad_note(where)
        try:
            traced, made = _traced(owner, args)
        except Exception as exc:  # noqa: BLE001 - fx's failure, reported as the reason
            notes.append(f"{why}: torch.fx cannot trace it ({exception_line(exc)})")
            continue
        with torch.no_grad():
            same = _same(owner(*args), traced(*args))
        if not same:
            notes.append(f"{why}: its fx trace does not compute what it does")
            continue
        if owner_name:
            parent, _, leaf = owner_name.rpartition(".")
            setattr(module.get_submodule(parent) if parent else module, leaf, traced)
        else:
            module = traced
        names += [f"{owner_name}.{n}" if owner_name else n for n in made]
    return module, names, notes


def kept_pad_note(where: str, reason: str = "") -> str:
    """The note for a channel pad of `where` left a pad (the stream it joins kept whole), and why."""
    note = f"{where}: its channel pad (an option-A shortcut) is kept, and the stream it joins whole"
    return f"{note}: {reason}" if reason else note


def _same(a: Any, b: Any) -> bool:
    from edgeport.quant.prune.graph import flat_outputs

    xs, ys = flat_outputs(a), flat_outputs(b)
    return len(xs) == len(ys) and all(
        x.shape == y.shape and torch.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(xs, ys, strict=True)
    )


def _traced(module: nn.Module, args: Sequence[Any]) -> tuple[nn.Module, list[str]]:
    """`module` traced with fx, each channel pad of its graph a selection layer; their names."""
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    traced = fx.symbolic_trace(module)
    ShapeProp(traced).propagate(*args)
    names: list[str] = []
    for node in list(traced.graph.nodes):
        if node.op != "call_function" or node.target not in PAD_FUNCTIONS:
            continue
        x, pad, mode, value = _pad_args(node.args, node.kwargs)
        meta = getattr(x, "meta", {}).get("tensor_meta")
        if meta is None or not isinstance(pad, list | tuple) or not isinstance(value, int | float):
            continue
        rank = len(meta.shape)
        split = split_channel_pad(rank, list(pad), mode)
        if split is None:
            continue
        where, rest = split
        name = _free_name(traced, "channel_pad")
        traced.add_submodule(name, selection(rank, int(meta.shape[1]), *where, float(value)))
        with traced.graph.inserting_before(node):
            source = x
            if rest:
                source = traced.graph.call_function(F.pad, (x, rest), {"value": float(value)})
            replacement = traced.graph.call_module(name, (source,))
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        names.append(name)
    traced.graph.lint()
    traced.recompile()
    return traced, names


def _free_name(module: nn.Module, base: str) -> str:
    taken = {n for n, _ in module.named_modules()}
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


class ChannelGather(nn.Module):
    """A cut selection as the memory op it is: out[:, k] = x[:, index[k]], or `value` where index[k]
    is -1. Written as a slice and a pad when the copied channels are one contiguous run, else as a
    gather from the input with one pad channel appended."""

    def __init__(self, index: Sequence[int], value: float, channels: int) -> None:
        super().__init__()
        self.value = float(value)
        self.channels = channels
        lead = next((k for k, i in enumerate(index) if i >= 0), len(index))
        tail = next((k for k, i in enumerate(reversed(index)) if i >= 0), len(index))
        middle = list(index[lead : len(index) - tail])
        run = bool(middle) and middle == list(range(middle[0], middle[0] + len(middle)))
        self.pads = (lead, tail) if run else (0, 1)
        self.start, self.stop = (middle[0], middle[-1] + 1) if run else (0, channels)
        gather = None if run else torch.tensor([i if i >= 0 else channels for i in index])
        self.register_buffer("index", gather, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start or self.stop != self.channels:
            x = x[:, self.start : self.stop]
        if any(self.pads):
            x = F.pad(x, (0, 0) * (x.dim() - 2) + self.pads, value=self.value)
        return x if self.index is None else torch.index_select(x, 1, self.index)


def gather_index(layer: nn.Module) -> list[int]:
    """Per output channel of a (cut) selection layer, the input channel it copies, or -1."""
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1)
    return [int(row.argmax()) if bool((row != 0).any()) else -1 for row in weight]


def selections_as_gathers(module: nn.Module) -> int:
    """Replace, in place, every selection layer of `module` by its ChannelGather; how many."""
    found = [(n, m) for n, m in module.named_modules() if is_selection(m)]
    for name, layer in found:
        parent, _, leaf = name.rpartition(".")
        owner = module.get_submodule(parent) if parent else module
        setattr(owner, leaf, ChannelGather(gather_index(layer), layer.value, in_width(layer)))
    return len(found)
