"""Attention in spellings torch.fx's symbolic trace cannot follow, for quant/prune/traced_heads.py's
example tracer: nanoGPT's causal self-attention (a registered causal `bias` buffer sliced by the
sequence length, `B, T, C = x.size()`, q/k/v split from one Linear), a ViT attention as vit-pytorch
writes it with einops (q/k/v chunked from one Linear and mapped; the rearranges written as the
reshapes and permutes einops makes, the shape read as Python ints), and masks made from the input's
shape (torch.ones from x.shape, torch.arange from x.size(1)).
Sizes are small and odd where they can be, so a mis-split axis changes the shape or the numbers."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class CausalSelfAttention(nn.Module):
    """nanoGPT's (model.py, the non-flash path): the mask is a buffer of the longest context."""

    def __init__(self, n_embd: int = 24, n_head: int = 4, block_size: int = 32) -> None:
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = nn.Linear(n_embd, n_embd)
        self.attn_dropout, self.resid_dropout = nn.Dropout(0.0), nn.Dropout(0.0)
        self.n_head, self.n_embd = n_head, n_embd
        causal = torch.tril(torch.ones(block_size, block_size))
        self.register_buffer("bias", causal.view(1, 1, block_size, block_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()  # noqa: N806 - nanoGPT's names
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_dropout(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """einops' rearrange(t, 'b n (h d) -> b h n d', h=heads), as einops computes it."""
    *lead, width = t.shape
    return t.reshape(*lead, heads, width // heads).permute(0, 2, 1, 3)


def _merge_heads(t: torch.Tensor) -> torch.Tensor:
    """einops' rearrange(t, 'b h n d -> b n (h d)')."""
    b, h, n, d = t.shape
    return t.permute(0, 2, 1, 3).reshape(b, n, h * d)


class VitAttention(nn.Module):
    """vit-pytorch's Attention: inner width heads x dim_head (not the embedding's), no q/k/v bias."""

    def __init__(self, dim: int = 24, heads: int = 3, dim_head: int = 10) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head**-0.5
        self.attend = nn.Softmax(dim=-1)
        self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv = self.to_qkv(x).chunk(3, dim=-1)
        q, k, v = map(lambda t: _split_heads(t, self.heads), qkv)
        attn = self.attend(torch.matmul(q, k.transpose(-1, -2)) * self.scale)
        return self.to_out(_merge_heads(torch.matmul(attn, v)))


class ShapeMasked(nn.Module):
    """q/k/v Linears and a causal mask made at run time from the input's shape: `mask` is "ones"
    (torch.tril(torch.ones(n, n)) from x.shape) or "arange" (torch.arange(x.size(1)) compared)."""

    def __init__(self, dim: int = 24, heads: int = 3, mask: str = "ones") -> None:
        super().__init__()
        self.heads, self.mask = heads, mask
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))

    def causal(self, x: torch.Tensor) -> torch.Tensor:
        """The scores' additive mask [n, n]: 0 on and below the diagonal, -inf above."""
        n = x.shape[1]
        if self.mask == "ones":
            keep = torch.tril(torch.ones(n, n, dtype=torch.bool, device=x.device))
            return torch.zeros(n, n).masked_fill(~keep, float("-inf"))
        i = torch.arange(x.size(1))
        return torch.zeros(n, n).masked_fill(i[None, :] > i[:, None], float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape
        d = e // self.heads
        q, k, v = (t.reshape(b, n, self.heads, d).transpose(1, 2) for t in (self.q(x), self.k(x), self.v(x)))
        scores = q @ k.transpose(-2, -1) / math.sqrt(d) + self.causal(x)
        return self.o((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, e))


class FixedBatch(ShapeMasked):
    """A mask from x.shape, and a pad made with the batch size read in Python: traced on one sample,
    the pad keeps that batch."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        padded = torch.cat([x, torch.zeros(b, 1, x.shape[2])], 1)
        return super().forward(padded)[:, :n]


class ValueSteered(ShapeMasked):
    """Control flow on a tensor's values: no tracer follows it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out if out.sum() > 0 else -out


class Block(nn.Module):
    def __init__(self, attention: nn.Module, dim: int = 24) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(dim), attention
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Stack(nn.Module):
    """Token features [batch, 16, 24] -> an input Linear, one block per attention -> a head."""

    def __init__(self, *attentions: nn.Module, dim: int = 24) -> None:
        super().__init__()
        self.wpe = nn.Parameter(0.1 * torch.randn(1, 16, dim))
        self.embed = nn.Linear(dim, dim)
        self.h = nn.Sequential(*(Block(a, dim) for a in attentions))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.ln_f(self.h(self.embed(x) + self.wpe)))


def nano_gpt() -> nn.Module:
    """Two nanoGPT blocks."""
    torch.manual_seed(0)
    return Stack(CausalSelfAttention(), CausalSelfAttention()).eval()


def vit_style() -> nn.Module:
    torch.manual_seed(0)
    return Stack(VitAttention(), VitAttention()).eval()


def shape_masked(mask: str = "ones") -> nn.Module:
    torch.manual_seed(0)
    return Stack(ShapeMasked(mask=mask)).eval()


def fixed_batch() -> nn.Module:
    torch.manual_seed(0)
    return Stack(FixedBatch()).eval()


def value_steered() -> nn.Module:
    torch.manual_seed(0)
    return Stack(ValueSteered()).eval()


SHAPE = [1, 16, 24]


def tokens(n: int = 2) -> torch.Tensor:
    return torch.randn(n, *SHAPE[1:], generator=torch.Generator().manual_seed(1))
