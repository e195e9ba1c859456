"""Prune a PyTorch module without data: groups (graph.py), a removal order per group (criteria.py),
widths chosen globally (allocate.py), the cut made by torch-pruning, checked by running the model,
then data-free recovery (recover.py) and fidelity against the unpruned model.

The analysis (groups, their check, removal orders, sensitivities) is made once; an allocation and
its cut, on a copy, can then be repeated at several ratios (the latency target searches the FLOPs
ratio with real measurements: latency.py)."""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from edgeport.errors import EdgeportError, exception_line
from edgeport.options import flag_spell
from edgeport.quant.calibration import CLIP_SIGMAS, CalibrationSet, ImagePrior, make_calibration
from edgeport.quant.input_stats import InputStats
from edgeport.quant.prune import allocate as alloc
from edgeport.quant.prune import latency as lat
from edgeport.quant.prune.blocks import (
    Block,
    GraphBlocks,
    block_removed,
    entries_holding,
    find_blocks,
    without_blocks,
)
from edgeport.quant.prune.channel_pads import is_selection, pads_as_selections, selections_as_gathers
from edgeport.quant.prune.channels import consumer_columns, merge_into, zero_inputs
from edgeport.quant.prune.count import count_params, in_width, module_macs, onnx_counts
from edgeport.quant.prune.criteria import Removal, removal_plan
from edgeport.quant.prune.export import Exporter
from edgeport.quant.prune.graph import ChannelGroup, Graph, flat_outputs, resolve_excluded
from edgeport.quant.prune.heads import (
    HeadGroup,
    cut_heads,
    cut_plan,
    head_groups,
    head_plan,
    outside_heads,
    zero_heads,
    zero_plan,
)
from edgeport.quant.prune.kept import stream_maps
from edgeport.quant.prune.layer_latency import LayerTable
from edgeport.quant.prune.options import SYNTHETIC_STEPS, PruneOptions
from edgeport.quant.prune.reconstruct import ReconstructionLog, reconstruct
from edgeport.quant.prune.recover import (
    STAGES,
    PoolPlan,
    RecoveryLog,
    distill,
    distillation_loss,
    fidelity,
    finetune_inputs,
    kept_stage,
    pool_plan,
    recovery_inputs,
    step_seconds,
    steps_for_budget,
)
from edgeport.quant.prune.section import (
    Counts,
    GroupWidth,
    LatencySearch,
    LatencyTrial,
    PruneFidelity,
    PruningSection,
    Recovery,
)
from edgeport.tensors import Sample, TensorSpec, random_inputs

SENSITIVITY_BATCH = 16
SYNTHETIC_CHUNK = 128  # synthetic inputs optimised together
DISTILLED = "BatchNorm-statistics distillation"  # how a distilled pool was made (Analysis.how)
# Recovery learns the unpruned model on the synthetic inputs, so they should look like images (an
# int8 calibration only needs their ranges and keeps calibration's default, no prior).
IMAGE_PRIOR = ImagePrior()
SENSITIVITY_POINTS = 4  # widths measured per group (errors between them interpolated)
# A cut that torch-pruning maps right gives the zeroed model's outputs up to float summation order.
CUT_TOLERANCE = 1e-4
# Inputs the cut check runs on: a coupling the cut gets wrong shows only where the channels involved
# are active (after a ReLU a channel can be zero on a few inputs; on 2 smooth synthetic images a
# padded shortcut's miscut channel was).
CHECK_SAMPLES = 8
# How the section describes the sensitivity allocation, by what its steps were weighed in (--prune-weigh).
ALLOCATION = {
    "macs": "greedy over groups: each step removes one --prune-round of channels from the group (or a "
    "residual block) whose measured output error (channels removed in criterion order on synthetic "
    "inputs) grows least per MAC saved",
    "host": "greedy over groups: each step narrows the group to any allowed width (or removes a residual "
    "block) whose measured output error (channels removed in criterion order on synthetic inputs) grows "
    "least per microsecond saved of this host's one-thread LiteRT layer times",
}

UNIFORM = "uniform: every group keeps the same fraction of its channels (rounded up to an allowed width)"

Say = Callable[[str], None]


@dataclass
class PruneResult:
    module: nn.Module
    section: PruningSection
    notes: list[str] = field(default_factory=list)
    # {module: the unpruned model's indices of the output channels it keeps}, for each module the cut
    # narrowed (Conv/Linear/BatchNorm) and each whose output is a narrowed tensor (a block's output);
    # attention heads not included: what recovery maps targets by.
    kept: dict[str, list[int]] = field(default_factory=dict)


def _stack(samples: Sequence[Sample], specs: Sequence[TensorSpec]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.concatenate([s[spec.name] for s in samples])) for spec in specs]


def synthetic_inputs(
    module: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    count: int,
    held: int,
    seed: int,
    say: Say | None = None,
    steps: int = SYNTHETIC_STEPS,
    first_chunk: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor], str, list[str]]:
    """quant/calibration.py's data-free inputs (BatchNorm-statistics distillation, `steps` per input,
    when the model has BatchNorms, else the input statistics): (pool, held-out, how made, notes). `say`
    hears each chunk start (the distillation is most of the analysis' time). `first_chunk`: only the
    first of the pool's chunks (what the analysis reads); more_synthetic makes the others, the same."""
    say = say or (lambda _text: None)
    say(synthetic_step("analysis", 1, count))
    cal = _chunk(module, specs, stats, min(count, SYNTHETIC_CHUNK), held, seed, steps)
    how = {
        "distill": DISTILLED,
        "input-stats": "input statistics",
        "gaussian": "N(0, 1) noise",
    }.get(cal.method, cal.method)
    # calibration's notes speak of calibration; pruning says what it measured on in its own words.
    notes = (
        []
        if cal.method == "distill"
        else [
            f"no BatchNorm to make synthetic inputs from: pruning measured and recovered on {how} "
            "(--input-range or --mean/--std describe the real inputs)"
        ]
    )
    pool = _stack(cal.samples, specs)
    if not first_chunk:
        pool = more_synthetic(module, specs, stats, pool, count, seed, steps, say, "analysis")
    return pool, _stack(cal.held_out, specs), how, notes


