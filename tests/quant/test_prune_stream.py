"""Residual-stream pruning across option-A shortcuts (quant/prune/channel_pads.py): each channel pad
becomes a selection layer, so every stage's stream is its own group; the cut equals zeroing, the cut
selections become pads / gathers, the pruned model converts; models without channel pads, or that fx
cannot trace, are pruned as before."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune import prune_module
from edgeport.quant.prune.allocate import allocate
from edgeport.quant.prune.channel_pads import (
    ChannelGather,
    channel_pad,
    gather_index,
    is_selection,
    pads_as_selections,
    selection,
    selections_as_gathers,
    split_channel_pad,
)
from edgeport.quant.prune.channels import consumer_columns, zero_inputs
from edgeport.quant.prune.criteria import removal_plan
from edgeport.quant.prune.graph import Graph
from edgeport.quant.prune.prune import checked_groups, cost_model, sensitivities
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
)
from tests.quant.stream_models import (
    INPUT_SHAPE,
    lambda_resnet,
    option_a_resnet,
    spatial_pad,
    untraceable_option_a,
)

SPECS = [TensorSpec("x", INPUT_SHAPE)]
STEM = ["conv1", "bn1", "layer1.0.conv2", "layer1.0.bn2", "layer1.1.conv2", "layer1.1.bn2"]


def _traced() -> tuple[nn.Module, Graph]:
    module, names, notes = pads_as_selections(option_a_resnet(), [random_batch(1)])
    assert names == ["layer2.0.channel_pad"] and notes == []
    return module, Graph(module, [random_batch(1)])


@pytest.mark.parametrize(
    ("rank", "pad", "mode", "expected"),
    [
        (4, (0, 0, 0, 0, 4, 4), "constant", (4, 4)),
        (4, (1, 1, 1, 1, 2, 0), "constant", (2, 0)),  # spatial and channel padding together
        (3, (0, 0, 3, 1), "constant", (3, 1)),
        (2, (2, 2), "constant", (2, 2)),
        (4, (1, 1, 1, 1), "constant", None),  # spatial only
        (4, (0, 0, 0, 0, 4, 4), "reflect", None),
        (4, (0, 0, 0, 0, 0, 0, 1, 1), "constant", None),  # pads the batch axis too
        (4, (0, 0, 0, 0, 2, 2, 0, 0), "constant", (2, 2)),  # a zero batch pair (an ONNX Pad's)
        (4, (0, 0, 0, 0, -2, 0), "constant", (-2, 0)),  # a crop is a selection too
    ],
)
def test_channel_pad_reads_the_channel_axis_pair(rank: int, pad: tuple, mode: str, expected: object) -> None:
    assert channel_pad(rank, pad, mode) == expected


@pytest.mark.parametrize(
    ("rank", "pad", "expected"),
    [
        (4, (0, 0, 0, 0, 4, 4), ((4, 4), ())),
        (4, (1, 1, 1, 1, 2, 2), ((2, 2), (1, 1, 1, 1))),
        (4, (0, 2, 1, 0, 3, 1, 0, 0), ((3, 1), (0, 2, 1, 0))),  # an ONNX Pad's zero batch pair
        (3, (1, 0, 3, 1), ((3, 1), (1, 0))),
        (2, (2, 2), ((2, 2), ())),
        (4, (1, 1, 1, 1), None),
    ],
)
def test_split_channel_pad_runs_the_other_axes_first_to_the_same_values(
    rank: int, pad: tuple, expected: object
) -> None:
    """The split: (before, after) for the selection, the other axes' padding for a pad before it; the
    two in a row give what the pad gives, whatever the pad value."""
    assert split_channel_pad(rank, pad) == expected
    if expected is None:
        return
    (before, after), rest = expected
    x = torch.randn(2, 3, *[5] * (rank - 2), generator=torch.Generator().manual_seed(0))
    for value in (0.0, -1.5):
        layer = selection(rank, 3, before, after, value)
        with torch.no_grad():
            got = layer(F.pad(x, rest, value=value) if rest else x)
        assert torch.allclose(got, F.pad(x, pad, value=value), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("before", "after", "value"), [(4, 4, 0.0), (0, 3, 0.0), (2, 1, 1.5), (-1, 2, 0.0)])
def test_a_selection_computes_the_pad(before: int, after: int, value: float) -> None:
    x = random_batch(2)[:, :, :4, :4]
    layer = selection(4, 3, before, after, value)
    assert is_selection(layer)
    want = torch.nn.functional.pad(x, (0, 0, 0, 0, before, after), value=value)
    assert torch.equal(layer(x), want)
    index = gather_index(layer)
    assert index == [o - before if 0 <= o - before < 3 else -1 for o in range(3 + before + after)]
    assert torch.equal(ChannelGather(index, value, 3)(x), want)


@pytest.mark.parametrize(
    "index",
    [
        [-1, -1, 0, 1, 2, -1],  # a pad
        [1, 2, -1],  # a slice and a pad
        [-1, 0, -1, 2, -1],  # interleaved: a gather
        [0, 1, 2],  # the input itself
        [-1, -1],  # nothing copied
    ],
)
def test_a_gather_computes_its_index(index: list[int]) -> None:
    x = random_batch(2)
    value = 0.25
    want = torch.stack([x[:, i] if i >= 0 else torch.full_like(x[:, 0], value) for i in index], 1)
    assert torch.equal(ChannelGather(index, value, 3)(x), want)


def test_each_stage_stream_is_its_own_group_and_every_group_cuts_exactly() -> None:
    """Without the rewrite torch-pruning couples the stem with the next stage's conv2 through the pad;
    with it, the stem's group ends at the pad and stage 2's stream is another group, and cutting any
    group's channel on a copy equals zeroing it (the check keeps all)."""
    whole = Graph(option_a_resnet(), [random_batch(1)]).groups()[0]
    assert "layer2.0.conv2" in next(g for g in whole if g.name == "conv1").out_modules
    _module, graph = _traced()
    groups, notes = graph.groups()
    by_name = {g.name: g for g in groups}
    assert notes == []
    assert sorted(by_name["conv1"].out_modules) == sorted(STEM)
    assert "layer2.0.channel_pad" in by_name["conv1"].in_modules
    stage2 = by_name["layer2.0.conv2"]
    assert "layer2.0.channel_pad" in stage2.out_modules and stage2.channels == 16
    good, kept_whole = checked_groups(graph, groups, [random_batch(2)])
    assert len(good) == len(groups) and kept_whole == []


