"""Whole attention heads as prunable groups: nn.MultiheadAttention's (here), and those of attention
written by hand or with F.scaled_dot_product_attention (found on a trace: traced_heads.py).

nn.MultiheadAttention ties its heads' total width to its input and output width (embed_dim), so a
head cannot go from the module itself; the heads are not in torch-pruning's channel groups either
(its prune_num_heads narrows the embedding, i.e. the residual stream). Here a head is removed
inside the attention: its query, key and value rows and its output-projection columns go, the
other heads keep their width (so their 1/sqrt(head_dim) score scale), and the module becomes a
PrunedAttention (an nn.MultiheadAttention whose inner width is kept heads x head_dim) with the same
call signature and outputs. Removing a head is exactly zeroing its output-projection columns (its
values then reach nothing), which is how sensitivities are measured and how the cut is checked.
The attention weights a caller may ask for are averaged over the heads kept.

Which heads go first (head_plan), by --prune-criterion:
* `l1`, `l2`: the magnitude of the head's query/key/value rows (and biases) and its output columns.
* `red`: heads whose query/key/value rows are (near-)duplicates compute the same output, so one is
  merged into its twin (its output columns added to the twin's), exact when identical; else cut, by
  the same cost as channels (criteria.red_order).
* `ig`: each head's output columns faded out together (criteria.fading_scores), its share of the
  output error integrated along the path, on synthetic inputs.
* `bn-scale` has no meaning for a head (no BatchNorm inside attention): it ranks heads by l2, as it
  ranks a channel group without a BatchNorm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune.criteria import Removal, fading_scores, red_order, standardized


@dataclass
class HeadGroup:
    """The heads of one attention module (positions are head indices)."""

    name: str  # the attention module ("" when it is the model itself)
    heads: int
    head_dim: int
    # Linear name -> blocks of heads x head_dim rows it produces (3: packed q/k/v); {} for
    # nn.MultiheadAttention (its projections are its own in_proj_weight).
    producers: dict[str, int] = field(default_factory=dict)
    consumer: str = ""  # the Linear reading the heads' outputs (nn.MultiheadAttention: its out_proj)
    trace: Any = None  # traced_heads.Traced for a hand-written attention, None for nn.MultiheadAttention
    # A traced attention's q·kᵀ and ·v MACs per sample, all heads (they shrink with the heads; no
    # module counts them). nn.MultiheadAttention's are in its module count.
    products: int = 0
    repeats: int = 1
    expands: bool = False
    out_modules: list[str] = field(default_factory=list)
    in_modules: list[str] = field(default_factory=list)
    in_counts: dict[str, int] = field(default_factory=dict)

    @property
    def width(self) -> int:
        return self.heads

    @property
    def channels(self) -> int:
        return self.heads

    @property
    def modules(self) -> list[str]:
        """What the section lists: the attention, or a traced one's Linears."""
        return [self.name] if self.trace is None else sorted([*self.producers, self.consumer])

    def on(self, module: nn.Module) -> HeadGroup:
        return self

    def channel_indices(self, positions: Sequence[int]) -> list[int]:
        return list(positions)

    def attention(self, module: nn.Module) -> nn.Module:
        return dict(module.named_modules())[self.name]

    def columns(self, heads: Sequence[int]) -> list[int]:
        """The consumer's input columns (and each producer block's rows) of `heads`."""
        d = self.head_dim
        return [h * d + i for h in heads for i in range(d)]


def prunable(m: nn.Module) -> bool:
    """Attention whose heads this module can remove: projections packed in in_proj_weight, no
    bias_k/bias_v or zero-attention row, more than one head."""
    return (
        isinstance(m, nn.MultiheadAttention)
        and m._qkv_same_embed_dim
        and m.bias_k is None
        and not m.add_zero_attn
        and m.num_heads > 1
    )


