"""How many channels each group loses: chosen globally, so sensitive groups keep more.

Each group's sensitivity is measured without data: its channels are removed in its criterion's order
(simulated exactly by zeroing their consumers' input columns, RED merges compensated) at a few
widths, and the relative output error on synthetic inputs recorded. Assuming the errors of different
groups add, the allocation is greedy: starting from the full model, the step (one `round` of
channels off one group) with the least added error per MAC (or parameter) saved is taken, until the
model is RATIO smaller. The cost of a width assignment is exact for Conv/Linear (a module's MACs
scale with its kept output and input fractions; a depthwise convolution's with one of them).

Steps can be weighed in a measured cost (`score`, `--prune-target latency`: layer_latency.py's
per-layer LiteRT times on this host) while the target stays in MACs. A measured time is not monotone
in the widths (on the x86 host a 3x3 convolution with 24 output channels is slower than with 32), so
a one-step greedy would never walk 32 -> 28 -> 24 -> 20 -> 16 through widths that are slower: with a
measured score a step may jump to any narrower allowed width, and a gain under the score's noise
floor counts as none. Without one (FLOPs, parameters) every step is one `round`. Every width a
measured step tries is measured (each layer of the group timed at it), so a step tries at most
LOOKAHEAD of a group's narrower widths: all of them when there are no more, else that many spread
evenly from the next one down to the narrowest (lookahead).

A residual block that may be removed whole (blocks.py) is one more entry with widths 1 (kept) and 0
(removed), its sensitivity the error measured with the block replaced by identity: the same greedy
weighs removing it against narrowing groups, and once it is gone the steps of the groups inside it
save nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# At most this many narrower widths of a group are tried per measured step: a 512-channel layer at
# --prune-round 1 would otherwise time 511 new shapes of each of its layers in one step. At the default
# round (8) a group up to 136 channels wide is offered every width.
LOOKAHEAD = 16


@dataclass
class CostTerm:
    """One module's share: `base` at full width, scaled by the kept fraction of its output group
    and (unless `depthwise`) of its input channels, which may come from several groups (a concat):
    `in_groups` holds (group, the share of the module's input channels it feeds)."""

    base: int
    out_group: int | None
    in_groups: list[tuple[int, float]] = field(default_factory=list)
    depthwise: bool = False
    # The residual blocks holding the module (blocks.py), as entries of `kept` that are 1 or 0: a
    # removed block takes the module's whole share.
    blocks: tuple[int, ...] = ()
    module: str = ""  # the module it counts ("": a product no module makes)


@dataclass
class CostModel:
    terms: list[CostTerm]
    fixed: int = 0  # what no group changes

    def total(self, kept: Sequence[float]) -> float:
        """Cost with each group keeping the fraction `kept[g]` of its channels."""
        total = float(self.fixed)
        for t in self.terms:
            f = kept[t.out_group] if t.out_group is not None else 1.0
            if not t.depthwise:
                f *= 1.0 - sum(share * (1.0 - kept[g]) for g, share in t.in_groups)
            for b in t.blocks:
                f *= kept[b]
            total += t.base * f
        return total


class MeasuredCost(Protocol):
    """A cost read off measurements (layer_latency.LayerTable): not monotone in the widths."""

    @property
    def noise(self) -> float:
        """A difference of two totals at or under this is noise, not a gain."""
        ...

    def measure(self, kepts: Sequence[Sequence[float]]) -> None:
        """Measure what these width assignments' totals need, together (one interleaved batch)."""
        ...

    def total(self, kept: Sequence[float]) -> float: ...


def lookahead(first: int, last: int, cap: int = LOOKAHEAD) -> list[int]:
    """The option indices a measured step tries among `first`..`last` (a group's narrower widths, the
    next one first): all of them, or `cap` spread evenly, `first` (one round narrower) and `last` (the
    narrowest) always among them."""
    if last - first + 1 <= cap:
        return list(range(first, last + 1))
    return sorted({int(i) for i in np.linspace(first, last, cap).round()})


def kept_widths(width: int, round_to: int, min_width: int) -> list[int]:
    """The widths a group may keep, widest first: its own, then multiples of `round_to`, none below
    `min_width` (nor zero)."""
    floor = max(min_width, 1)
    options = [width]
    step = max(1, round_to)
    w = ((width - 1) // step) * step
    while w >= floor and w > 0:
        options.append(w)
        w -= step
    return options


@dataclass
class Sensitivity:
    """A group's relative output error at some numbers of removed channels (0 -> 0)."""

    removed: list[int]
    error: list[float]

    def at(self, removed: int) -> float:
        return float(np.interp(removed, self.removed, self.error))


@dataclass
class Allocation:
    kept: list[int]  # per group
    cost_before: float
    cost_after: float
    predicted_error: float
    steps: list[tuple[int, int]] = field(default_factory=list)  # (group, kept width) in order taken


def reachable_fraction(model: CostModel, widths: Sequence[int], options: Sequence[Sequence[int]]) -> float:
    """The largest fraction of the cost pruning can remove (every group at its narrowest)."""
    full = model.total([1.0] * len(widths))
    narrow = model.total([opts[-1] / w for opts, w in zip(options, widths, strict=True)])
    return 1.0 - narrow / full if full else 0.0


def allocate(
    model: CostModel,
    widths: Sequence[int],
    options: Sequence[Sequence[int]],
    sensitivity: Sequence[Sensitivity],
    ratio: float,
    score: MeasuredCost | None = None,
) -> Allocation:
    """Greedy: cheapest error per unit of cost saved first, until cost <= (1 - ratio) * full cost; the
    step that gets there is the finishing step that adds the least error.
    `score` (default `model`) is what a step's saving is weighed in: a measured cost (module
    docstring), where a step may be any narrower allowed width of one group (those `lookahead`
    tries) and a step that saves none of it (or no more than its noise) comes after every one that
    does, ranked by error per cost saved. The caller checks `reachable_fraction` first."""
    level = [0] * len(widths)
    kept = [1.0] * len(widths)
    full = model.total(kept)
    goal = (1.0 - ratio) * full
    current, error = full, 0.0
    steps: list[tuple[int, int]] = []
    while current > goal + 1e-9:
        # (group, option index, kept fractions): one `round` narrower, or any narrower when measured
        # (LOOKAHEAD of them at most)
        candidates = []
        for g, opts in enumerate(options):
            if score is None:
                tried = list(range(level[g] + 1, min(level[g] + 2, len(opts))))
            else:
                tried = lookahead(level[g] + 1, len(opts) - 1)
            for j in tried:
                trial = list(kept)
                trial[g] = opts[j] / widths[g]
                candidates.append((g, j, trial))
        if score is not None:
            score.measure([kept] + [trial for _, _, trial in candidates])
            weighed = score.total(kept)
        best: tuple[tuple[bool, float, float], int, int, float, float] | None = None
        finishing: tuple[float, int, int, float] | None = None  # (added, group, option, cost): least error
        for g, j, trial in candidates:
            cost = model.total(trial)
            saved = current - cost
            if saved <= 0:
                continue
            added = sensitivity[g].at(widths[g] - options[g][j]) - sensitivity[g].at(
                widths[g] - options[g][level[g]]
            )
            gain = saved
            if score is not None:
                gain = weighed - score.total(trial)
                gain = gain if gain > score.noise else 0.0
            # Ties (steps that add no error) go to the one that saves most: a silent block whole
            # before the channels inside it.
            rank = (gain <= 0, max(added, 0.0) / (gain if gain > 0 else saved), -gain)
            if best is None or rank < best[0]:
                best = (rank, g, j, cost, added)
            if cost <= goal + 1e-9 and (finishing is None or added < finishing[0]):
                finishing = (added, g, j, cost)
        if best is None:
            break
        _, g, j, cost, added = best
        if cost <= goal + 1e-9 and finishing is not None:
            # The last step: any step that reaches the goal does, so take the one that adds the least
            # error (a big step overshoots the ratio at a price).
            added, g, j, cost = finishing
        level[g] = j
        kept[g] = options[g][j] / widths[g]
        current, error = cost, error + added
        steps.append((g, options[g][j]))
    return Allocation(
        kept=[opts[lv] for opts, lv in zip(options, level, strict=True)],
        cost_before=full,
        cost_after=current,
        predicted_error=error,
        steps=steps,
    )


def allocate_uniform(
    model: CostModel, widths: Sequence[int], options: Sequence[Sequence[int]], ratio: float
) -> Allocation:
    """The baseline: every group keeps the same fraction (its nearest allowed width at or above it),
    the largest fraction that reaches the target."""
    full = model.total([1.0] * len(widths))
    goal = (1.0 - ratio) * full
    kept = list(widths)
    for percent in range(100, -1, -1):
        kept = [
            min((w for w in opts if w >= percent / 100 * width), default=opts[-1])
            for opts, width in zip(options, widths, strict=True)
        ]
        if model.total([k / w for k, w in zip(kept, widths, strict=True)]) <= goal + 1e-9:
            break
    cost = model.total([k / w for k, w in zip(kept, widths, strict=True)])
    return Allocation(kept=kept, cost_before=full, cost_after=cost, predicted_error=float("nan"))