@pytest.mark.parametrize("group_name", ["conv1", "layer2.0.conv2"])
def test_cutting_a_stream_equals_zeroing_it_and_the_gathers_keep_it(group_name: str) -> None:
    module, graph = _traced()
    group = next(g for g in graph.groups()[0] if g.name == group_name)
    gone = [r.position for r in removal_plan(graph, group, "l2")[:3]]
    x = random_batch(3)
    zeroed = copy.deepcopy(module)
    twin_graph = Graph(zeroed, [random_batch(1)])
    zero_inputs(consumer_columns(twin_graph, group.on(zeroed), gone))
    graph.group_of(group, gone).prune()
    assert dict(module.named_modules())[group_name].out_channels == group.channels - 3
    with torch.no_grad():
        want, cut = zeroed(x), module(x)
        assert torch.allclose(cut, want, rtol=1e-5, atol=1e-5)
        assert selections_as_gathers(module) == 1
        assert isinstance(module.get_submodule("layer2.0.channel_pad"), ChannelGather)
        assert torch.allclose(module(x), want, rtol=1e-5, atol=1e-5)


def test_magnitude_criteria_ignore_the_selection_weights() -> None:
    """The selection's 0/1 weights are no channel's importance: scaling them leaves the order alone."""
    module, graph = _traced()
    group = next(g for g in graph.groups()[0] if g.name == "layer2.0.conv2")
    before = removal_plan(graph, group, "l2")
    with torch.no_grad():
        module.get_submodule("layer2.0.channel_pad").weight.mul_(100.0)
    assert removal_plan(graph, group, "l2") == before


def test_the_stream_prunes_end_to_end_and_the_macs_count_no_selection() -> None:
    """Uniform allocation cuts every group, the streams too: the pruned module runs, its pad is a
    memory op, and the selections never entered the MACs."""
    model = option_a_resnet()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.4, allocation="uniform"))
    rows = {g.module: g for g in result.section.groups}
    assert rows["conv1"].channels_after < rows["conv1"].channels_before
    assert rows["layer2.0.conv2"].channels_after < rows["layer2.0.conv2"].channels_before
    pruned = result.module
    assert not any(is_selection(m) for m in pruned.modules())
    assert isinstance(pruned.get_submodule("layer2.0.channel_pad"), ChannelGather)
    assert pruned(random_batch()).shape == model(random_batch()).shape
    assert pruned.get_submodule("conv1").out_channels == rows["conv1"].channels_after
    assert result.section.removed() >= 0.4
    assert result.section.kept_whole == []