def more_synthetic(
    module: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    pool: list[torch.Tensor],
    count: int,
    seed: int,
    steps: int,
    say: Say,
    phase: str,
) -> list[torch.Tensor]:
    """`pool` (whole chunks of synthetic_inputs' pool) grown to `count` inputs by the chunks after it.
    A chunk at a time, each seeded by its index: one optimisation over the whole pool would hold every
    sample's activations at once, and a chunk is the same whenever it is made."""
    have = int(pool[0].shape[0])
    if have >= count:
        return pool
    samples: list[Sample] = []
    for start in range(have, count, SYNTHETIC_CHUNK):
        index = start // SYNTHETIC_CHUNK
        say(synthetic_step(phase, index + 1, count))
        n = min(SYNTHETIC_CHUNK, count - start)
        samples += _chunk(module, specs, stats, n, 0, seed + index, steps).samples
    return [torch.cat([x, y]) for x, y in zip(pool, _stack(samples, specs), strict=True)]


def _chunk(
    module: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    count: int,
    held_out: int,
    seed: int,
    steps: int,
) -> CalibrationSet:
    return make_calibration(
        "auto",
        specs,
        stats,
        module=module,
        count=count,
        held_out=held_out,
        seed=seed,
        distill_steps=steps,
        clip_sigmas=CLIP_SIGMAS,
        prior=IMAGE_PRIOR,
    )


def synthetic_step(phase: str, chunk: int, count: int) -> str:
    chunks = len(range(0, count, SYNTHETIC_CHUNK))
    chunked = f"{chunks} chunks" if chunks > 1 else "one chunk"
    return f"{phase}: synthetic inputs, {count} in {chunked} ({chunk}/{chunks})"


def cost_model(
    module: nn.Module,
    groups: Sequence[ChannelGroup],
    inputs: Sequence[torch.Tensor],
    target: str,
    blocks: Sequence[Block] = (),
) -> alloc.CostModel:
    """MACs (or parameters) of `module` as a function of the groups' kept fractions, then the
    residual `blocks`' (1 kept, 0 removed; entries after the groups')."""
    out_of = {n: i for i, g in enumerate(groups) for n in g.out_modules}
    modules = dict(module.named_modules())
    holding = functools.partial(entries_holding, blocks=blocks, first=len(groups))

    def in_groups(name: str) -> list[tuple[int, float]]:
        width = in_width(modules[name])
        return [(i, g.in_counts[name] / width) for i, g in enumerate(groups) if width and name in g.in_counts]

    def depthwise(m: nn.Module) -> bool:
        return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels

    terms: list[alloc.CostTerm] = []
    if target == "flops":
        for name, macs in module_macs(module, inputs).items():
            m = modules[name]
            if is_selection(m):
                continue  # a channel pad: a memory op once cut (no MACs before or after)
            terms.append(
                alloc.CostTerm(macs, out_of.get(name), in_groups(name), depthwise(m), holding(name), name)
            )
        return alloc.CostModel(terms)
    counted = 0
    for name, m in modules.items():
        own = list(m.parameters(recurse=False))
        if not name or not own or is_selection(m):
            continue
        weight = getattr(m, "weight", None)
        for p in own:
            counted += p.numel()
            both = p is weight and isinstance(m, nn.Linear | nn.modules.conv._ConvNd)
            terms.append(
                alloc.CostTerm(
                    p.numel(),
                    out_of.get(name),
                    in_groups(name) if both else [],
                    depthwise(m),
                    blocks=holding(name),
                    module=name,
                )
            )
    return alloc.CostModel(terms, fixed=count_params(module) - counted)


def _apply(graph: Graph, group: ChannelGroup | HeadGroup, plan: Sequence[Removal], count: int) -> None:
    """Merge then zero the first `count` removals of `plan` (weights only: shapes unchanged)."""
    if isinstance(group, HeadGroup):
        zero_plan(graph.module, group, plan, count)
        return
    for r in plan[:count]:
        if r.into is not None:
            merge_into(graph, group, r.position, r.into)
    gone = group.channel_indices([r.position for r in plan[:count]])
    zero_inputs(consumer_columns(graph, group, gone))


