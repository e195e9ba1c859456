"""Whole heads of hand-written and F.scaled_dot_product_attention attention (quant/prune/traced_heads.py):
found from the reshapes that split and merge the heads, a cut head computes exactly what zeroing its
output columns computes, the shapes line up, heads are ranked by the chosen criterion (RED merges
duplicated heads exactly), a transformer of such blocks prunes 30 % and converts within the float
tolerance, and an attention whose heads are mixed keeps them whole with a note naming the module."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.prune import PruneOptions, PruningSection, prune_module
from edgeport.quant.prune.heads import HeadGroup, cut_plan, head_groups, head_plan, zero_plan
from edgeport.tensors import TensorSpec
from tests.quant import prune_attention_models as spelled
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
    verified_section,
)
from tests.zoo import zoo_model


class Packed(nn.Module):
    """q, k, v in one Linear, heads with reshape + permute, SDPA, heads merged with -1."""

    def __init__(self, dim: int = 24, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, e = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, n, -1))


class Separate(nn.Module):
    """q, k, v Linears, heads with view(b, n, heads, -1), q·kᵀ scaled, a causal mask, softmax, ·v;
    `mix` spells the shapes otherwise, or mixes the heads."""

    def __init__(self, dim: int = 24, heads: int = 3, mix: str = "") -> None:
        super().__init__()
        self.heads, self.d, self.mix = heads, dim // heads, mix
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim)
        self.o, self.o2 = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.per_head = nn.Parameter(torch.linspace(0.5, 1.5, heads).reshape(heads, 1, 1))
        # A constant of the sequence's length, as deployed (fx cannot trace a mask made from x.shape).
        self.register_buffer("causal", torch.ones(16, 16, dtype=torch.bool).triu(1))

    def split(self, t: torch.Tensor) -> torch.Tensor:
        if self.mix == "size_tuple":  # as Hugging Face's BERT writes it
            return t.view(t.size()[:-1] + (self.heads, self.d)).permute(0, 2, 1, 3)
        b, n, _ = t.shape
        return t.view(b, n, self.heads, -1).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(x)), self.split(self.v(x))
        scores = (q @ k.transpose(-2, -1)) / self.d**0.5
        if self.mix == "per_head_scale":  # a parameter per head: cutting a head breaks its shape
            scores = scores * self.per_head
        o = scores.masked_fill(self.causal, float("-inf")).softmax(-1) @ v
        if self.mix == "mean_over_heads":  # every head reads the others
            o = o + o.mean(1, keepdim=True)
        if self.mix == "size_tuple":
            o = o.permute(0, 2, 1, 3).contiguous()
            return self.o(o.view(o.size()[:-2] + (self.heads * self.d,)))
        if self.mix == "merged_to_input_shape":
            return self.o(o.transpose(1, 2).reshape(x.shape))
        if self.mix == "merge_read_twice":  # the merged heads reach two Linears
            merged = o.transpose(1, 2).reshape(b, n, self.heads * self.d)
            return self.o(merged) + self.o2(merged)
        return self.o(o.transpose(1, 2).reshape(b, n, self.heads * self.d))


class Block(nn.Module):
    def __init__(self, attention: nn.Module, dim: int = 24) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attention
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.ReLU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """Patch embedding, one block of each attention, a class head."""

    def __init__(self, dim: int = 24, mix: str = "") -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(Block(Packed(dim)), Block(Separate(dim, mix=mix)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.patch(x).flatten(2).transpose(1, 2))
        return self.head(self.norm(x).mean(1))


def transformer(mix: str = "") -> nn.Module:
    torch.manual_seed(0)
    return Transformer(mix=mix).eval()


SHAPE = [1, 3, 16, 16]
# Spellings of the head reshapes the cut rewrites: ints and -1, x.size() tuples, the input's .shape.
SPELLINGS = ("", "size_tuple", "merged_to_input_shape")
SPECS = [TensorSpec("x", SHAPE)]


def _inputs(n: int = 2) -> torch.Tensor:
    return random_batch(n, 1, SHAPE)


# Attention fx's symbolic trace cannot follow (tests/quant/prune_attention_models.py), traced on the
# example by traced_heads.ExampleTracer.
EXAMPLE_TRACED = {
    "nano_gpt": spelled.nano_gpt,
    "vit_style": spelled.vit_style,
    "mask_ones_from_shape": lambda: spelled.shape_masked("ones"),
    "mask_arange_from_shape": lambda: spelled.shape_masked("arange"),
}


def _models() -> list[tuple[str, nn.Module, list[torch.Tensor]]]:
    found = [(f"transformer{mix}", transformer(mix), [_inputs()]) for mix in SPELLINGS]
    for name in ("hand_attention", "sdpa", "sdpa_causal"):
        zoo = zoo_model(name)
        found.append((name, zoo.build().eval(), list(zoo.example_inputs())))
    # A batch of 2 while the trace saw 1: the cut frees the batch the example fixed.
    found += [(name, build(), [spelled.tokens(2)]) for name, build in EXAMPLE_TRACED.items()]
    return found


def _fast(**over: object) -> PruneOptions:
    # Channels and heads only: these transformers' layers are residual blocks, and a block removed whole
    # takes its heads with it (tests/quant/test_prune_blocks.py).
    return fast_options(**{"round_to": 4, "min_width": 4, "blocks": False, **over})


@pytest.mark.parametrize(
    ("name", "model", "inputs"), _models(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_cut_heads_compute_what_zeroed_heads_compute(name: str, model: nn.Module, inputs: list) -> None:
    groups, _ = head_groups(model, (), [x[:1] for x in inputs])
    traced = [g for g in groups if g.trace is not None]
    assert traced, name
    for group in traced:
        gone = [0, group.heads - 1]
        plan = head_plan(model, group, "l2")
        plan = [r for r in plan if r.position in gone] + [r for r in plan if r.position not in gone]
        zeroed, cut = copy.deepcopy(model), copy.deepcopy(model)
        zero_plan(zeroed, group, plan, 2)
        cut = cut_plan(cut, group, plan, 2)
        with torch.no_grad():
            got, want = cut(*inputs), zeroed(*inputs)
        assert got.shape == want.shape == model(*inputs).shape
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        producers = {n: m for n, m in cut.named_modules() if n in group.producers}
        parts = sum(group.producers.values())
        kept = (group.heads - 2) * group.head_dim
        assert sum(m.out_features for m in producers.values()) == parts * kept
        assert dict(cut.named_modules())[group.consumer].in_features == kept


def test_heads_are_found_from_the_reshapes() -> None:
    groups, _ = head_groups(transformer(), (), [_inputs(1)])
    found = {(g.name, g.heads, g.head_dim, tuple(sorted(g.producers.items())), g.consumer) for g in groups}
    assert found == {
        ("blocks.0.attn", 4, 6, (("blocks.0.attn.qkv", 3),), "blocks.0.attn.proj"),
        (
            "blocks.1.attn",
            3,
            8,
            (("blocks.1.attn.k", 1), ("blocks.1.attn.q", 1), ("blocks.1.attn.v", 1)),
            "blocks.1.attn.o",
        ),
    }


def _group(model: nn.Module, name: str) -> HeadGroup:
    groups, _ = head_groups(model, (), [_inputs(1)])
    return next(g for g in groups if g.name == name)


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "red", "ig"])
def test_every_criterion_ranks_heads(criterion: str) -> None:
    model = transformer()
    group = _group(model, "blocks.0.attn")
    plan = head_plan(model, group, criterion, [_inputs(4)])
    assert sorted(r.position for r in plan) == list(range(group.heads))


def test_magnitude_criteria_rank_the_smallest_head_first() -> None:
    model = transformer()
    group = _group(model, "blocks.1.attn")
    with torch.no_grad():
        for name in ("q", "k", "v"):
            getattr(model.blocks[1].attn, name).weight[8:16] *= 0.01  # head 1's rows
        model.blocks[1].attn.o.weight[:, 8:16] *= 0.01
    for criterion in ("l1", "l2", "bn-scale", "ig"):
        assert head_plan(model, group, criterion, [_inputs(4)])[0].position == 1, criterion


def test_red_merges_a_duplicated_head_exactly() -> None:
    model = transformer()
    attention = model.blocks[1].attn
    with torch.no_grad():  # head 2 is head 0 again: the same q/k/v rows (and biases)
        for linear in (attention.q, attention.k, attention.v):
            linear.weight[16:24] = linear.weight[0:8]
            if linear.bias is not None:
                linear.bias[16:24] = linear.bias[0:8]
    group = _group(model, "blocks.1.attn")
    plan = head_plan(model, group, "red")
    assert {plan[0].position, plan[0].into} == {0, 2}
    cut = cut_plan(copy.deepcopy(model), group, plan, 1)
    assert cut.blocks[1].attn.o.in_features == 16
    with torch.no_grad():
        torch.testing.assert_close(cut(_inputs()), model(_inputs()), rtol=1e-5, atol=1e-5)


def test_red_merges_a_duplicated_head_of_multihead_attention_exactly() -> None:
    zoo = zoo_model("mha_batch_first")
    model, x = zoo.build().eval(), zoo.example_inputs()
    attention = model.attn
    d = attention.head_dim
    with torch.no_grad():
        for part in range(3):  # head 1 is head 0 again in q, k and v
            rows = slice(part * 24 + d, part * 24 + 2 * d)
            attention.in_proj_weight[rows] = attention.in_proj_weight[part * 24 : part * 24 + d]
            attention.in_proj_bias[rows] = attention.in_proj_bias[part * 24 : part * 24 + d]
    (group,), _ = head_groups(model)
    plan = head_plan(model, group, "red")
    assert {plan[0].position, plan[0].into} == {0, 1}
    cut = cut_plan(copy.deepcopy(model), group, plan, 1)
    with torch.no_grad():
        torch.testing.assert_close(cut(*x), model(*x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("mix", "why"),
    [
        ("per_head_scale", "it does not run without one"),
        ("mean_over_heads", "an op mixes its heads"),
        ("merge_read_twice", "its heads are split by a view/reshape but not merged back"),
    ],
)
def test_mixed_heads_are_kept_whole_with_a_note(mix: str, why: str) -> None:
    result = prune_module(transformer(mix), SPECS, {}, _fast(ratio=0.2))
    assert any(k.startswith(f"blocks.1.attn: heads kept whole, {why}") for k in result.section.kept_whole)
    heads = {g.module for g in result.section.groups if g.heads_before is not None}
    assert heads == {"blocks.0.attn"}


def _converted_heads(
    tmp_path: Path, module: str, builder: str, shape: list[int], prune: PruneOptions
) -> tuple[PruningSection, dict]:
    """Convert `module`'s `builder` with `prune` through the CLI's path; check the float model verifies
    and 30 % was removed; the pruning section and its head groups by module."""
    source = tmp_path / "model.py"
    source.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        f"from {module} import {builder}\n"
    )
    outdir = tmp_path / "out"
    result = convert_model(
        ConvertOptions(source=f"{source}:{builder}", outdir=outdir, input_shapes=[shape], prune=prune)
    )
    section = verified_section(result)
    assert section.removed() >= 0.3
    return section, {g.module: g for g in section.groups if g.heads_before is not None}


def test_transformer_of_traced_attention_prunes_and_converts(tmp_path: Path) -> None:
    section, heads = _converted_heads(
        tmp_path, "tests.quant.test_prune_traced_heads", "transformer", SHAPE, _fast()
    )
    assert set(heads) == {"blocks.0.attn", "blocks.1.attn"}
    assert heads["blocks.1.attn"].modules == [
        "blocks.1.attn.k",
        "blocks.1.attn.o",
        "blocks.1.attn.q",
        "blocks.1.attn.v",
    ]
    assert sum(g.heads_after for g in heads.values()) < 7
    assert any("heads of blocks.0.attn" in k for k in section.kept_whole)


class CrossScaled(Separate):
    """Cross-attention called with a number before the memory tensor."""

    def forward(
        self, x: torch.Tensor, scale: float = 1.0, memory: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.split(self.q(x)), self.split(self.k(memory)), self.split(self.v(memory))
        o = ((q @ k.transpose(-2, -1)) * scale).softmax(-1) @ v
        return self.o(o.transpose(1, 2).reshape(b, n, self.heads * self.d))


class Cross(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = CrossScaled()

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.attn(x, 0.5, memory)


def test_cross_attention_called_with_a_number_before_a_tensor() -> None:
    torch.manual_seed(0)
    model = Cross().eval()
    x, memory = torch.randn(2, 16, 24), torch.randn(2, 5, 24)  # 16 queries, 5 memory positions
    (group,), _ = head_groups(model, (), [x[:1], memory[:1]])
    assert (group.name, group.heads, group.head_dim) == ("attn", 3, 8)
    plan = head_plan(model, group, "l2")
    zeroed, cut = copy.deepcopy(model), copy.deepcopy(model)
    zero_plan(zeroed, group, plan, 1)
    cut = cut_plan(cut, group, plan, 1)
    with torch.no_grad():
        torch.testing.assert_close(cut(x, memory), zeroed(x, memory), rtol=1e-5, atol=1e-5)


def test_attention_products_are_counted_with_their_heads() -> None:
    """The products no module makes (q·kᵀ, ·v) are the exported graph's MACs beyond the modules':
    each traced attention's are its groups' products, which the allocation scales with its heads."""
    from edgeport.pipeline.torch_passes import prune_exporter
    from edgeport.quant.prune.count import module_macs, onnx_counts

    model = transformer()
    groups, _ = head_groups(model, (), [_inputs(1)])
    graph_macs, _ = onnx_counts(prune_exporter().graph(model, [_inputs(1)], ["x"]))
    # 16 tokens: SDPA over 4 heads of 6 (16 x 16 x (6 + 6) each), q·kᵀ and ·v over 3 heads of 8.
    assert {g.name: g.products for g in groups} == {
        "blocks.0.attn": 4 * 16 * 16 * 12,
        "blocks.1.attn": 2 * 3 * 16 * 16 * 8,
    }
    assert graph_macs - sum(module_macs(model, [_inputs(1)]).values()) == sum(g.products for g in groups)


@pytest.mark.parametrize("name", list(EXAMPLE_TRACED))
def test_attention_fx_cannot_trace_is_traced_on_the_example(name: str) -> None:
    model = EXAMPLE_TRACED[name]()
    attentions = [b.attn for b in model.h]
    for attention in attentions:
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever symbolic tracing raises
            torch.fx.symbolic_trace(attention)
    groups, notes = head_groups(model, (), [spelled.tokens(1)])
    assert notes == [] and all(g.trace.example is not None for g in groups)
    found = {(g.name, g.heads, g.head_dim, tuple(sorted(g.producers.items())), g.consumer) for g in groups}
    expected = {
        "nano_gpt": {
            (f"h.{i}.attn", 4, 6, ((f"h.{i}.attn.c_attn", 3),), f"h.{i}.attn.c_proj") for i in (0, 1)
        },
        "vit_style": {
            (f"h.{i}.attn", 3, 10, ((f"h.{i}.attn.to_qkv", 3),), f"h.{i}.attn.to_out.0") for i in (0, 1)
        },
    }.get(name, {("h.0.attn", 3, 8, tuple((f"h.0.attn.{x}", 1) for x in "kqv"), "h.0.attn.o")})
    assert found == expected


def test_nano_gpt_split_narrows_with_its_heads() -> None:
    """c_attn(x).split(n_embd): each part is the kept heads' width after the cut."""
    model = spelled.nano_gpt()
    group = next(g for g in head_groups(model, (), [spelled.tokens(1)])[0] if g.name == "h.1.attn")
    cut = cut_plan(copy.deepcopy(model), group, head_plan(model, group, "l2"), 3)
    attention = cut.h[1].attn
    assert isinstance(attention, torch.fx.GraphModule)
    assert (attention.c_attn.out_features, attention.c_proj.in_features) == (18, 6)
    (split,) = [n for n in attention.graph.nodes if n.target == "split"]
    assert split.args[1] == 6
    assert cut(spelled.tokens(3)).shape == (3, 16, 10)