def test_the_allocation_can_choose_a_stream_group() -> None:
    """Stage 1's stream channels 0-3 are silent (BatchNorm scale and shift zero wherever they are
    written): removing them costs nothing and saves MACs, so the allocation takes the stem's group
    first."""
    model = option_a_resnet()
    with torch.no_grad():
        for name in ("bn1", "layer1.0.bn2", "layer1.1.bn2"):
            bn = model.get_submodule(name)
            bn.weight[:4] = 0.0
            bn.bias[:4] = 0.0
    module, _names, _notes = pads_as_selections(model, [random_batch(1)])
    graph = Graph(module, [random_batch(1)])
    groups = graph.groups()[0]
    plans = [removal_plan(graph, g, "l2") for g in groups]
    options = [[g.width, g.width - 4] for g in groups]
    sens = sensitivities(graph, groups, plans, options, [random_batch(8)])
    stem = next(i for i, g in enumerate(groups) if g.name == "conv1")
    assert sens[stem].error[-1] < 1e-10
    cost = cost_model(module, groups, [random_batch(1)], "flops")
    picked = allocate(cost, [g.width for g in groups], options, sens, 0.05)
    assert picked.steps[0] == (stem, 4)


def test_only_the_padding_block_is_traced() -> None:
    """The model keeps its class and its blocks theirs (their outputs stay hookable by name for
    recovery); the block whose forward pads is replaced by its trace, its pad a selection."""
    model = option_a_resnet()
    module, names, _notes = pads_as_selections(model, [random_batch(1)])
    assert module is model and type(module).__name__ == "OptionA"
    assert type(module.get_submodule("layer2.1")).__name__ == "Block"
    assert isinstance(module.get_submodule("layer2.0"), fx.GraphModule)
    assert is_selection(module.get_submodule(names[0]))
    assert torch.allclose(module(random_batch()), option_a_resnet()(random_batch()), atol=1e-6)


def test_akamaster_s_lambda_layer_shortcut_prunes_its_stream() -> None:
    """The pad inside a LambdaLayer's lambda (mode and value positional): that layer is traced."""
    model = lambda_resnet()
    module, names, notes = pads_as_selections(model, [random_batch(1)])
    assert names == ["layer2.0.shortcut.channel_pad"] and notes == []
    assert type(module.get_submodule("layer2.0")).__name__ == "LambdaBlock"
    graph = Graph(module, [random_batch(1)])
    groups = graph.groups()[0]
    assert {"conv1", "layer2.0.conv2"} <= {g.name for g in groups}
    assert checked_groups(graph, groups, [random_batch(2)]) == (groups, [])
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.4, allocation="uniform"))
    assert result.module(random_batch()).shape == model(random_batch()).shape
    assert result.module.get_submodule("conv1").out_channels < 8


def test_a_selection_the_section_lists_is_a_name_exclude_takes() -> None:
    """A group's modules list the selection a pad became (it exists on pruning's copy only);
    --prune-exclude takes that name, and both streams it joins keep their widths."""
    model, pad = option_a_resnet(), "layer2.0.channel_pad"
    listed = prune_module(model, SPECS, {}, fast_options(ratio=0.4, allocation="uniform"))
    assert [g.module for g in listed.section.groups if pad in g.modules] == ["conv1", "layer2.0.conv2"]
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.2, allocation="uniform", exclude=[pad]))
    assert result.section.excluded == [pad]
    assert not any(pad in g.modules for g in result.section.groups)
    assert result.module.get_submodule("conv1").out_channels == 8
    assert result.module.get_submodule("layer2.0.conv2").out_channels == 16
    assert result.section.removed("flops") >= 0.2


def test_a_pad_off_the_channel_axis_leaves_the_model_as_it_was() -> None:
    model = spatial_pad()
    module, names, notes = pads_as_selections(model, [random_batch(1)])
    assert module is model and names == [] and notes == []
    result = prune_module(model, SPECS, {}, fast_options())
    assert not any(isinstance(m, fx.GraphModule) for m in result.module.modules())


