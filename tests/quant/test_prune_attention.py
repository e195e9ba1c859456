"""Attention heads: whole heads of nn.MultiheadAttention prune (quant/prune/heads.py) while the
embedding it reads and writes stays whole; a pruned attention computes exactly what zeroing its
heads' output columns computes, in every mode of the zoo; a tiny ViT prunes 30 % and converts within
the float tolerance."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.quant.prune.heads import PrunedAttention, cut_heads, head_groups, zero_heads
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.zoo import zoo_model

ATTENTION = Path(__file__).resolve().parents[1] / "zoo" / "attention.py"
# nn.MultiheadAttention batch-first and sequence-first, a batch of 2, no bias, a causal and a padding
# mask, weights computed and dropped, inside an encoder layer (its fused fast path) and a ViT.
MODES = (
    "mha_batch_first",
    "mha_seq_first",
    "mha_batch2",
    "mha_no_bias",
    "mha_causal_mask",
    "mha_padding_mask",
    "encoder_post_norm",
    "encoder_pre_norm_gelu",
    "vit_tiny",
)


def _first(out: object) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out  # type: ignore[index,return-value]


@pytest.mark.parametrize("name", MODES)
def test_pruned_attention_is_the_attention_with_those_heads_zeroed(name: str) -> None:
    zoo = zoo_model(name)
    model, x = zoo.build(), zoo.example_inputs()
    groups, _ = head_groups(model)
    assert groups
    whole, zeroed, cut = copy.deepcopy(model), copy.deepcopy(model), copy.deepcopy(model)
    for group in groups:
        attention = group.attention(whole)
        parent, _, attr = group.name.rpartition(".")
        setattr(
            dict(whole.named_modules())[parent] if parent else whole,
            attr,
            PrunedAttention(attention, range(group.heads)),
        )
        gone = [0, group.heads - 1] if group.heads > 2 else [1]
        zero_heads(zeroed, group, gone)
        cut_heads(cut, group, gone)
        assert group.attention(cut).num_heads == group.heads - len(gone)
    with torch.no_grad():
        torch.testing.assert_close(_first(whole(*x)), _first(model(*x)), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(_first(cut(*x)), _first(zeroed(*x)), rtol=1e-5, atol=1e-5)


def test_heads_whose_weights_are_an_output_are_kept_whole() -> None:
    zoo = zoo_model("mha_weights_per_head")
    specs = [TensorSpec("x", zoo.input_shapes[0])]
    options = fast_options(round_to=4, min_width=4)
    with pytest.raises(
        EdgeportError, match="attn: heads kept whole, its attention weights are a model output"
    ):
        prune_module(zoo.build(), specs, {}, options)


def test_tiny_vit_prunes_heads_and_mlps_and_converts(tmp_path: Path) -> None:
    zoo = zoo_model("vit_tiny")
    outdir = tmp_path / "vit"
    prune = PruneOptions(ratio=0.3, round_to=8, min_width=8, recovery="none", samples=16, held_out=8)
    result = convert_model(
        ConvertOptions(
            source=f"{ATTENTION}:vit_tiny", outdir=outdir, input_shapes=zoo.input_shapes, prune=prune
        )
    )
    section = verified_section(result)
    # The attention's MACs count (module and exported graph agree), so 30 % is of the whole model.
    assert section.removed() >= 0.3 and section.after.macs == section.after.onnx_macs
    heads = {g.module: g for g in section.groups if g.heads_before is not None}
    assert set(heads) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(g.channels_after == 8 * g.heads_after for g in heads.values())  # head_dim 8
    # The embedding the attention reads and writes stays whole, and says why.
    assert any("embedding of blocks.1.attn" in k for k in section.kept_whole)
    before = sum(g.heads_before for g in heads.values())
    after = sum(g.heads_after for g in heads.values())
    assert f"attention heads {before} -> {after}" in result.summary().splitlines()[0]
