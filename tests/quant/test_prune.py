"""quant/prune: coupled groups stay consistent, RED merging is exact, recovery lowers the loss,
the global allocation, and the one-line refusals."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import pytest
import torch
import torch.nn as nn

from edgeport.errors import EdgeportError
from edgeport.quant.prune import prune_module, prune_options
from edgeport.quant.prune.allocate import CostModel, CostTerm, Sensitivity, allocate, kept_widths
from edgeport.quant.prune.criteria import removal_plan
from edgeport.quant.prune.graph import Graph
from edgeport.quant.prune.options import SYNTHETIC_STEPS
from edgeport.quant.prune.recover import distill, distillation_loss
from edgeport.tensors import TensorSpec
from tests.quant.models import _randomize_bns
from tests.quant.prune_models import (
    INPUT_SHAPE,
    PadShortcut,
    coupled,
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
)

SPECS = [TensorSpec("x", INPUT_SHAPE)]


def test_every_coupled_group_prunes_to_a_running_model() -> None:
    """Residual add, concat, depthwise, chunk + add, flatten into the Linear: cutting two channels of
    any group leaves a model that runs with the same output shape."""
    model = coupled()
    names = {g.name for g in Graph(model, [random_batch(1)]).groups()[0]}
    assert {"conv1", "dw", "pw", "mix", "tail"} <= names  # dw's group spans stem, conv2 (residual)
    expected = model(random_batch()).shape
    for name in sorted(names):
        pruned = copy.deepcopy(model)
        graph = Graph(pruned, [random_batch(1)])
        group = next(g for g in graph.groups()[0] if g.name == name)
        plan = removal_plan(graph, group, "l2")
        graph.group_of(group, group.channel_indices([r.position for r in plan[:2]])).prune()
        assert pruned(random_batch()).shape == expected, name
        assert dict(pruned.named_modules())[name].out_channels == group.channels - 2 * group.repeats


def test_model_outputs_are_never_pruned() -> None:
    graph = Graph(coupled(), [random_batch(1)])
    assert "fc" not in {g.name for g in graph.groups()[0]}


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn-scale", "red", "ig"])
def test_prune_reaches_the_target_and_runs(criterion: str) -> None:
    model = coupled()
    result = prune_module(model, SPECS, {}, fast_options(criterion=criterion))
    section = result.section
    assert section.removed() >= 0.3
    assert result.module(random_batch()).shape == model(random_batch()).shape
    assert section.after.params < section.before.params
    assert any(g.channels_after < g.channels_before for g in section.groups)
    assert all(g.channels_after % 2 == 0 and g.channels_after >= 2 for g in section.groups)
    # The reference is untouched.
    assert all(m.out_channels == 16 for m in (model.conv1, model.stem))


def test_prune_round_and_min_width_hold() -> None:
    result = prune_module(coupled(32), SPECS, {}, fast_options(ratio=0.4, round_to=8, min_width=8))
    for group in result.section.groups:
        assert group.channels_after == group.channels_before or group.channels_after % 8 == 0
        assert group.channels_after >= 8


def _with_twins(model: nn.Module) -> nn.Module:
    """conv1's channel 5 a copy of channel 3 (weights and BatchNorm): identical values."""
    with torch.no_grad():
        model.conv1.weight[5] = model.conv1.weight[3]
        for t in (model.bn1.weight, model.bn1.bias, model.bn1.running_mean, model.bn1.running_var):
            t[5] = t[3]
    return model


def test_red_merges_identical_channels_exactly() -> None:
    model = _with_twins(coupled())
    pruned = copy.deepcopy(model)
    graph = Graph(pruned, [random_batch(1)])
    group = next(g for g in graph.groups()[0] if g.name == "conv1")
    first = removal_plan(graph, group, "red")[0]
    assert {first.position, first.into} == {3, 5}
    from edgeport.quant.prune.channels import merge_into

    merge_into(graph, group, first.position, first.into)
    graph.group_of(group, [first.position]).prune()
    assert pruned.conv1.out_channels == 15
    x = random_batch(8)
    torch.testing.assert_close(pruned(x), model(x), rtol=1e-5, atol=1e-5)
    # Cut instead of merged, the same channel changes the outputs: the merge is what makes it exact.
    cut = copy.deepcopy(model)
    graph = Graph(cut, [random_batch(1)])
    group = next(g for g in graph.groups()[0] if g.name == "conv1")
    graph.group_of(group, [first.position]).prune()
    assert (cut(x) - model(x)).abs().max() > 1e-3


