"""Whole attention heads of nn.MultiheadAttention as prunable groups.

nn.MultiheadAttention ties its heads' total width to its input and output width (embed_dim), so a
head cannot go from the module itself; the heads are not in torch-pruning's channel groups either
(its prune_num_heads narrows the embedding, i.e. the residual stream). Here a head is removed
inside the attention: its query, key and value rows and its output-projection columns go, the
other heads keep their width (so their 1/sqrt(head_dim) score scale), and the module becomes a
PrunedAttention (an nn.MultiheadAttention whose inner width is kept heads x head_dim) with the same
call signature and outputs. Removing a head is exactly zeroing its output-projection columns (its
values then reach nothing), which is how sensitivities are measured and how the cut is checked.
The attention weights a caller may ask for are averaged over the heads kept.

Heads are ranked by l2 magnitude (their q/k/v rows and output columns) whatever the criterion: the
BatchNorm, redundancy and integrated-gradient criteria are about channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune.criteria import Removal


@dataclass
class HeadGroup:
    """The heads of one attention module (positions are head indices)."""

    name: str
    heads: int
    head_dim: int
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

    def on(self, module: nn.Module) -> HeadGroup:
        return self

    def channel_indices(self, positions: Sequence[int]) -> list[int]:
        return list(positions)

    def attention(self, module: nn.Module) -> nn.MultiheadAttention:
        return dict(module.named_modules())[self.name]  # type: ignore[return-value]


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


def head_groups(module: nn.Module, excluded: Sequence[nn.Module] = ()) -> list[HeadGroup]:
    skip = set(excluded)
    return [
        HeadGroup(
            name,
            m.num_heads,
            m.head_dim,
            out_modules=[name],  # its packed q/k/v projections narrow with the heads
            in_modules=[f"{name}.out_proj"],  # and every input column of its output projection
            in_counts={f"{name}.out_proj": m.out_proj.in_features},
        )
        for name, m in module.named_modules()
        if name and prunable(m) and m not in skip
    ]


def _inner(m: nn.MultiheadAttention) -> int:
    return m.num_heads * m.head_dim


def _columns(group: HeadGroup, heads: Sequence[int]) -> list[int]:
    d = group.head_dim
    return [h * d + i for h in heads for i in range(d)]


def head_plan(module: nn.Module, group: HeadGroup) -> list[Removal]:
    """Heads in removal order: smallest l2 magnitude (q/k/v rows and output columns) first."""
    m = group.attention(module)
    inner = _inner(m)
    with torch.no_grad():
        rows = m.in_proj_weight.reshape(3, group.heads, group.head_dim, -1)
        cols = m.out_proj.weight.reshape(-1, group.heads, group.head_dim)
        norms = rows.pow(2).sum((0, 2, 3)) + cols.pow(2).sum((0, 2))
        if m.in_proj_bias is not None:
            norms += m.in_proj_bias.reshape(3, group.heads, group.head_dim).pow(2).sum((0, 2))
    assert rows.shape[-1] == m.embed_dim and inner == group.heads * group.head_dim
    return [Removal(int(h)) for h in torch.argsort(norms.sqrt(), stable=True)]


def zero_heads(module: nn.Module, group: HeadGroup, heads: Sequence[int]) -> None:
    """Simulate removing `heads`: their output-projection columns zeroed (weights only)."""
    with torch.no_grad():
        group.attention(module).out_proj.weight[:, _columns(group, heads)] = 0.0


def cut_heads(module: nn.Module, group: HeadGroup, heads: Sequence[int]) -> None:
    """Replace the attention in `module` with a PrunedAttention without `heads`."""
    if not heads:
        return
    kept = [h for h in range(group.heads) if h not in set(heads)]
    parent_name, _, attr = group.name.rpartition(".")
    parent = dict(module.named_modules())[parent_name] if parent_name else module
    setattr(parent, attr, PrunedAttention(group.attention(module), kept))


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