def test_a_trace_that_fixes_the_batch_keeps_its_heads_whole() -> None:
    result = prune_module(spelled.fixed_batch(), [TensorSpec("x", spelled.SHAPE)], {}, _fast())
    assert "h.0.attn: heads kept whole, its trace on the example fixes the batch size (RuntimeError)" in (
        result.section.kept_whole
    )
    assert all(g.heads_before is None for g in result.section.groups)


def test_control_flow_on_values_is_still_not_traced() -> None:
    """No tracer follows `if out.sum() > 0`: the attention's Linears are left to the channel
    analysis, which keeps them whole naming the module, as before."""
    result = prune_module(spelled.value_steered(), [TensorSpec("x", spelled.SHAPE)], {}, _fast())
    assert all(g.heads_before is None for g in result.section.groups)
    assert any(
        k.startswith("h.0.attn.v: kept whole") and "ValueSteered" in k for k in result.section.kept_whole
    )


def test_nano_gpt_prunes_heads_and_converts(tmp_path: Path) -> None:
    # The MLPs excluded: the 30 % comes from the heads (and the input Linear).
    prune = _fast(exclude=["h.0.mlp.0", "h.1.mlp.0"])
    _, heads = _converted_heads(
        tmp_path, "tests.quant.prune_attention_models", "nano_gpt", spelled.SHAPE, prune
    )
    assert set(heads) == {"h.0.attn", "h.1.attn"}
    assert sum(g.heads_after for g in heads.values()) < 8
    assert all(g.channels_after == 6 * g.heads_after for g in heads.values())


def test_example_tracer_fixes_shapes_read_in_python_and_not_values() -> None:
    from edgeport.quant.prune.traced_heads import trace

    attention = spelled.shape_masked("ones").h[0].attn
    x = spelled.tokens(1)
    gm = trace(attention, {}, (x,))
    with torch.no_grad():
        torch.testing.assert_close(gm(x), attention(x), rtol=0, atol=0)
    # The mask is a constant of the example's 16 positions; nothing in the graph reads a shape.
    assert not [n for n in gm.graph.nodes if n.target in ("size", "dim", getattr)]
    with pytest.raises(torch.fx.proxy.TraceError):
        trace(spelled.value_steered().h[0].attn, {}, (x,))