def test_recovery_lowers_the_distillation_loss() -> None:
    model = coupled()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.5))
    student = result.module
    pool, held = random_batch(32, seed=2), random_batch(16, seed=3)
    before = distillation_loss(student, model, [held])
    log = distill(student, model, [pool], steps=60, seed=0)
    after = distillation_loss(student, model, [held])
    assert log.steps == 60
    assert after < 0.7 * before


def test_recovery_through_the_options_is_recorded() -> None:
    options = fast_options(ratio=0.4, recovery="distill", max_steps=15, synthetic_steps=None)  # the default
    result = prune_module(coupled(), SPECS, {}, options)
    rec = result.section.recovery
    assert rec.method == "distill" and rec.data_free and rec.steps == 15
    assert rec.loss_start is not None and rec.loss_end is not None
    # The pool recovery trained on: its size, how it was made and in how many steps each.
    assert rec.inputs == (
        f"16 inputs by BatchNorm-statistics distillation ({SYNTHETIC_STEPS} steps each) from the "
        "unpruned model, seed 0"
    )
    fid = result.section.fidelity
    assert fid.samples == 8 and fid.top1_agreement is not None


def test_allocation_spares_the_sensitive_group() -> None:
    # Two groups that cost the same; group 1's error grows 100x faster: group 0 goes first.
    model = CostModel([CostTerm(100, 0), CostTerm(100, 1)])
    options = [kept_widths(8, 2, 2), kept_widths(8, 2, 2)]
    sens = [Sensitivity([0, 6], [0.0, 0.06]), Sensitivity([0, 6], [0.0, 6.0])]
    result = allocate(model, [8, 8], options, sens, 0.3)
    assert result.kept == [2, 8]  # 150 of 200 at width 4 is not yet 30 % off
    assert result.cost_after <= 0.7 * result.cost_before


def test_the_last_step_is_the_finishing_step_with_the_least_error() -> None:
    """Group 0 is cheapest per MAC saved, but its one step (16 -> 8) removes 42 % where 8 % is asked;
    group 1's step reaches the goal too, with half the error: the allocation ends with it."""
    model = CostModel([CostTerm(100, 0), CostTerm(20, 1)])
    options = [[16, 8], [8, 4]]
    sens = [Sensitivity([0, 8], [0.0, 1.0]), Sensitivity([0, 4], [0.0, 0.5])]
    result = allocate(model, [16, 8], options, sens, 10 / 120)
    assert result.kept == [16, 4]
    assert result.cost_after == pytest.approx(110) and result.predicted_error == pytest.approx(0.5)
    # Before the goal is in reach the order is by error per MAC: asked 50 %, group 0 goes first.
    assert allocate(model, [16, 8], options, sens, 0.5).steps[0] == (0, 8)


def test_kept_widths() -> None:
    assert kept_widths(20, 8, 8) == [20, 16, 8]
    assert kept_widths(16, 8, 8) == [16, 8]
    assert kept_widths(6, 8, 8) == [6]
    assert kept_widths(5, 1, 3) == [5, 4, 3]


def test_cost_model_depthwise_scales_once() -> None:
    model = CostModel([CostTerm(10, 0, [(0, 1.0)], depthwise=True), CostTerm(10, 0, [(0, 1.0)])])
    assert model.total([0.5]) == pytest.approx(5 + 2.5)


class _MeasuredWidths:
    """A fake measured cost: each group's time at each of its kept widths (of 32), no timing."""

    def __init__(self, times: Sequence[dict[int, float]], noise: float = 0.0) -> None:
        self.times, self.noise, self.measured = times, noise, 0

    def measure(self, kepts: Sequence[Sequence[float]]) -> None:
        self.measured += 1

    def total(self, kept: Sequence[float]) -> float:
        return sum(t[round(32 * k)] for t, k in zip(self.times, kept, strict=True))


