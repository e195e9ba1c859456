"""Attention in the spellings users write: nn.MultiheadAttention in each of its modes, the encoder layer,
F.scaled_dot_product_attention, hand-written heads, and a tiny vision transformer.

Sizes are small (embed 24..32, sequences 7..17) and odd where they can be, so a transposed or mis-split
axis changes the shape or the numbers. Masks are constants (buffers), as they are in a deployed model.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from tests.zoo.models import AttentionBlock, ZooModel, _seeded
except ImportError:  # imported by `edgeport convert tests/zoo/attention.py:<name>` (tests/zoo on sys.path)
    from models import AttentionBlock, ZooModel, _seeded  # type: ignore[no-redef]


def _causal(length: int) -> torch.Tensor:
    return torch.triu(torch.ones(length, length, dtype=torch.bool), diagonal=1)


class MHA(nn.Module):
    """Self-attention through nn.MultiheadAttention, one mode per constructor argument."""

    def __init__(
        self,
        dim: int = 24,
        heads: int = 3,
        batch_first: bool = True,
        bias: bool = True,
        need_weights: bool = False,
        average_attn_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=batch_first)
        self.need_weights, self.average = need_weights, average_attn_weights
        self.register_buffer("attn_mask", attn_mask)
        self.register_buffer("key_padding_mask", key_padding_mask)

    def forward(self, x: torch.Tensor):
        y, w = self.attn(
            x,
            x,
            x,
            need_weights=self.need_weights,
            average_attn_weights=self.average,
            attn_mask=self.attn_mask,
            key_padding_mask=self.key_padding_mask,
        )
        return (y, w) if self.need_weights else y


class CrossMHA(nn.Module):
    """Queries from one input, keys and values from another with its own widths (kdim, vdim)."""

    def __init__(self, dim: int = 24, heads: int = 4, kdim: int = 10, vdim: int = 14):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, kdim=kdim, vdim=vdim, batch_first=True)
        self.value_in = nn.Linear(kdim, vdim)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.attn(query, memory, self.value_in(memory), need_weights=False)[0]


class EncoderLayer(nn.Module):
    def __init__(self, norm_first: bool, activation: str = "relu", dim: int = 32, heads: int = 4):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class SDPA(nn.Module):
    """q, k, v projections, F.scaled_dot_product_attention over [batch, heads, seq, head_dim]."""

    def __init__(self, dim: int = 24, heads: int = 4, is_causal: bool = False):
        super().__init__()
        self.heads, self.is_causal = heads, is_causal
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)
        return self.out(o.transpose(1, 2).reshape(b, n, e))


class HandAttention(nn.Module):
    """Separate q/k/v Linear layers, heads split with view/transpose, q·kᵀ·scale, softmax, ·v."""

    def __init__(self, dim: int = 30, heads: int = 5):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, self.d).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = (q @ k.transpose(-2, -1)) * self.d**-0.5
        o = att.softmax(dim=-1) @ v
        return self.out(o.transpose(1, 2).reshape(b, n, e))


class ViTTiny(nn.Module):
    """Patch embedding conv, class token, learned position embedding, two MHA blocks, class head."""

    def __init__(self, dim: int = 32, heads: int = 4, patch: int = 4, image: int = 16, classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        tokens = (image // patch) ** 2 + 1
        self.cls = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos = nn.Parameter(0.02 * torch.randn(1, tokens, dim))
        self.blocks = nn.ModuleList(AttentionBlock(dim, heads, need_weights=True) for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, 0]))


def _padding_mask() -> torch.Tensor:
    mask = torch.zeros(1, 11, dtype=torch.bool)
    mask[0, -3:] = True  # the last three positions are padding
    return mask


ZOO: list[ZooModel] = [
    ZooModel("vit_tiny", _seeded(ViTTiny), [[1, 3, 16, 16]], (0,), what="patch conv, cls token, 2 blocks"),
    ZooModel("mha_batch_first", _seeded(lambda: MHA()), [[1, 11, 24]], what="MHA batch_first=True"),
    ZooModel("mha_seq_first", _seeded(lambda: MHA(batch_first=False)), [[11, 1, 24]], what="MHA (L, N, E)"),
    # Batch > 1 is left to onnx2tf (correct, 7 TRANSPOSEs): the rewrite's heads-as-batch form is batch 1.
    ZooModel(
        "mha_batch2", _seeded(lambda: MHA()), [[2, 9, 24]], transpose_free=False, what="MHA on a batch of 2"
    ),
    ZooModel(
        "mha_square_heads",
        _seeded(lambda: MHA(dim=32, heads=4, need_weights=True)),
        [[1, 8, 32]],
        what="MHA whose head size equals the sequence length (8), weights returned",
    ),
    ZooModel("mha_no_bias", _seeded(lambda: MHA(bias=False)), [[1, 11, 24]], what="MHA bias=False"),
    ZooModel(
        "mha_weights",
        _seeded(lambda: MHA(need_weights=True)),
        [[1, 11, 24]],
        what="MHA need_weights, head-averaged weights out",
    ),
    ZooModel(
        "mha_weights_per_head",
        _seeded(lambda: MHA(need_weights=True, average_attn_weights=False)),
        [[1, 11, 24]],
        what="MHA need_weights, per-head weights out",
    ),
    ZooModel(
        "mha_causal_mask",
        _seeded(lambda: MHA(attn_mask=_causal(11))),
        [[1, 11, 24]],
        what="MHA with a constant causal attn_mask",
    ),
    ZooModel(
        "mha_padding_mask",
        _seeded(lambda: MHA(key_padding_mask=_padding_mask())),
        [[1, 11, 24]],
        what="MHA with a constant key_padding_mask",
    ),
    ZooModel(
        "mha_cross_kdim_vdim",
        _seeded(CrossMHA),
        [[1, 7, 24], [1, 13, 10]],
        what="cross-attention, kdim=10, vdim=14",
    ),
    ZooModel(
        "encoder_post_norm",
        _seeded(lambda: EncoderLayer(norm_first=False)),
        [[1, 17, 32]],
        what="TransformerEncoderLayer norm_first=False",
    ),
    ZooModel(
        "encoder_pre_norm_gelu",
        _seeded(lambda: EncoderLayer(norm_first=True, activation="gelu")),
        [[1, 17, 32]],
        what="TransformerEncoderLayer norm_first=True, GELU",
    ),
    ZooModel("sdpa", _seeded(lambda: SDPA()), [[1, 13, 24]], what="F.scaled_dot_product_attention"),
    ZooModel("sdpa_causal", _seeded(lambda: SDPA(is_causal=True)), [[1, 13, 24]], what="SDPA is_causal=True"),
    ZooModel("hand_attention", _seeded(HandAttention), [[1, 9, 30]], what="q·kᵀ/softmax/·v by hand, 5 heads"),
]


def __getattr__(name: str) -> Callable[[], nn.Module]:
    """`attention.py:<zoo name>` is a valid `edgeport convert` SOURCE."""
    for m in ZOO:
        if m.name == name:
            return m.build
    raise AttributeError(name)