def test_a_model_fx_cannot_trace_keeps_its_stream_whole_and_says_why() -> None:
    model = untraceable_option_a()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.2))
    notes = result.section.kept_whole
    assert any(n.startswith("layer2.0: its channel pad") and "torch.fx cannot trace it" in n for n in notes)
    assert any(n.startswith("conv1: kept whole, the dependency analysis does not follow it") for n in notes)
    assert result.module(random_batch()).shape == model(random_batch()).shape
    assert result.section.removed() >= 0.2


def test_a_stream_pruned_model_converts_within_the_float_tolerance(tmp_path: Path) -> None:
    from edgeport.pipeline import FLOAT32_TOLERANCE, ConvertOptions, convert_model

    source = Path(__file__).with_name("stream_models.py")
    result = convert_model(
        ConvertOptions(
            source=f"{source}:option_a_resnet",
            outdir=tmp_path / "out",
            input_shapes=[INPUT_SHAPE],
            prune=fast_options(ratio=0.4, allocation="uniform"),
        )
    )
    ver = result.manifest.verification
    assert ver is not None and ver.passed
    assert all(e.max_rel_error < FLOAT32_TOLERANCE for e in ver.errors if e.stage == "tflite_float32")
    section = result.manifest.sections["pruning"]
    rows = {g["module"]: g for g in section["groups"]}
    assert rows["layer2.0.conv2"]["channels_after"] < rows["layer2.0.conv2"]["channels_before"]
    assert section["after"]["onnx_macs"] == section["after"]["macs"]  # the gather is no MAC


def test_kept_lists_each_narrowed_module_s_channels_in_the_unpruned_model() -> None:
    """PruneResult.kept maps every narrowed module's outputs to the unpruned model's channels (what
    recovery reads the unpruned model's targets by): the cut's weights are those rows and columns."""
    model = option_a_resnet()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.4, allocation="uniform"))
    kept, pruned = result.kept, result.module
    assert {"conv1", "bn1", "layer1.0.conv2", "layer2.0.conv2", "layer2.0.bn2"} <= kept.keys()
    assert not any("channel_pad" in name for name in kept)
    assert len(kept["conv1"]) == pruned.get_submodule("conv1").out_channels < 8
    ours, theirs = pruned.get_submodule("layer2.0.conv2"), model.get_submodule("layer2.0.conv2")
    rows, cols = kept["layer2.0.conv2"], kept["layer2.0.conv1"]
    assert torch.equal(ours.weight, theirs.weight[rows][:, cols])
    bn, ref_bn = pruned.get_submodule("bn1"), model.get_submodule("bn1")
    assert torch.equal(bn.running_mean, ref_bn.running_mean[kept["bn1"]])
    assert kept["bn1"] == kept["conv1"]


def test_block_outputs_inherit_the_stream_s_map() -> None:
    """A block's output (bn2 + shortcut, through a ReLU) and its stage's keep the channels its bn2
    keeps; the stem's ReLU output is the stem BatchNorm's."""
    result = prune_module(option_a_resnet(), SPECS, {}, fast_options(ratio=0.4, allocation="uniform"))
    kept = result.kept
    for block in ("layer1.0", "layer1.1", "layer1"):
        assert kept[block] == kept["bn1"], block
    assert kept["layer2.0"] == kept["layer2.0.bn2"] == kept["layer2.1"] == kept["layer2"]
    assert "linear" not in kept  # the model's output keeps every channel


