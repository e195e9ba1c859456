"""What a channel of a group is made of, and the edits on it: its parameters (the signature two
channels are compared by), its consumers' input columns, zeroing them (a removal simulated in place,
exact: the channel's values then reach nothing), and merging one channel into another (RED).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgeport.quant.prune.graph import ChannelGroup, Graph, mapped


@dataclass
class Columns:
    """Input columns of one consumer fed by a set of channels: weight[rows, cols] (rows: the output
    rows of the consumer's convolution group for a grouped convolution, else all)."""

    weight: torch.Tensor  # [out, in, ...]: a transposed convolution's parameter seen through a transpose
    rows: slice | list[int]
    cols: list[int]
    param: nn.Parameter | None = None  # the parameter itself


def _is_depthwise(module: nn.Module) -> bool:
    return (
        isinstance(module, nn.modules.conv._ConvNd)
        and module.groups > 1
        and (module.groups == module.in_channels)
    )


def consumer_columns(graph: Graph, group: ChannelGroup, channels: Sequence[int]) -> list[Columns]:
    """Where `channels` (root indices) enter each consuming Conv/Linear, in channel order."""
    found: list[Columns] = []
    for dep, idxs in graph.group_of(group, channels):
        module = dep.target.module
        if graph.is_out(dep.handler) or not isinstance(module, nn.Linear | nn.modules.conv._ConvNd):
            continue
        if _is_depthwise(module):
            continue  # its output channels are in the group too: their consumers are listed
        cols = mapped(idxs)
        if isinstance(module, nn.modules.conv._ConvNd) and module.transposed:
            # [in, out / groups, ...]: the input channels are the first axis.
            if module.groups == 1:
                found.append(Columns(module.weight.transpose(0, 1), slice(None), cols, module.weight))
            continue  # a grouped transposed convolution: not simulated (the check then keeps it whole)
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1:
            per = module.in_channels // module.groups
            outs = module.out_channels // module.groups
            for col in cols:
                g = col // per
                rows = list(range(g * outs, (g + 1) * outs))
                found.append(Columns(module.weight, rows, [col % per], module.weight))
        else:
            found.append(Columns(module.weight, slice(None), cols, module.weight))
    return found


def signature(graph: Graph, group: ChannelGroup, channel: int) -> list[torch.Tensor]:
    """The parameters that make `channel`'s values (each producer's row, its BatchNorm's four numbers,
    a depthwise filter, ...), one flat tensor per parameter in a fixed order."""
    parts: list[torch.Tensor] = []
    for dep, idxs in graph.group_of(group, [channel]):
        module = dep.target.module
        if not graph.is_out(dep.handler) or not isinstance(module, nn.Module):
            continue
        rows = mapped(idxs)
        tensors = [p for p in module.parameters(recurse=False)] + [
            b for b in module.buffers(recurse=False) if b.dim() > 0
        ]
        width = graph.dg.get_out_channels(module)
        for t in tensors:
            if t.dim() > 0 and t.shape[0] == width:
                parts.append(t.detach()[rows].reshape(-1).float())
    return parts


def zero_inputs(columns: Sequence[Columns]) -> Callable[[], None]:
    """Zero the columns (the channels then reach nothing); returns the undo."""
    saved = [(c, c.weight.data[c.rows][:, c.cols].clone()) for c in columns]
    with torch.no_grad():
        for c in columns:
            _set(c, torch.zeros_like(c.weight.data[c.rows][:, c.cols]))

    def undo() -> None:
        with torch.no_grad():
            for c, value in saved:
                _set(c, value)

    return undo


def _set(c: Columns, value: torch.Tensor) -> None:
    block = c.weight.data[c.rows]
    block[:, c.cols] = value
    c.weight.data[c.rows] = block


def merge_into(graph: Graph, group: ChannelGroup, removed: int, kept: int) -> None:
    """RED's compensation: `removed`'s outgoing weights are added to `kept`'s in every consumer, so
    when the two channels carry the same values the network is unchanged once `removed` is cut."""
    gone = consumer_columns(graph, group, [removed])
    stay = consumer_columns(graph, group, [kept])
    with torch.no_grad():
        for a, b in zip(gone, stay, strict=True):
            if isinstance(a.rows, list) and a.rows != b.rows:
                continue  # different convolution groups: no column to compensate in (never merged)
            added = b.weight.data[b.rows][:, b.cols] + a.weight.data[a.rows][:, a.cols]
            _set(b, added)