# The x86 host's 3x3 convolution on 16x16x32 (µs by output channels): 28-20 are slower than 32.
_NOT_MONOTONE = {32: 48.0, 28: 64.0, 24: 66.0, 20: 66.0, 16: 33.0}
_LINEAR = {w: 2.0 * w for w in (32, 28, 24, 20, 16)}


def _two_groups() -> tuple[CostModel, list[int], list[list[int]], list[Sensitivity]]:
    """Two groups of 32, the same MACs; group 0 loses less per channel than group 1."""
    macs = CostModel([CostTerm(100, 0), CostTerm(100, 1)])
    options = [[32, 28, 24, 20, 16], [32, 28, 24, 20, 16]]
    sens = [Sensitivity([0, 16], [0.0, 0.16]), Sensitivity([0, 16], [0.0, 0.48])]
    return macs, [32, 32], options, sens


def test_a_measured_score_jumps_past_widths_that_are_slower() -> None:
    """Group 0's times are not monotone: 28, 24 and 20 channels are slower than 32, 16 faster. Weighed
    by them, its first step jumps 32 -> 16 (0.16 error for 15 µs beats group 1's 0.03 per 2 µs); the
    one-step greedy in MACs walks 32 -> 28 first, through the slower widths."""
    macs, widths, options, sens = _two_groups()
    assert allocate(macs, widths, options, sens, 0.375).steps[0] == (0, 28)
    score = _MeasuredWidths([_NOT_MONOTONE, _LINEAR])
    taken = allocate(macs, widths, options, sens, 0.375, score=score)
    assert taken.steps[0] == (0, 16)
    assert taken.kept[0] == 16 and taken.cost_after <= 125
    assert score.measured == len(taken.steps)  # each step's candidates measured together, once


def test_a_gain_under_the_noise_floor_is_no_gain() -> None:
    """With a noise floor above every gain, no step gains time: they rank by error per MAC saved, as
    the MACs greedy does (group 0 first), whatever the noisy differences say."""
    macs, widths, options, sens = _two_groups()
    noisy = {w: 40.0 + 0.1 * (w % 3) for w in (32, 28, 24, 20, 16)}
    taken = allocate(macs, widths, options, sens, 0.375, score=_MeasuredWidths([noisy, noisy], noise=1.0))
    assert taken.steps[0][0] == 0 and taken.kept[1] > 16


# ---- bad input: one line ----------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0.0, 1.0, -0.2, 1.5])
def test_ratio_outside_the_open_interval(ratio: float) -> None:
    with pytest.raises(EdgeportError, match=r"--prune .* is outside \(0, 1\)"):
        prune_options({"ratio": ratio})


def test_companion_without_ratio_is_refused() -> None:
    with pytest.raises(EdgeportError, match="--prune-criterion was given without --prune"):
        prune_options({"criterion": "red"})


def test_unknown_exclude_lists_close_names() -> None:
    with pytest.raises(EdgeportError, match="(?i)'conv_1' names no module.*close names: conv1") as err:
        prune_module(coupled(), SPECS, {}, fast_options(exclude=["conv_1"]))
    assert "\n" not in str(err.value)


def test_excluded_module_is_kept_whole() -> None:
    result = prune_module(coupled(), SPECS, {}, fast_options(ratio=0.2, exclude=["conv1"]))
    row = next(g for g in result.section.groups if g.module == "mix")
    assert row is not None
    assert all(g.module != "conv1" for g in result.section.groups)


def test_unreachable_target_names_the_reachable_one() -> None:
    with pytest.raises(
        EdgeportError, match=r"(?i)cannot be reached: at most 0\.\d\d.*use --prune 0\.\d\d or less"
    ):
        prune_module(coupled(), SPECS, {}, fast_options(ratio=0.95, round_to=8, min_width=8))


class _FixedWidth(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 16, 64).mean(-1)  # assumes 16 channels of 8x8


class _Brittle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.head = _FixedWidth()
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.head(torch.relu(self.conv(x))))


