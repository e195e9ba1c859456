"""Patterns of architectures written outside edgeport (torchvision's ShuffleNetV2 and ConvNeXt, timm's
ViT and LeViT) that pruning failed on, rebuilt as small modules: ShuffleNetV2's stride-1 units (chunk,
concat, channel shuffle) made torch-pruning's width inference divide by zero; timm's Attention (an
nn.Identity between the heads' merge and `proj`, called with attn_mask= by keyword) kept its heads
whole; LeViT's attention-bias cache (filled in eval) made the model impossible to deep-copy; a
ConvNeXt stream kept whole said only that the analysis does not follow it, not which LayerNorm."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune import prune_module
from edgeport.quant.prune.heads import cut_plan, head_groups, head_plan, zero_plan
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo.models import ShuffleUnit, _conv_bn
from tests.zoo.shuffle import _shuffle_view


class ShuffleV2Unit(ShuffleUnit):
    """torchvision's ShuffleNetV2 stride-1 unit: the zoo's, with torchvision's view-based shuffle."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, branch = x.chunk(2, dim=1)
        return _shuffle_view(torch.cat([kept, self.branch(branch)], dim=1), 2)


class ShuffleV2Stage(nn.Module):
    def __init__(self, units: int = 3) -> None:
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.units = nn.Sequential(*[ShuffleV2Unit(16) for _ in range(units)])
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.units(self.stem(x)).mean((2, 3)))


def test_shufflenet_v2_units_prune_their_branches() -> None:
    """Three units in a row: torch-pruning inferred a concat input 0 channels wide and its channel
    shuffle's reshape divided by it. The branches' inner channels prune; the channels the shuffle
    couples are kept whole, each with a note naming its module."""
    torch.manual_seed(0)
    model = ShuffleV2Stage().eval()
    result = prune_module(model, [TensorSpec("x", [1, 3, 16, 16])], {}, fast_options(ratio=0.2))
    assert result.section.removed() >= 0.2
    narrowed = {g.module for g in result.section.groups if g.channels_after < g.channels_before}
    assert narrowed and all(name.startswith("units.") and ".branch." in name for name in narrowed)
    assert any(note.startswith("stem.0: kept whole") for note in result.section.kept_whole)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert result.module(x).shape == model(x).shape == (2, 10)


class TimmAttention(nn.Module):
    """timm's Attention as timm 1.0 writes it: q/k/v packed, unbind, q_norm/k_norm and `norm`
    Identities, SDPA, heads merged into attn_dim, `norm` then `proj`, a Dropout after."""

    def __init__(self, dim: int = 24, heads: int = 4) -> None:
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.attn_dim = heads * self.head_dim
        self.qkv = nn.Linear(dim, 3 * self.attn_dim)
        self.q_norm, self.k_norm, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim)
        self.proj_drop = nn.Dropout(0.0)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        x = self.norm(x.transpose(1, 2).reshape(b, n, self.attn_dim))
        return self.proj_drop(self.proj(x))


class TimmBlock(nn.Module):
    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = nn.LayerNorm(dim), TimmAttention(dim), nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), attn_mask=attn_mask)  # by keyword, as timm's Block
        return x + self.mlp(self.norm2(x))


class TimmViT(nn.Module):
    def __init__(self, dim: int = 24) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(TimmBlock(dim), TimmBlock(dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.patch(x).flatten(2).transpose(1, 2)).mean(1))


def _vit() -> nn.Module:
    torch.manual_seed(0)
    return TimmViT().eval()


def test_timm_attention_heads_are_found_through_its_identity_norm() -> None:
    model, x = _vit(), torch.randn(2, 3, 16, 16)
    groups, notes = head_groups(model, (), [x[:1]])
    assert notes == []
    assert sorted((g.name, g.heads, g.consumer) for g in groups) == [
        ("blocks.0.attn", 4, "blocks.0.attn.proj"),
        ("blocks.1.attn", 4, "blocks.1.attn.proj"),
    ]
    # The trace replaces the attention, and the block still calls it with attn_mask= by keyword.
    group = groups[0]
    plan = head_plan(model, group, "l2")
    zeroed, cut = copy.deepcopy(model), copy.deepcopy(model)
    zero_plan(zeroed, group, plan, 1)
    cut = cut_plan(cut, group, plan, 1)
    with torch.no_grad():
        torch.testing.assert_close(cut(x), zeroed(x), rtol=1e-5, atol=1e-5)