def test_the_latency_target_weighs_steps_in_the_host_s_layer_times(monkeypatch) -> None:
    """--prune-target latency allocates with the per-layer time table as the score (its shapes timed
    by the layer timer, here a fake: no timing), says how many shapes it times and records how many
    it timed (at full width first, in all with the chosen trial); the flops target allocates in MACs alone."""
    from edgeport.quant.prune import allocate as alloc_mod
    from edgeport.quant.prune import layer_latency

    scores: list[object] = []
    real = alloc_mod.allocate

    def spy(*args: object, **kwargs: object) -> object:
        scores.append(args[5] if len(args) > 5 else kwargs.get("score"))
        return real(*args, **kwargs)

    timed: list[layer_latency.LayerShape] = []

    def timer(shapes):  # noqa: ANN001, ANN202 - a fake layer timer: µs by output channels, tiles of 16
        timed.extend(shapes)
        return [[float(-(-s.cout // 16)) * s.height * s.width * s.cin] for s in shapes]

    monkeypatch.setattr(alloc_mod, "allocate", spy)
    monkeypatch.setattr(layer_latency, "time_shapes", timer)
    model = option_a_resnet()
    prune_module(model, SPECS, {}, fast_options(ratio=0.3))
    assert scores == [None] and not timed

    def clock(module: nn.Module) -> tuple[float, float]:  # latency falling with the MACs
        count = sum(p.numel() for p in module.parameters())
        return float(sum(p.numel() for p in model.parameters())), float(count)

    lines: list[str] = []
    result = prune_module(
        model, SPECS, {}, fast_options(ratio=0.3, target="latency"), say=lines.append, measure=clock
    )
    tables = scores[1:]
    assert tables and all(isinstance(t, layer_latency.LayerTable) for t in tables)
    assert len({id(t) for t in tables}) == 1  # built once, for every trial
    full = next(line for line in lines if line.startswith("timing layer shapes on this host ("))
    assert full.endswith(" at full width)")
    timed_in_all = f"({len(timed)} layer shapes timed in all)"
    assert any(line.startswith("latency: timing the chosen trial") and timed_in_all in line for line in lines)
    assert int(full.split("(")[1].split()[0]) < len(timed)  # the narrower widths come later
    assert result.section.layer_shapes_timed == len(timed) == len(set(timed)) > 0


def test_prune_weigh_host_weighs_a_flops_target_in_layer_times_and_macs_a_latency_one(monkeypatch) -> None:
    """--prune-weigh host gives a flops target the layer table as its score (the MACs removed are still
    the ratio asked), says so in the section and the summary; --prune-weigh macs gives a latency
    target's trials no table."""
    from edgeport.quant.prune import allocate as alloc_mod
    from edgeport.quant.prune import latency, layer_latency

    scores: list[object] = []
    real = alloc_mod.allocate

    def spy(*args: object, **kwargs: object) -> object:
        scores.append(args[5] if len(args) > 5 else kwargs.get("score"))
        return real(*args, **kwargs)

    def timer(shapes):  # noqa: ANN001, ANN202 - a fake layer timer: µs by output channels, tiles of 16
        return [[float(-(-s.cout // 16)) * s.height * s.width * s.cin] for s in shapes]

    monkeypatch.setattr(alloc_mod, "allocate", spy)
    monkeypatch.setattr(layer_latency, "time_shapes", timer)
    monkeypatch.setattr(latency, "host_load", lambda: latency.Load(0.0, 2, 0.0))
    model = option_a_resnet()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.3, weigh="host"))
    assert len(scores) == 1 and isinstance(scores[0], layer_latency.LayerTable)
    section = result.section
    assert section.weigh == "host" and "microsecond" in section.allocation
    assert section.layer_shapes_timed == scores[0].timed > 0  # recorded for a flops target too
    assert section.removed("flops") >= 0.3 - 1e-6 and section.latency is None
    assert "steps weighed in host layer times" in section.describe()
    written = section.model_dump()
    assert written["weigh"] == "host"
    older = type(section).model_validate({k: v for k, v in written.items() if k != "weigh"})
    assert older.weigh is None and "weigh" not in older.model_dump()  # written before it was recorded

    scores.clear()
    plain = prune_module(model, SPECS, {}, fast_options(ratio=0.3)).section
    assert scores == [None] and plain.weigh == "macs" and "per MAC saved" in plain.allocation
    assert plain.layer_shapes_timed is None and "layer_shapes_timed" not in plain.model_dump()
    assert "host layer times" not in plain.describe()

    def clock(module: nn.Module) -> tuple[float, float]:  # latency falling with the parameters
        return float(sum(p.numel() for p in model.parameters())), float(
            sum(p.numel() for p in module.parameters())
        )

    scores.clear()
    options = fast_options(ratio=0.3, target="latency", weigh="macs")
    searched = prune_module(model, SPECS, {}, options, measure=clock).section
    assert scores and all(s is None for s in scores)
    assert searched.weigh == "macs" and searched.layer_shapes_timed is None