def test_a_model_the_analysis_cannot_follow_names_the_module() -> None:
    torch.manual_seed(0)
    with pytest.raises(EdgeportError, match=r"cannot follow this model: conv: .*head \(_FixedWidth\)") as err:
        prune_module(_Brittle().eval(), SPECS, {}, fast_options(ratio=0.2))
    assert "--prune-exclude" in str(err.value)


class _UntraceablePadShortcut(PadShortcut):
    """A branch torch.fx cannot trace (always taken when run) in the forward that pads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            return super().forward(x)
        return x


def test_a_coupling_torch_pruning_misses_is_kept_whole() -> None:
    """The zero-padded shortcut couples conv_a's channels to conv_b's: torch-pruning does not see it
    (and fx, which would make the pad a selection layer, cannot trace this model), the check (cut on a
    copy == zeroed) does, and that group stays whole while the rest prunes."""
    torch.manual_seed(0)
    model = _randomize_bns(_UntraceablePadShortcut())
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.2))
    assert any("does not follow" in note for note in result.section.kept_whole), result.section.kept_whole
    assert result.module(random_batch()).shape == model(random_batch()).shape
    assert result.section.removed() >= 0.2


def test_integrated_gradients_give_a_silent_channel_nothing_and_add_up() -> None:
    """A channel whose consumers ignore it costs nothing to fade: exactly zero. The attributions
    add up to the error of fading the whole group (integrated gradients' completeness), to the
    midpoint rule's accuracy."""
    from edgeport.quant.prune.channels import consumer_columns, zero_inputs
    from edgeport.quant.prune.criteria import integrated_gradients

    model = coupled()
    with torch.no_grad():
        model.conv2.weight[:, 6] = 0.0  # conv1's channel 6 reaches nothing
    graph = Graph(model, [random_batch(1)])
    group = next(g for g in graph.groups()[0] if g.name == "conv1")
    x = random_batch(8)
    scores = integrated_gradients(graph, group, [x])
    assert float(scores[6]) == 0.0 and float(scores.abs().max()) > 1e-3
    reference = model(x)
    undo = zero_inputs(consumer_columns(graph, group, list(range(group.channels))))
    faded = model(x)
    undo()
    whole = float(((faded - reference) ** 2).sum() / (reference**2).sum())
    assert float(scores.sum()) == pytest.approx(whole, rel=0.1)


def test_uniform_allocation_keeps_one_fraction_everywhere() -> None:
    from edgeport.quant.prune.allocate import allocate_uniform

    model = CostModel([CostTerm(100, 0), CostTerm(300, 1)])
    result = allocate_uniform(model, [8, 16], [kept_widths(8, 2, 2), kept_widths(16, 2, 2)], 0.3)
    assert result.kept == [6, 10]  # 62.5 % kept everywhere: 0.75 * 100 + 0.625 * 300 <= 280
    assert result.cost_after <= 0.7 * result.cost_before


def test_a_model_without_batchnorm_prunes_on_input_statistics_and_says_so() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 4),
    ).eval()
    result = prune_module(model, SPECS, {}, fast_options(ratio=0.2))
    assert result.section.removed() >= 0.2
    assert len(result.notes) == 1 and "no BatchNorm" in result.notes[0] and "calibrat" not in result.notes[0]


def test_cost_model_counts_a_concat_consumer_by_share() -> None:
    # A consumer whose input is a concat: a quarter of its channels from group 0, the rest unpruned.
    model = CostModel([CostTerm(100, None, [(0, 0.25)])])
    assert model.total([0.5]) == pytest.approx(100 * (1 - 0.25 * 0.5))


def test_unet_prunes_through_concat_skips_and_a_transposed_convolution() -> None:
    """U-Net: encoder channels reach the decoder through a concat (the consumer's cost counts only
    their share) and a ConvTranspose2d consumes the bottleneck (its input channels are its weight's
    first axis): every group is followed, and the target is met as measured."""
    from tests.zoo import by_name

    zoo = by_name("unet")
    specs = [TensorSpec("x", zoo.input_shapes[0])]
    result = prune_module(zoo.build(), specs, {}, fast_options(ratio=0.3, round_to=4, min_width=4))
    assert result.section.kept_whole == []
    assert result.section.removed() >= 0.3