def head_groups(
    module: nn.Module, excluded: Sequence[nn.Module] = (), inputs: Sequence[torch.Tensor] | None = None
) -> tuple[list[HeadGroup], list[str]]:
    """nn.MultiheadAttention's heads, and with `inputs` (one sample) those of hand-written or SDPA
    attention (traced_heads.py); notes for attention found but not prunable."""
    skip = set(excluded)
    groups = [
        HeadGroup(
            name,
            m.num_heads,
            m.head_dim,
            consumer=f"{name}.out_proj",
            out_modules=[name],  # its packed q/k/v projections narrow with the heads
            in_modules=[f"{name}.out_proj"],  # and every input column of its output projection
            in_counts={f"{name}.out_proj": m.out_proj.in_features},
        )
        for name, m in module.named_modules()
        if name and prunable(m) and m not in skip
    ]
    if inputs is None:
        return groups, []
    from edgeport.quant.prune.traced_heads import traced_head_groups

    traced, notes = traced_head_groups(module, inputs, skip)
    return groups + traced, notes


def _blocks(module: nn.Module, group: HeadGroup) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(incoming, outgoing): per head [heads, ...] its query/key/value rows and biases, and its
    output columns [heads, out, head_dim]."""
    modules = dict(module.named_modules())
    h, d = group.heads, group.head_dim
    incoming: list[torch.Tensor] = []
    if group.trace is None:
        m = group.attention(module)
        sources = [(m.in_proj_weight, m.in_proj_bias, 3)]
    else:
        sources = [(modules[n].weight, modules[n].bias, parts) for n, parts in group.producers.items()]
    for weight, bias, parts in sources:
        incoming.append(weight.detach().reshape(parts, h, d, -1).transpose(0, 1).reshape(h, -1))
        if bias is not None:
            incoming.append(bias.detach().reshape(parts, h, d).transpose(0, 1).reshape(h, -1))
    out = modules[group.consumer].weight.detach()
    return incoming, out.reshape(out.shape[0], h, d).transpose(0, 1)


def head_plan(
    module: nn.Module, group: HeadGroup, criterion: str, inputs: Sequence[torch.Tensor] = ()
) -> list[Removal]:
    """Heads in removal order under `criterion` (see the module docstring)."""
    incoming, outgoing = _blocks(module, group)
    if criterion == "ig" and inputs:
        name = f"{group.consumer}.weight"
        weight = dict(module.named_parameters())[name]
        columns = {
            name: (
                weight,
                group.columns(range(group.heads)),
                [h for h in range(group.heads) for _ in range(group.head_dim)],
            )
        }
        return _ascending(fading_scores(module, columns, group.heads, inputs))
    if criterion == "red":
        signatures = standardized([*incoming])
        return red_order(signatures, outgoing.reshape(group.heads, -1).norm(dim=1))
    p = 1 if criterion == "l1" else 2
    per_head = sum(b.abs().pow(p).sum(1) for b in incoming) + outgoing.abs().pow(p).sum((1, 2))
    return _ascending(per_head)


def _ascending(scores: torch.Tensor) -> list[Removal]:
    return [Removal(int(h)) for h in torch.argsort(scores, stable=True)]


def _consumer_weight(module: nn.Module, group: HeadGroup) -> torch.Tensor:
    return dict(module.named_modules())[group.consumer].weight


def zero_heads(module: nn.Module, group: HeadGroup, heads: Sequence[int]) -> None:
    """Simulate removing `heads`: their output-projection columns zeroed (weights only)."""
    with torch.no_grad():
        _consumer_weight(module, group)[:, group.columns(heads)] = 0.0


def merge_heads(module: nn.Module, group: HeadGroup, head: int, into: int) -> None:
    """RED: `head`'s output columns added to its twin `into`'s (exact when their q/k/v rows are the
    same: both then compute the same values)."""
    with torch.no_grad():
        weight = _consumer_weight(module, group)
        weight[:, group.columns([into])] += weight[:, group.columns([head])]


def merged(module: nn.Module, group: HeadGroup, plan: Sequence[Removal], count: int) -> list[int]:
    """The first `count` removals of `plan`: their merges (RED) made, the heads that go returned."""
    for r in plan[:count]:
        if r.into is not None:
            merge_heads(module, group, r.position, r.into)
    return [r.position for r in plan[:count]]


def zero_plan(module: nn.Module, group: HeadGroup, plan: Sequence[Removal], count: int) -> None:
    """The first `count` removals of `plan` simulated: merges (RED) made, heads zeroed."""
    zero_heads(module, group, merged(module, group, plan, count))


def cut_plan(module: nn.Module, group: HeadGroup, plan: Sequence[Removal], count: int) -> nn.Module:
    """`module` with the first `count` removals of `plan` made: merges (RED), then the cut."""
    return cut_heads(module, group, merged(module, group, plan, count))


def outside_heads(groups: Sequence[Any], heads: Sequence[HeadGroup]) -> tuple[list[Any], list[str]]:
    """The channel groups whose channels are not a traced attention's heads (a q/k/v Linear's
    outputs go as whole heads), and a note for each one left out."""
    producers = {n: h.name or "the model" for h in heads for n in h.producers}
    kept, notes = [], []
    for g in groups:
        owner = next((producers[n] for n in g.out_modules if n in producers), None)
        if owner is None:
            kept.append(g)
        else:
            notes.append(
                f"{g.name}: kept whole, its channels are the heads of {owner} (pruned as whole heads)"
            )
    return kept, notes


def cut_heads(module: nn.Module, group: HeadGroup, heads: Sequence[int]) -> nn.Module:
    """`module` with the attention's `heads` removed (in place; a new module when the attention is
    the model itself and was traced)."""
    if not heads:
        return module
    kept = [h for h in range(group.heads) if h not in set(heads)]
    if group.trace is not None:
        from edgeport.quant.prune.traced_heads import cut_traced

        return cut_traced(module, group, kept)
    parent_name, _, attr = group.name.rpartition(".")
    parent = dict(module.named_modules())[parent_name] if parent_name else module
    setattr(parent, attr, PrunedAttention(group.attention(module), kept))  # type: ignore[arg-type]
    return module


class PrunedAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention with some heads removed: inner width kept heads x head_dim, input and
    output width unchanged; the same forward signature and outputs (eval, no dropout)."""

    def __init__(self, source: nn.MultiheadAttention, kept: Sequence[int]) -> None:
        nn.Module.__init__(self)
        d, e = source.head_dim, source.embed_dim
        index = torch.tensor([h * d + i for h in kept for i in range(d)])
        self.embed_dim, self.kdim, self.vdim = e, e, e
        # False: nn.TransformerEncoderLayer's fused fast path reads the packed weights and assumes
        # embed_dim / num_heads per head; with fewer heads it must call this forward instead.
        self._qkv_same_embed_dim = False
        self.num_heads, self.head_dim = len(kept), d
        self.batch_first, self.dropout = source.batch_first, 0.0
        self.bias_k = self.bias_v = None
        self.add_zero_attn = False
        self.q_proj_weight = self.k_proj_weight = self.v_proj_weight = None
        rows = torch.cat([index + part * e for part in range(3)])
        with torch.no_grad():
            self.in_proj_weight = nn.Parameter(source.in_proj_weight[rows].clone())
            bias = source.in_proj_bias
            self.in_proj_bias = nn.Parameter(bias[rows].clone()) if bias is not None else None
            out = source.out_proj
            self.out_proj = nn.Linear(len(index), e, bias=out.bias is not None)
            self.out_proj.weight.copy_(out.weight[:, index])
            if out.bias is not None:
                self.out_proj.bias.copy_(out.bias)
        self.kept_heads = list(kept)
        self.source_heads = source.num_heads

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, length, source = query.shape[0], query.shape[1], key.shape[1]
        h, d = self.num_heads, self.head_dim
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, wq, bq).reshape(n, length, h, d).transpose(1, 2)
        k = F.linear(key, wk, bk).reshape(n, source, h, d).transpose(1, 2)
        v = F.linear(value, wv, bv).reshape(n, source, h, d).transpose(1, 2)
        scores = (q @ k.transpose(-2, -1)) * d**-0.5
        if attn_mask is not None:
            mask = attn_mask
            if mask.dim() == 3:  # [batch x source heads, L, S]: keep the kept heads' masks
                mask = mask.reshape(n, self.source_heads, length, source)[:, self.kept_heads]
            scores = scores.masked_fill(mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        if key_padding_mask is not None:
            pad = key_padding_mask[:, None, None, :]
            scores = scores.masked_fill(pad, float("-inf")) if pad.dtype == torch.bool else scores + pad
        weights = scores.softmax(-1)
        out = (weights @ v).transpose(1, 2).reshape(n, length, h * d)
        out = F.linear(out, self.out_proj.weight, self.out_proj.bias)  # as nn.MultiheadAttention: no hook
        if not batched:
            out, weights = out.squeeze(0), weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        return out, weights.mean(-3) if average_attn_weights else weights