def test_timm_vit_prunes_heads() -> None:
    model = _vit()
    options = fast_options(round_to=4, min_width=4, blocks=False, ratio=0.3)
    result = prune_module(model, [TensorSpec("x", [1, 3, 16, 16])], {}, options)
    assert result.section.removed() >= 0.3
    heads = {g.module: (g.heads_before, g.heads_after) for g in result.section.groups if g.heads_before}
    assert set(heads) == {"blocks.0.attn", "blocks.1.attn"}
    assert not any("heads kept whole" in note for note in result.section.kept_whole)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert result.module(x).shape == (2, 10)


class CachedBiasAttention(nn.Module):
    """timm's LeViT attention: a per-head bias on the scores, gathered from a parameter and cached in
    eval under the input's device (the cache emptied by .train() / .eval())."""

    def __init__(self, dim: int = 16, heads: int = 2, tokens: int = 16) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.attention_biases = nn.Parameter(torch.randn(heads, tokens))
        idxs = torch.arange(tokens).view(-1, 1).sub(torch.arange(tokens)).abs()
        self.register_buffer("attention_bias_idxs", idxs, persistent=False)
        self.attention_bias_cache: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> CachedBiasAttention:
        super().train(mode)
        self.attention_bias_cache = {}
        return self

    def biases(self, device: torch.device) -> torch.Tensor:
        if self.training:
            return self.attention_biases[:, self.attention_bias_idxs]
        key = str(device)
        if key not in self.attention_bias_cache:
            self.attention_bias_cache[key] = self.attention_biases[:, self.attention_bias_idxs]
        return self.attention_bias_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * self.head_dim**-0.5 + self.biases(x.device)
        return self.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c))


class CachedBiasNet(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.attn = CachedBiasAttention(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.Hardswish(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = x + self.attn(x)
        return self.head((x + self.mlp(x)).mean(1))


def test_attention_bias_cache_of_levit_prunes() -> None:
    """torch-pruning's forward (grad enabled) left a non-leaf tensor in the cache, which deepcopy
    refuses; fx's trace of the attention left a Proxy there (cached under str(Proxy device)), which
    broke later traces and copies. The cache keeps plain values; the MLP prunes."""
    torch.manual_seed(0)
    model = CachedBiasNet().eval()
    result = prune_module(model, [TensorSpec("x", [1, 3, 16, 16])], {}, fast_options(ratio=0.2))
    assert result.section.removed() >= 0.2
    narrowed = {g.module for g in result.section.groups if g.channels_after < g.channels_before}
    assert "mlp.0" in narrowed
    for cached in result.module.attn.attention_bias_cache.values():
        assert isinstance(cached, torch.Tensor) and cached.grad_fn is None
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert copy.deepcopy(result.module)(x).shape == model(x).shape == (2, 10)
    # Tracing the attention to look for heads leaves its cache as it was: no Proxy under a new key.
    before = dict(model.attn.attention_bias_cache)
    head_groups(model, (), [x[:1]])
    assert model.attn.attention_bias_cache == before and list(before) == ["cpu"]


class LayerNorm2d(nn.LayerNorm):
    """torchvision's ConvNeXt LayerNorm2d: a LayerNorm over the channels of an NCHW tensor."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).permute(0, 2, 3, 1))
        return x + self.layer_scale * self.fc2(self.act(self.fc1(y))).permute(0, 3, 1, 2)


class ConvNeXtStage(nn.Module):
    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, 4), LayerNorm2d(dim))
        self.blocks = nn.Sequential(ConvNeXtBlock(dim), ConvNeXtBlock(dim))
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def test_convnext_stream_is_kept_whole_naming_its_layer_norm() -> None:
    """A ConvNeXt stage's stream is normalized over its channels (LayerNorm2d, LayerNorm after a
    permute): no cut equals a zeroing there, and the note says which LayerNorm; the blocks' MLPs prune."""
    torch.manual_seed(0)
    model = ConvNeXtStage().eval()
    options = fast_options(ratio=0.2, round_to=4, min_width=4, blocks=False)
    result = prune_module(model, [TensorSpec("x", [1, 3, 16, 16])], {}, options)
    assert result.section.removed() >= 0.2
    (note,) = result.section.kept_whole  # the stream's group, named by the layer it was found from
    why = "normalizes over its channels (a cut changes the rest)"
    assert note.endswith(f": kept whole, stem.1 (LayerNorm2d) {why}")
    narrowed = {g.module for g in result.section.groups if g.channels_after < g.channels_before}
    assert narrowed <= {"blocks.0.fc1", "blocks.1.fc1"} and narrowed
