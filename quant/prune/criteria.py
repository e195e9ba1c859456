"""Which channels of a group go first: each criterion returns a removal plan, the group's positions
in the order they are removed, each either cut or merged into a kept channel (RED).

* `l1`, `l2`: the magnitude of everything the channel touches in the group (its producers' rows,
  BatchNorm, its consumers' columns), torch-pruning's group magnitude, averaged over the group's layers.
* `bn-scale`: the BatchNorm scale |gamma| (network slimming); a group without BatchNorm ranks by l2.
* `red`: RED / RED++'s idea. Channels whose producing parameters are (near-)duplicates carry the
  same values, so one of them is merged into the other: its outgoing weights are added to the kept
  twin's, exact when the parameters are identical. Each step takes the cheapest of merging a channel
  into its nearest twin (distance of the parameters) and cutting it (its own size), both weighed by
  its outgoing weights, so dead channels are cut and duplicated ones merged.
* `ig`: SInGE's idea (integrated gradients of the pruning path, on synthetic inputs, no data): every
  channel of the group is faded out together (its consumers' input columns scaled by alpha, 1 -> 0),
  and each channel's share of the output error the fading causes is integrated along the path; the
  channels whose fading costs least go first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from edgeport.quant.prune.channels import consumer_columns, signature
from edgeport.quant.prune.graph import ChannelGroup, Graph, flat_outputs

CRITERIA = ("l1", "l2", "bn-scale", "red", "ig")
IG_STEPS = 8  # points on the fading path (midpoint rule)


@dataclass(frozen=True)
class Removal:
    position: int  # within one repeat of the group (grouped convolutions repeat it)
    into: int | None = None  # the kept position it is merged into (RED), None: cut


def _by_importance(scores: torch.Tensor, group: ChannelGroup) -> list[Removal]:
    per_position = scores.reshape(group.repeats, group.width).mean(0)
    order = torch.argsort(per_position, stable=True)
    return [Removal(int(p)) for p in order]


def _magnitude(graph: Graph, group: ChannelGroup, p: int) -> torch.Tensor:
    import torch_pruning as tp

    full = graph.group_of(group, list(range(group.channels)))
    return tp.importance.GroupMagnitudeImportance(p=p, group_reduction="mean", normalizer=None)(full)


def _bn_scale(graph: Graph, group: ChannelGroup) -> torch.Tensor | None:
    import torch_pruning as tp

    full = graph.group_of(group, list(range(group.channels)))
    scores = tp.importance.BNScaleImportance(normalizer=None)(full)
    return scores if isinstance(scores, torch.Tensor) and scores.numel() == group.channels else None


def removal_plan(
    graph: Graph, group: ChannelGroup, criterion: str, inputs: Sequence[torch.Tensor] = ()
) -> list[Removal]:
    """Every position of `group` in removal order under `criterion` (`ig` reads synthetic `inputs`)."""
    if criterion == "ig" and inputs:
        return _by_importance(integrated_gradients(graph, group, inputs).repeat(group.repeats), group)
    if criterion == "l1":
        return _by_importance(_magnitude(graph, group, 1), group)
    if criterion == "bn-scale":
        scores = _bn_scale(graph, group)
        return _by_importance(scores if scores is not None else _magnitude(graph, group, 2), group)
    if criterion == "red" and group.repeats == 1:
        return red_plan(graph, group)
    return _by_importance(_magnitude(graph, group, 2), group)


def standardized_signatures(graph: Graph, group: ChannelGroup) -> torch.Tensor:
    """[channels, features]: the channels' parameter blocks, standardized."""
    per_channel = [signature(graph, group, c) for c in range(group.channels)]
    blocks = [torch.stack([parts[b] for parts in per_channel]) for b in range(len(per_channel[0]))]
    return standardized(blocks) if blocks else torch.zeros(group.channels, 1)


def standardized(blocks: Sequence[torch.Tensor]) -> torch.Tensor:
    """[units, features]: every parameter block [units, ...] scaled by its RMS over the units, so a
    BatchNorm's running variance does not outweigh a convolution's rows (duplicates stay duplicates)."""
    scaled = [b.reshape(b.shape[0], -1) / b.pow(2).mean().sqrt().clamp_min(1e-12) for b in blocks]
    return torch.cat(scaled, dim=1)