def _error(outputs: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> float:
    return float(
        sum(
            ((o - r) ** 2).sum() / (r**2).sum().clamp_min(1e-12)
            for o, r in zip(outputs, reference, strict=True)
        )
    )


def _run(module: nn.Module, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return flat_outputs(module(*inputs))


def sensitivities(
    graph: Graph,
    groups: Sequence[ChannelGroup],
    plans: Sequence[Sequence[Removal]],
    options: Sequence[Sequence[int]],
    inputs: Sequence[torch.Tensor],
    say: Say | None = None,
) -> list[alloc.Sensitivity]:
    say = say or (lambda _text: None)
    module = graph.module
    reference = _run(module, inputs)
    found = []
    measures = [measured_removals(g.width, opts) for g, opts in zip(groups, options, strict=True)]
    total = sum(len(r) - 1 for r in measures)
    done = 0
    for i, (group, plan, removed) in enumerate(zip(groups, plans, measures, strict=True)):
        say(
            f"analysis: sensitivities, group {i + 1}/{len(groups)} ({done}/{total} widths measured on "
            f"{int(inputs[0].shape[0])} synthetic inputs)"
        )
        done += len(removed) - 1
        errors = [0.0]
        weights = {
            n: m.weight for n, m in module.named_modules() if n in group.in_modules and hasattr(m, "weight")
        }
        saved = {n: w.detach().clone() for n, w in weights.items()}
        for k in removed[1:]:
            _apply(graph, group, plan, k)
            errors.append(_error(_run(module, inputs), reference))
            with torch.no_grad():
                for n, w in weights.items():
                    w.copy_(saved[n])
        found.append(alloc.Sensitivity(removed, errors))
    return found


def block_sensitivities(
    module: nn.Module, blocks: Sequence[Block], inputs: Sequence[torch.Tensor]
) -> tuple[list[Block], list[alloc.Sensitivity]]:
    """The blocks the model runs without (each replaced by identity in turn, then put back), and the
    relative output error each one's removal makes."""
    reference = _run(module, inputs)
    kept, found = [], []
    for block in blocks:
        with block_removed(module, block):
            problem, outputs = _culprit(module, inputs)
        if problem is None and [o.shape for o in outputs] == [r.shape for r in reference]:
            kept.append(block)
            found.append(alloc.Sensitivity([0, 1], [0.0, _error(outputs, reference)]))
    return kept, found


def measured_removals(width: int, allowed: Sequence[int]) -> list[int]:
    """The channel counts a group's error is measured at: 0, then at most SENSITIVITY_POINTS of the
    allowed removals spread from the smallest to the largest (the allocation interpolates between)."""
    removed = sorted({width - w for w in allowed})
    if len(removed) > SENSITIVITY_POINTS + 1:
        pick = np.linspace(1, len(removed) - 1, SENSITIVITY_POINTS).round().astype(int)
        removed = [0] + sorted({removed[i] for i in pick})
    return removed


def _simulated(
    graph: Graph, groups: Sequence[ChannelGroup], inputs: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The outputs with each group's first channel zeroed out of its consumers (weights restored)."""
    saved = {k: v.clone() for k, v in graph.module.state_dict().items()}
    try:
        for group in groups:
            zero_inputs(consumer_columns(graph, group, group.channel_indices([0])))
        return _run(graph.module, inputs)
    finally:
        graph.module.load_state_dict(saved)


@dataclass(frozen=True)
class CutProblem:
    """What went wrong when a group's channel was cut on a copy."""

    text: str
    # The cut model runs with the right shapes but its outputs moved: the cut changed more than the cut
    # channels (e.g. a LayerNorm over them), not a coupling the dependency analysis missed.
    changes_kept: bool = False


def _cut_problem(
    graph: Graph, groups: Sequence[ChannelGroup], inputs: Sequence[torch.Tensor]
) -> CutProblem | None:
    """None when cutting each group's first channel (on a copy) gives what zeroing it gives: the
    dependency analysis then follows every coupling of these groups; else what went wrong."""
    expected = _simulated(graph, groups, inputs)
    copy_ = copy.deepcopy(graph.module)
    other = Graph(copy_, [x[:1] for x in inputs])
    for group in groups:
        twin = group.on(copy_)
        other.group_of(twin, twin.channel_indices([0])).prune()
    problem, got = _culprit(copy_, inputs)
    if problem is not None:
        return CutProblem(problem)
    for g, e in zip(got, expected, strict=True):
        if g.shape != e.shape:
            return CutProblem(f"an output became {tuple(g.shape)}, not {tuple(e.shape)}")
        error = float((g - e).abs().max() / e.abs().max().clamp_min(1e-12))
        if error > CUT_TOLERANCE:
            text = f"cutting changes more than the cut channels (max rel. error {error:.1e})"
            return CutProblem(text, changes_kept=True)
    return None


def checked_groups(
    graph: Graph, groups: Sequence[ChannelGroup], inputs: Sequence[torch.Tensor]
) -> tuple[list[ChannelGroup], list[str]]:
    """The groups torch-pruning cuts exactly as removing their channels would (all at once first; one by
    one when that fails), and a note for each one kept whole (its module and what failed)."""
    if _cut_problem(graph, groups, inputs) is None:
        return list(groups), []
    good, notes = [], []
    for group in groups:
        problem = _cut_problem(graph, [group], inputs)
        if problem is None:
            good.append(group)
        elif problem.changes_kept and (norm := _layer_norm_of(graph.module, group)):
            notes.append(
                f"{group.name}: kept whole, {norm} normalizes over its channels (a cut changes the rest)"
            )
        else:
            notes.append(
                f"{group.name}: kept whole, the dependency analysis does not follow it ({problem.text})"
            )
    return good, notes


def _layer_norm_of(module: nn.Module, group: ChannelGroup) -> str | None:
    """'name (type)' of the first LayerNorm (or subclass: ConvNeXt's LayerNorm2d) whose channels the group
    narrows: a transformer's residual stream or a ConvNeXt stage's, where a cut never equals a zeroing."""
    for name in group.out_modules:
        if isinstance(norm := module.get_submodule(name), nn.LayerNorm):
            return f"{name} ({type(norm).__name__})"
    return None


def checked_heads(
    module: nn.Module, groups: Sequence[HeadGroup], inputs: Sequence[torch.Tensor]
) -> tuple[list[HeadGroup], list[str]]:
    """The head groups whose first head, cut on a copy, gives what zeroing it gives (not so when the
    attention's weights are a model output: they average over the heads kept, or list them; nor when
    an op of a hand-written attention mixes its heads)."""
    good, notes = [], []
    for group in groups:
        zeroed, cut_ = copy.deepcopy(module), copy.deepcopy(module)
        zero_heads(zeroed, group, [0])
        expected = _run(zeroed, inputs)
        problem, got = _culprit(cut_heads(cut_, group, [0]), inputs)
        if problem is not None:
            notes.append(
                f"{group.name or 'the model'}: heads kept whole, it does not run without one ({problem})"
            )
            continue
        same = all(
            g.shape == e.shape
            and float((g - e).abs().max() / e.abs().max().clamp_min(1e-12)) <= CUT_TOLERANCE
            for g, e in zip(got, expected, strict=True)
        )
        if same:
            good.append(group)
        else:
            why = (
                "its attention weights are a model output" if group.trace is None else "an op mixes its heads"
            )
            notes.append(f"{group.name or 'the model'}: heads kept whole, {why}")
    return good, notes


def _culprit(module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[str | None, list[torch.Tensor]]:
    """(None, the outputs) when `module` runs, else (one line naming the module that failed and why, [])."""
    names = {m: n for n, m in module.named_modules() if n}
    running: list[nn.Module] = []

    def enter(m: nn.Module, _args: tuple) -> None:
        running.append(m)

    def leave(_m: nn.Module, _args: tuple, _out: object) -> None:
        running.pop()

    handles = [m.register_forward_pre_hook(enter) for m in names]
    handles += [m.register_forward_hook(leave) for m in names]
    try:
        with torch.no_grad():
            return None, flat_outputs(module(*inputs))
    except Exception as exc:  # noqa: BLE001 - the failure is the answer
        where = running[-1] if running else None
        named = f"{names[where]} ({type(where).__name__})" if where is not None else "the model's forward()"
        return f"{named}: {exception_line(exc)}", []
    finally:
        for h in handles:
            h.remove()


@dataclass
class Analysis:
    """What pruning learns about a model once, whatever the ratio: its checked groups (on `module`,
    an unpruned copy), their removal orders and allowed widths, their sensitivities, and the
    synthetic inputs."""

    reference: nn.Module
    module: nn.Module
    graph: Graph
    groups: list[ChannelGroup]
    kept_whole: list[str]
    unfollowed: list[str]
    plans: list[list[Removal]]
    widths_allowed: list[list[int]]
    sensitivity: list[alloc.Sensitivity] | None
    pool: list[torch.Tensor]
    held: list[torch.Tensor]
    how: str
    notes: list[str]
    before: Counts  # the unpruned model's MACs and parameters, on the module and on its export
    plan: PoolPlan  # the synthetic pool the recovery budget pays for (made or given)
    # The synthetic inputs recovery trains on: `pool` holds only their first chunk (what the analysis
    # reads) until recovery grows it (more_synthetic).
    pool_count: int
    # The user's real inputs (--finetune-data), one tensor per input, or None: data-free.
    user: list[torch.Tensor] | None = None
    # Residual blocks that may be removed whole (blocks.py), and the error each one's removal makes.
    blocks: list[Block] = field(default_factory=list)
    block_sensitivity: list[alloc.Sensitivity] = field(default_factory=list)

    @property
    def example(self) -> list[torch.Tensor]:
        return [x[:1] for x in self.pool]

    @property
    def user_samples(self) -> int | None:
        """How many inputs --finetune-data gave (None: data-free)."""
        return None if self.user is None else int(self.user[0].shape[0])

    @property
    def widths(self) -> list[int]:
        """Each group's width, then 1 for each block: what an allocation's `kept` lists."""
        return [g.width for g in self.groups] + [1] * len(self.blocks)

    @property
    def allowed(self) -> list[list[int]]:
        return self.widths_allowed + [[1, 0] for _ in self.blocks]

    def removed_blocks(self, allocation: alloc.Allocation) -> list[Block]:
        return [b for b, k in zip(self.blocks, allocation.kept[len(self.groups) :], strict=True) if not k]

    def cost(self, target: str) -> alloc.CostModel:
        """The cost the allocation counts: MACs for a flops or latency target, else parameters. The
        exported graph's products no module makes (q @ k) count too, so RATIO is of the MACs that
        convert: a traced attention's scale with its heads, the others are fixed (a product whose
        operands narrow then only makes the cut larger than asked)."""
        if target == "params":
            return cost_model(self.module, self.groups, self.example, "params", self.blocks)
        model = cost_model(self.module, self.groups, self.example, "flops", self.blocks)
        if self.before.onnx_macs is not None:
            heads = [
                (i, g.products) for i, g in enumerate(self.groups) if isinstance(g, HeadGroup) and g.products
            ]
            holding = functools.partial(entries_holding, blocks=self.blocks, first=len(self.groups))
            model.terms += [alloc.CostTerm(macs, i, blocks=holding(self.groups[i].name)) for i, macs in heads]
            model.fixed += max(0, self.before.onnx_macs - self.before.macs - sum(m for _, m in heads))
        return model

    def reachable(self, target: str) -> float:
        if not self.groups and not self.blocks:
            return 0.0
        return alloc.reachable_fraction(self.cost(target), self.widths, self.allowed)


def synthetic_count(options: PruneOptions, plan: PoolPlan, user_samples: int | None = None) -> int:
    """How many synthetic inputs to make: the whole pool (`plan`, recover.pool_plan) only when recovery
    trains on it (user_samples: how many inputs --finetune-data gave, see synthetic_beside_user); else
    one chunk, the same first chunk (same seed and steps) the analysis reads out of the whole pool."""
    first = max(SYNTHETIC_CHUNK, SENSITIVITY_BATCH)
    if options.recovery == "distill" and synthetic_beside_user(plan, user_samples):
        return plan.count
    return min(options.samples or first, first)


def synthetic_beside_user(plan: PoolPlan, user_samples: int | None) -> bool:
    """Whether recovery trains on the synthetic pool `plan` buys: always without the user's data; with
    it, beside it when the user gave fewer inputs than the pool holds. A few hundred real inputs alone
    recover worse than the synthetic pool (README, "Where pruning stands"); a data set larger than the
    pool gets the whole budget for its steps."""
    return user_samples is None or user_samples < plan.count


def pool_of(reference: nn.Module, specs: Sequence[TensorSpec], options: PruneOptions) -> PoolPlan:
    """The synthetic pool `options` pay for (recover.pool_plan)."""
    return pool_plan(
        reference, specs, options.budget, options.held_out, options.samples, options.synthetic_steps
    )


def excluded_modules(
    module: nn.Module, names: Sequence[str], inputs: Sequence[torch.Tensor], flag: str
) -> list[nn.Module]:
    """The modules --prune-exclude `names` keeps whole (resolve_excluded): each name a module's, or a
    residual block's as the manifest lists it. A PyTorch source's blocks are modules; an ONNX source's
    (GraphBlocks) are named after their Add node, so they are found (on `inputs`) for a name that is
    no module's."""
    modules = dict(module.named_modules())
    named = isinstance(module, GraphBlocks) and any(n not in modules for n in names)
    return resolve_excluded(module, names, flag, find_blocks(module, inputs) if named else ())


def analyze(
    reference: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    options: PruneOptions,
    say: Say,
    flag: Callable[[str], str],
    synthetic: tuple[list[torch.Tensor], list[torch.Tensor], str, list[str]] | None = None,
    exporter: Exporter | None = None,
    user: list[torch.Tensor] | None = None,
) -> Analysis:
    """What pruning learns about `reference` (Analysis); `user`: the --finetune-data inputs, which
    decide how much of the synthetic pool is made (synthetic_count)."""
    module = copy.deepcopy(reference).eval()
    one, two = (_stack(random_inputs(specs, n, options.seed), specs) for n in (1, 2))
    # Channel pads (option-A shortcuts) become selection layers, so each stage's stream is its own
    # group. Made before the exclusions are resolved: the section lists a selection among its group's
    # modules, a name --prune-exclude then takes (and an excluded module a trace replaced is the trace).
    module, _selections, kept_whole = pads_as_selections(module, one)
    excluded = excluded_modules(module, options.exclude, one, flag("exclude"))
    # Checks and rankings run the model on batches: a forward that runs only at batch 1 (a mask buffer
    # made for one input) is refused here in one line, not from inside a check.
    problem = _culprit(module, two)[0]
    if problem is not None and _culprit(module, one)[0] is None:
        raise EdgeportError(
            f"pruning runs the model on batches (inputs stacked on axis 0), but at batch 2 {problem}",
            "make its forward take any batch size (e.g. expand a batch-1 mask to the input's batch), "
            "or convert without --prune",
        )
    # `synthetic`: synthetic_inputs' result, made once by a caller that prunes the model several ways.
    # Else only the pool's first chunk is made here: a ratio the model cannot reach, or a latency
    # search that fails, is refused before recovery's inputs, most of a distilled pool's time, are made.
    plan = pool_of(reference, specs, options)
    count = synthetic_count(options, plan, None if user is None else int(user[0].shape[0]))
    pool, held, how, notes = synthetic or synthetic_inputs(
        reference, specs, stats, count, options.held_out, options.seed, say, plan.steps, first_chunk=True
    )
    count = int(pool[0].shape[0]) if synthetic else count
    say("analysis: finding the coupled channel groups")
    example = [x[:1] for x in pool]
    graph = Graph(module, example)
    groups, whole = graph.groups(excluded)
    kept_whole += whole
    # Attention heads (heads.py): whole heads, at least one kept, rounding does not apply; a traced
    # attention's q/k/v channels go only as its heads.
    heads, head_notes = head_groups(module, excluded, example)
    groups, head_channels = outside_heads(groups, heads)
    kept_whole += head_notes + head_channels
    say(f"analysis: verifying {len(groups)} channel groups by cutting them on a copy")
    probe = [x[:CHECK_SAMPLES] for x in pool]
    groups, unfollowed = checked_groups(graph, groups, probe)
    say(f"analysis: {len(groups)} channel groups verified, {len(unfollowed)} kept whole")
    kept_whole += unfollowed
    heads, head_notes = checked_heads(module, heads, probe)
    kept_whole += head_notes
    allowed = [alloc.kept_widths(g.width, options.round_to, options.min_width) for g in groups]
    allowed += [list(range(h.heads, 0, -1)) for h in heads]
    groups = [*groups, *heads]
    say(f"analysis: ranking the channels of {len(groups)} groups ({options.criterion})")
    batch = [x[:SENSITIVITY_BATCH] for x in pool]
    plans = [
        head_plan(module, g, options.criterion, batch)
        if isinstance(g, HeadGroup)
        else removal_plan(graph, g, options.criterion, batch)
        for g in groups
    ]
    sens, blocks, block_sens = None, [], []
    if options.allocation == "sensitivity" and groups:
        sens = sensitivities(graph, groups, plans, allowed, batch, say)
    if options.allocation == "sensitivity" and options.blocks:
        say("analysis: finding the residual blocks that may be removed whole")
        blocks, block_sens = block_sensitivities(module, find_blocks(module, example, excluded), batch)
        if blocks:
            sens = sens or []
    say("analysis: counting the unpruned model's MACs and parameters")
    before = _counts(reference, example, [s.name for s in specs], exporter)
    return Analysis(
        reference,
        module,
        graph,
        groups,
        kept_whole,
        unfollowed,
        plans,
        allowed,
        sens,
        pool,
        held,
        how,
        notes,
        before,
        plan,
        count,
        user,
        blocks,
        block_sens,
    )


def allocation_at(
    analysis: Analysis, target: str, ratio: float, score: alloc.MeasuredCost | None = None
) -> alloc.Allocation:
    """The widths that remove `ratio` of the target's cost; `score` (a LayerTable for a latency
    target): each step weighed by the time it saves on this host (allocate.py)."""
    model = analysis.cost(target)
    if analysis.sensitivity is None:
        return alloc.allocate_uniform(model, analysis.widths, analysis.allowed, ratio)
    sensitivity = analysis.sensitivity + analysis.block_sensitivity
    return alloc.allocate(model, analysis.widths, analysis.allowed, sensitivity, ratio, score)


def cut(
    analysis: Analysis, allocation: alloc.Allocation, flag: Callable[[str], str]
) -> tuple[nn.Module, list[GroupWidth]]:
    """A copy of the analysed model with each group cut to its allocated width (RED merges first),
    run once to prove its shapes line up; the rows the section lists."""
    module = copy.deepcopy(analysis.module)
    graph = Graph(module, analysis.example)
    rows = []
    removed = analysis.removed_blocks(allocation)
    widths = allocation.kept[: len(analysis.groups)]
    for group, plan, kept in zip(analysis.groups, analysis.plans, widths, strict=True):
        if all(any(b.holds(n) for b in removed) for n in group_modules(group)):
            continue  # goes with its block
        count = group.width - kept
        if isinstance(group, HeadGroup):
            rows.append(
                GroupWidth(
                    module=group.name,
                    modules=group_modules(group),
                    channels_before=group.heads * group.head_dim,
                    channels_after=kept * group.head_dim,
                    heads_before=group.heads,
                    heads_after=kept,
                    merged=sum(1 for r in plan[:count] if r.into is not None),
                )
            )
            module = cut_plan(module, group, plan, count)
            continue
        rows.append(
            GroupWidth(
                module=group.name,
                modules=group_modules(group),
                channels_before=group.channels,
                channels_after=kept * group.repeats,
                merged=sum(1 for r in plan[:count] if r.into is not None),
            )
        )
        if not count:
            continue
        twin = group.on(module)
        for r in plan[:count]:
            if r.into is not None:
                merge_into(graph, twin, r.position, r.into)
        graph.group_of(twin, twin.channel_indices([r.position for r in plan[:count]])).prune()
    without_blocks(module, removed)
    selections_as_gathers(module)
    problem, outputs = _culprit(module, analysis.example)
    if problem is None:
        shapes = [tuple(o.shape) for o in outputs]
        expected = [tuple(o.shape) for o in _run(analysis.reference, analysis.example)]
        if shapes != expected:
            problem = f"the outputs became {shapes}, not {expected}"
    if problem is not None:
        raise EdgeportError(
            f"the pruned model does not run: {problem}",
            f"keep that module whole with {flag('exclude')} NAME, and report the model",
        )
    return module.eval(), rows


def group_modules(group: ChannelGroup | HeadGroup) -> list[str]:
    """The modules a group spans."""
    if isinstance(group, HeadGroup):
        return list(group.modules)
    return sorted(set(group.out_modules) | set(group.in_modules))


def kept_channels(analysis: Analysis, allocation: alloc.Allocation) -> dict[str, list[int]]:
    """{module: the unpruned model's indices of the output channels it keeps} for every module whose
    output channels `allocation`'s cut removes (channel groups; heads are not listed)."""
    kept: dict[str, list[int]] = {}
    widths = allocation.kept[: len(analysis.groups)]
    for group, plan, width in zip(analysis.groups, analysis.plans, widths, strict=True):
        count = group.width - width
        if isinstance(group, HeadGroup) or not count:
            continue
        kept.update(
            analysis.graph.kept_outputs(group, group.channel_indices([r.position for r in plan[:count]]))
        )
    return kept


def prune_module(
    reference: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    options: PruneOptions,
    say: Say | None = None,
    spell: Callable[[str], str] | None = None,
    synthetic: tuple[list[torch.Tensor], list[torch.Tensor], str, list[str]] | None = None,
    measure: Callable[[nn.Module], tuple[float, float]] | None = None,
    exporter: Exporter | None = None,
) -> PruneResult:
    """A pruned copy of `reference` (left unchanged) and its manifest section; EdgeportError when the
    target cannot be reached or the pruned model does not run.

    `exporter` (export.py; the pipeline's prune_exporter) counts MACs on the exported graph too and
    converts latency trials; without it MACs are the module's. `measure(module) -> (unpruned ms,
    pruned ms)` times a pruned module beside the unpruned one for a latency target (default: the
    exporter's float .tflite conversions timed on this host's LiteRT, latency.py)."""
    started = time.perf_counter()
    say = say or (lambda _text: None)
    flag = spell or flag_spell(PruneOptions)
    user = None
    if options.finetune_data is not None:  # refused before any work
        user = finetune_inputs(
            options.finetune_data, specs, flag("finetune_data"), options.recovery, flag("recovery")
        )
    analysis = analyze(reference, specs, stats, options, say, flag, synthetic, exporter, user)
    names = [s.name for s in specs]
    search = None
    if options.target == "latency":
        module, rows, allocation, search, table = _latency_target(
            analysis, options, names, say, flag, measure, exporter
        )
    else:
        module, rows, allocation, table = _flops_target(analysis, options, say, flag)
    kept = kept_channels(analysis, allocation)
    kept.update(stream_maps(module, analysis.example, kept))
    example, held = analysis.example, analysis.held
    before = fidelity(module, reference, held)
    recovered = None
    if options.recovery == "distill":
        recovered = _recover(module, reference, specs, stats, analysis, options, kept, before, say, flag)
    before_sqnr, before_agree = before
    sqnr, agree = recovered.scores if recovered else before  # the kept model's, measured when made
    say("counting the exported graphs")
    section = PruningSection(
        ratio=options.ratio,
        target=options.target,
        criterion=options.criterion,
        allocation=ALLOCATION[options.weighing] if options.allocation == "sensitivity" else UNIFORM,
        weigh=options.weighing,
        layer_shapes_timed=table.timed if table else None,
        round_to=options.round_to,
        min_width=options.min_width,
        excluded=list(options.exclude),
        before=analysis.before,
        after=_counts(module, example, names, exporter),
        groups=rows,
        blocks_removed=[b.name for b in analysis.removed_blocks(allocation)],
        kept_whole=analysis.kept_whole,
        latency=search,
        recovery=_recovery_record(options, analysis, recovered),
        fidelity=PruneFidelity(
            samples=int(held[0].shape[0]),
            sqnr_db=_round(sqnr),
            sqnr_db_before_recovery=_round(before_sqnr),
            top1_agreement=agree,
            top1_agreement_before_recovery=before_agree,
        ),
        seconds=round(time.perf_counter() - started, 2),
    )
    return PruneResult(module, section, analysis.notes, kept)


@dataclass
class _Recovered:
    scores: tuple[float | None, float | None]  # (SQNR, top-1 agreement) of the stage kept
    stage: int  # the STAGES index kept
    steps: int
    log: RecoveryLog
    rebuilt: ReconstructionLog


def _recovery_record(options: PruneOptions, analysis: Analysis, recovered: _Recovered | None) -> Recovery:
    """The section's recovery: what ran, on which inputs, for how long, and which stage was kept."""
    if recovered is None:
        return Recovery(method=options.recovery, data_free=options.finetune_data is None)
    log, rebuilt = recovered.log, recovered.rebuilt
    return Recovery(
        method=options.recovery,
        data_free=options.finetune_data is None,
        inputs=recovery_inputs(
            analysis.how,
            options.finetune_data,
            options.seed,
            analysis.pool_count if _synthetic_used(analysis) else 0,
            analysis.plan.steps if _distilled(analysis) else None,
            analysis.user_samples,
        ),
        steps=recovered.steps,
        budget_seconds=options.budget,
        seconds=round(log.seconds + rebuilt.seconds, 2),
        loss_start=_round(log.loss_start),
        loss_end=_round(log.loss_end),
        reconstructed_layers=len(rebuilt.layers),
        kept=STAGES[recovered.stage],
    )


def _recover(
    module: nn.Module,
    reference: nn.Module,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    analysis: Analysis,
    options: PruneOptions,
    kept: dict[str, list[int]],
    cut_scores: tuple[float | None, float | None],
    say: Say,
    flag: Callable[[str], str],
) -> _Recovered:
    """Recover the cut `module` in place: grow the pool (beside or instead of the user's data,
    synthetic_beside_user), least squares layer by layer, then distillation; the latest stage within
    KEEP_MARGIN_DB of the best held-out SQNR is the one left in `module` (recover.kept_stage).
    `cut_scores`: the cut model's held-out fidelity."""
    example, held = analysis.example, analysis.held
    macs_now = sum(module_macs(module, example).values())
    # Only a distilled pool costs time: the user's data and input-statistics noise leave the steps
    # the whole budget.
    charged = analysis.plan if _distilled(analysis) else None
    seconds = step_seconds(options.budget, charged)
    steps = steps_for_budget(module, example, macs_now, seconds)
    if options.max_steps is not None:
        steps = min(steps, options.max_steps)
    say(f"recovery: {steps} distillation steps ({flag('budget')} {options.budget:g}{_spent(charged)})")
    eta = _Eta(say)
    pool = analysis.user
    if _synthetic_used(analysis):
        synthetic = more_synthetic(
            reference,
            specs,
            stats,
            analysis.pool,
            analysis.pool_count,
            options.seed,
            analysis.plan.steps,
            say,
            "recovery",
        )
        pool = synthetic if pool is None else [torch.cat(pair) for pair in zip(pool, synthetic, strict=True)]
    say("recovery: least-squares reconstruction, layer by layer")
    states = [copy.deepcopy(module.state_dict())]
    rebuilt = reconstruct(module, reference, pool, options.seed, kept=kept)
    states.append(copy.deepcopy(module.state_dict()))
    solved = fidelity(module, reference, held)
    log = distill(module, reference, pool, steps, options.seed, eta, kept=kept)
    module.eval()
    distilled = fidelity(module, reference, held)
    stage = kept_stage([cut_scores[0], solved[0], distilled[0]])
    if stage < len(STAGES) - 1:
        module.load_state_dict(states[stage])
        worse = f"{STAGES[stage + 1]} lowered the pruned model's SQNR on held-out synthetic inputs"
        say(f"recovery: {worse}: keeping the model after {STAGES[stage]}")
        analysis.notes.append(
            f"{worse} (after the cut {_db(cut_scores[0])}, least squares {_db(solved[0])}, distillation "
            f"{_db(distilled[0])}): the model after {STAGES[stage]} is kept"
        )
    return _Recovered((cut_scores, solved, distilled)[stage], stage, steps, log, rebuilt)


def _counts(
    module: nn.Module, example: Sequence[torch.Tensor], names: Sequence[str], exporter: Exporter | None
) -> Counts:
    """The module's MACs and parameters, and the same counted on its export (None without an
    exporter, or if it does not export: the export stage then says why)."""
    macs, params = sum(module_macs(module, example).values()), count_params(module)
    if exporter is None:
        return Counts(macs=macs, params=params)
    try:
        onnx_macs, onnx_params = onnx_counts(exporter.graph(module, example, names))
    except EdgeportError:
        return Counts(macs=macs, params=params)
    return Counts(macs=macs, params=params, onnx_macs=onnx_macs, onnx_params=onnx_params)


def _flops_target(
    analysis: Analysis, options: PruneOptions, say: Say, flag: Callable[[str], str]
) -> tuple[nn.Module, list[GroupWidth], alloc.Allocation, LayerTable | None]:
    """The cut that removes options.ratio of the MACs (or parameters), its steps weighed as
    options.weighing says; its module, rows, allocation and the host's layer table (--prune-weigh
    host)."""
    reachable = analysis.reachable(options.target)
    if reachable + 1e-9 < options.ratio:
        raise _unreachable(options, reachable, analysis, flag)
    score = None
    if options.weighing == "host":
        _load_noted(
            analysis,
            say,
            f"{flag('weigh')} host timed layers on a busy host",
            "the steps may be weighed in off timings; rerun on a quieter machine or use "
            f"{flag('weigh')} macs",
        )
        score = layer_table(analysis, say)
    allocation = allocation_at(analysis, options.target, options.ratio, score)
    return (*cut(analysis, allocation, flag), allocation, score)


def _load_noted(analysis: Analysis, say: Say, what: str, then: str) -> lat.Load:
    """This host's load; a note when it is busy, since a one-thread timing needs a core no other work
    holds: `what` (host load), `then`."""
    load = lat.host_load()
    if load.busy:
        busy = f"{what} ({load.describe()}): {then}"
        say(busy)
        analysis.notes.append(busy)
    return load


def layer_table(analysis: Analysis, say: Say) -> LayerTable:
    """This host's per-layer LiteRT times of the analysed model (layer_latency.py), its layers timed at
    full width; the allocation times more shapes as its steps ask for narrower widths."""
    table = LayerTable(
        analysis.module, analysis.example, analysis.cost("flops"), len(analysis.widths), say=say
    )
    say(f"timing layer shapes on this host ({len(table.shapes_at(table.full))} at full width)")
    table.measure([table.full])
    return table


def _latency_target(
    analysis: Analysis,
    options: PruneOptions,
    names: Sequence[str],
    say: Say,
    flag: Callable[[str], str],
    measure: Callable[[nn.Module], tuple[float, float]] | None,
    exporter: Exporter | None,
) -> tuple[nn.Module, list[GroupWidth], alloc.Allocation, LatencySearch, LayerTable | None]:
    """Search the fraction of MACs whose removal removes options.ratio of the measured latency
    (latency.py: on what each allocation removed, asked of it as its FLOPs ratio); the chosen trial's
    module, rows, allocation and search, and the host's layer table (--prune-weigh host). The chosen
    trial is timed again and refused when the two timings differ by more than
    latency.RETIME_TOLERANCE; a busy host at the start adds a note."""
    reachable = analysis.reachable("flops")
    if reachable < 0.01:
        raise _unreachable(options, reachable, analysis, flag)
    host = None
    if measure is None:
        if exporter is None:
            raise EdgeportError(
                f"{flag('target')} latency converts and times trials, but prune_module was given no exporter",
                "pass exporter=edgeport.pipeline.torch_passes.prune_exporter() (or a measure function)",
            )
        say("converting the unpruned model to time it")
        host = lat.HostLatency(
            exporter.graph(analysis.reference, analysis.example, names), exporter.float_tflite
        )
        to_graph = exporter.graph

        def measure(module: nn.Module) -> tuple[float, float]:
            return host.measure(to_graph(module, analysis.example, names))

    start = _load_noted(
        analysis,
        say,
        f"{flag('target')} latency timed on a busy host",
        f"the measured latency may be off; rerun on a quieter machine or use {flag('target')} flops",
    )
    # Each trial's allocation weighs its steps as options.weighing says (host: layer shapes timed once
    # for all trials); each trial is still converted and timed whole.
    table = layer_table(analysis, say) if options.weighing == "host" else None
    cuts: dict[float, tuple[nn.Module, list[GroupWidth], alloc.Allocation]] = {}
    # Each trial's second timing: its .tflite timed again beside the unpruned one (no reconversion),
    # or, for a measure function given, that function called again on the same module.
    again: dict[float, Callable[[], tuple[float, float]]] = {}

    def trial(ratio: float) -> lat.Candidate:
        allocation = allocation_at(analysis, "flops", ratio, table)
        macs_removed = 1.0 - allocation.cost_after / allocation.cost_before

        def converted() -> lat.Trial:
            say(
                f"latency trial {len(cuts) + 1}: asked for {100 * ratio:.0f}% of the MACs, the allocation "
                f"removes {100 * macs_removed:.0f}%; converting, timing"
            )
            cuts[ratio] = (*cut(analysis, allocation, flag), allocation)
            timing = functools.partial(measure, cuts[ratio][0])
            try:
                measured = lat.timed(ratio, macs_removed, timing, lat.host_load)
            except EdgeportError as error:  # a trial's conversion: say which, the fix is the converter's
                raise EdgeportError(
                    f"{flag('target')} latency: trial {len(cuts)} ({100 * macs_removed:.0f}% of the MACs "
                    f"removed) could not be timed: {error.problem}",
                    error.fix or f"use {flag('target')} flops",
                ) from error
            again[ratio] = functools.partial(host.interleaved, host.last) if host and host.last else timing
            return measured

        return lat.Candidate(ratio, macs_removed, converted)

    try:
        found = lat.search(options.ratio, trial, reachable)
        best = found.best()
        if best is None:
            most = max(found.trials, key=lambda t: t.removed)
            raise EdgeportError(
                f"{flag('ratio')} {options.ratio:g} of the latency cannot be reached: at most "
                f"{most.removed:.2f} measured ({100 * most.macs_removed:.0f}% of the MACs removed, the most "
                f"of {len(found.trials)} trials)",
                f"use {flag('ratio')} {max(most.removed - 0.005, 0.01):.2f} or less, or lower "
                f"{flag('min_width')} / {flag('round_to')}",
            )
        shapes = f" ({table.timed} layer shapes timed in all)" if table else ""
        say(f"latency: timing the chosen trial ({100 * best.macs_removed:.0f}% of the MACs) again{shapes}")
        retimed = lat.timed(best.flops_ratio, best.macs_removed, again[best.flops_ratio], lat.host_load)
    finally:
        if host is not None:
            host.close()
    if not lat.agree(best, retimed):
        # Refused rather than searched on: the host just timed the same two files twice and got
        # answers further apart than a quiet machine ever does, so every further point of the search
        # would be read off the same unreliable clock, and keeping either figure would emit a model
        # whose latency claim nothing supports (the failure this check exists for).
        raise EdgeportError(
            f"{flag('target')} latency: two timings of the chosen trial disagree ({best.removed:.2f} then "
            f"{retimed.removed:.2f} of the latency removed, more than {lat.RETIME_TOLERANCE:g} apart) at "
            f"{lat.host_load().describe()}",
            f"rerun on a quieter machine or use {flag('target')} flops",
        )

    def record(t: lat.Trial) -> LatencyTrial:
        return LatencyTrial(
            flops_ratio=t.flops_ratio,
            macs_removed=round(t.macs_removed, 4),
            removed=round(t.removed, 4),
            before_ms=round(t.before_ms, 4),
            after_ms=round(t.after_ms, 4),
            load_average=t.load_average,
        )

    module, rows, allocation = cuts[best.flops_ratio]
    search = LatencySearch(
        runner=lat.RUNNER,
        asked=options.ratio,
        removed=round(best.removed, 4),
        before_ms=round(best.before_ms, 4),
        after_ms=round(best.after_ms, 4),
        flops_ratio=best.flops_ratio,
        macs_removed=round(best.macs_removed, 4),
        trials=[record(t) for t in found.trials],
        cores=start.cores,
        retimed=record(retimed),
    )
    return module, rows, allocation, search, table


def _unreachable(
    options: PruneOptions, reachable: float, analysis: Analysis, flag: Callable[[str], str]
) -> EdgeportError:
    """The target is out of reach: the smallest reachable one, or, when nothing can be pruned, why."""
    ratio = flag("ratio")
    unfollowed, kept_whole = analysis.unfollowed, analysis.kept_whole
    if reachable < 0.01 and unfollowed:
        return EdgeportError(
            f"the pruning dependency analysis cannot follow this model: {unfollowed[0]}",
            f"keep that module whole with {flag('exclude')} NAME, or convert without {ratio}",
        )
    if not analysis.groups and not analysis.blocks:
        why = kept_whole[0] if kept_whole else "no Conv/Linear whose channels stay inside the model"
        return EdgeportError(
            f"nothing in this model can be pruned ({why}; recurrent layers and attention embeddings are kept "
            "whole)",
            f"convert without {ratio}",
        )
    what = "MACs" if options.target == "latency" else options.target
    problem = (
        f"{ratio} {options.ratio:g} of the {what} cannot be reached: at most {reachable:.2f} "
        f"with {flag('round_to')} {options.round_to} and {flag('min_width')} {options.min_width}"
        + (f" ({len(kept_whole)} groups kept whole)" if kept_whole else "")
    )
    lower = f"lower {flag('min_width')} / {flag('round_to')}" + (
        f" or drop {flag('exclude')} names" if options.exclude else ""
    )
    if reachable < 0.01:
        return EdgeportError(problem, lower)
    return EdgeportError(problem, f"use {ratio} {reachable - 0.005:.2f} or less, or {lower}")


def _synthetic_used(analysis: Analysis) -> bool:
    """Whether recovery trains on the synthetic pool: without the user's data, or beside a few of
    them when it is distilled (input-statistics noise adds nothing to real inputs)."""
    if analysis.user is None:
        return True
    return analysis.how == DISTILLED and synthetic_beside_user(analysis.plan, analysis.user_samples)


def _distilled(analysis: Analysis) -> bool:
    """Whether recovery trains on a pool made by distillation (the one that costs time and steps)."""
    return analysis.how == DISTILLED and _synthetic_used(analysis)


def _spent(plan: PoolPlan | None) -> str:
    """What of the budget went to the synthetic pool, for the recovery line."""
    if plan is None:
        return ""
    return f": about {plan.seconds:.0f} s of it making {plan.count} synthetic inputs, the rest for steps"


def _db(sqnr: float | None) -> str:
    return "identical" if sqnr is None else f"{sqnr:.1f} dB"


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.4g}")


class _Eta:
    """Progress for the stage display: step, loss and the time left, about once a second."""

    def __init__(self, say: Say) -> None:
        self.say, self.started, self.shown = say, time.perf_counter(), 0.0

    def __call__(self, step: int, steps: int, loss: float) -> None:
        now = time.perf_counter()
        if now - self.shown < 1.0 and step < steps:
            return
        self.shown = now
        left = (now - self.started) / step * (steps - step)
        self.say(f"recovery: step {step}/{steps}, loss {loss:.4f}, {left:.0f}s left")


__all__ = ["PruneResult", "distillation_loss", "prune_module"]