def red_plan(graph: Graph, group: ChannelGroup) -> list[Removal]:
    sig = standardized_signatures(graph, group)
    outgoing = torch.stack(
        [
            torch.cat([c.weight.detach()[c.rows][:, c.cols].reshape(-1) for c in cols]).norm()
            if cols
            else torch.tensor(1.0)
            for cols in (consumer_columns(graph, group, [ch]) for ch in range(group.channels))
        ]
    )
    return red_order(sig, outgoing)


def red_order(sig: torch.Tensor, outgoing: torch.Tensor) -> list[Removal]:
    """RED's removal order over units (channels, heads) with parameter signatures `sig` [units,
    features] and outgoing weight norms `outgoing` [units]: each step merges a unit into its nearest
    twin or cuts it, whichever costs less."""
    n = sig.shape[0]
    distance = torch.cdist(sig, sig)
    distance.fill_diagonal_(float("inf"))
    size = sig.norm(dim=1)
    alive = list(range(n))
    plan: list[Removal] = []
    # Outgoing weights grow as twins merge into a channel; recomputed exactly, the plan would cost a
    # graph walk per step, so each channel's own outgoing norm is used.
    while len(alive) > 1:
        idx = torch.tensor(alive)
        sub = distance[idx][:, idx]
        nearest, where = sub.min(dim=1)
        merge_cost = nearest * outgoing[idx]
        cut_cost = size[idx] * outgoing[idx]
        best = int(torch.argmin(torch.minimum(merge_cost, cut_cost)))
        j = alive[best]
        if merge_cost[best] <= cut_cost[best]:
            plan.append(Removal(j, alive[int(where[best])]))
        else:
            plan.append(Removal(j))
        alive.remove(j)
    plan.append(Removal(alive[0]))
    return plan


def integrated_gradients(graph: Graph, group: ChannelGroup, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per position: the output error (relative squared error vs the unpruned outputs) its fading
    accounts for, integrated from all channels present to all faded out."""
    module = graph.module
    names = {id(p): n for n, p in module.named_parameters()}
    # For each consumer weight: which input columns belong to which position.
    columns: dict[str, tuple[torch.Tensor, list[int], list[int]]] = {}
    for position in range(group.width):
        for c in consumer_columns(graph, group, group.channel_indices([position])):
            if not isinstance(c.rows, slice) or c.param is not c.weight:
                continue  # grouped or transposed convolutions: left unscaled (the others carry the signal)
            name = names[id(c.weight)]
            weight, cols, owner = columns.setdefault(name, (c.weight, [], []))
            cols.extend(c.cols)
            owner.extend([position] * len(c.cols))
    return fading_scores(module, columns, group.width, inputs)


def fading_scores(
    module: nn.Module,
    columns: dict[str, tuple[torch.Tensor, list[int], list[int]]],
    units: int,
    inputs: Sequence[torch.Tensor],
) -> torch.Tensor:
    """Per unit (a channel, a head): the output error its fading accounts for, integrated from all
    units present to all faded out. `columns`: parameter name -> (weight, input columns, the unit
    each column belongs to); the columns are scaled by their unit's alpha, 1 -> 0."""
    with torch.no_grad():
        reference = flat_outputs(module(*inputs))
    total = torch.zeros(units)
    for step in range(IG_STEPS):
        alpha = torch.full((units,), 1.0 - (step + 0.5) / IG_STEPS, requires_grad=True)
        replaced = {}
        for name, (weight, cols, owner) in columns.items():
            scale = torch.ones_like(weight)
            shape = [1, len(cols)] + [1] * (weight.dim() - 2)
            scale[:, cols] = alpha[owner].reshape(shape).expand_as(scale[:, cols])
            replaced[name] = weight.detach() * scale
        with torch.enable_grad():
            out = flat_outputs(torch.func.functional_call(module, replaced, tuple(inputs)))
            loss = sum(
                ((o - r) ** 2).sum() / (r**2).sum().clamp_min(1e-12)
                for o, r in zip(out, reference, strict=True)
            )
            (grad,) = torch.autograd.grad(loss, alpha)
        total += -grad / IG_STEPS  # d(error)/d(alpha) < 0: fading raises the error
    return total
