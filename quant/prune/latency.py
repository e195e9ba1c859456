"""`--prune-target latency`: RATIO of the float model's LiteRT latency on this host (one thread),
measured, not modelled.

How: the unpruned model is converted to a float .tflite once; then the fraction of MACs removed is
searched with real conversions. The first guess takes latency to fall with MACs (FLOPs ratio =
RATIO); each guess is asked of the allocation as its FLOPs ratio (the channel analysis, criterion
order and sensitivities are computed once and only the allocation and the cut repeat), converted as
convert converts, and measured beside the unpruned model in one interleaved `edgeport bench --on
host` run (edgeport.bench, the one LiteRT timing loop), so both see the same load and their ratio is
what counts. The next guess interpolates between the two measured points that bracket the goal
(regula falsi), or extrapolates through the last two (secant) until one does; at most MAX_TRIALS
conversions, the last of them at the most the options allow when nothing met the goal before, and up
to BRACKET_TRIALS more once a trial removed more than the goal, to close in on it from both sides.
The least-pruned trial within TOLERANCE of the goal (or beyond it) wins.

The points are (fraction of MACs the allocation removed, fraction of latency removed), not the ratio
asked: an allocation can remove far more than it was asked to (on a small model with residual blocks,
asked for 9.4 % of the MACs it removed 34 %: one block went whole), and a point placed at the asked
ratio would bend every interpolation after it. An allocation identical to an earlier trial's (the same
fraction removed) is not converted again: there is nothing new to learn from it, and the search ends.

A loaded machine fools the timing: beside two other one-thread jobs on 2 cores (load 3.3) a trial
measured 0.36 of the latency removed where a quiet machine measured 0.12. So the 1-minute load
average is read around each timing and recorded with the trial, a search that starts with no core
free of other work says so in a note, and the chosen trial is timed once more (the same two .tflite
files, no reconversion), both figures in the manifest: when they differ by more than
RETIME_TOLERANCE the search refuses rather than keep a model chosen on a number the host cannot
repeat (why refuse and not search on: prune.py's _latency_target).

A per-layer latency table (layer_latency.py: each convolution and Linear timed alone on this host at
the widths the allocation asks about) only weighs the allocation's steps, because XNNPACK's time is
not monotone in the channels (a 3x3 convolution with 24 output channels is slower than with 32 here).
It does not replace this search: LiteRT fuses each convolution with its BatchNorm, activation and
often the residual add, and a layer's time depends on the layers around it, so per-layer times
measured apart do not add up to the model's; the whole converted model is still measured, the
number the user asked about. On ResNet-20 a trial costs one onnx2tf conversion (about 10-15 s on 2
busy cores) and a second of timing: two to four trials.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from edgeport.tempdirs import make_tempdir, remove_tempdir

MAX_TRIALS = 4
# Trials the search may add once one trial removed more than the goal: the goal then lies between two
# measured points, and the secant between them closes in on it. Without them a search whose last
# regular trial was the most the options allow kept that: a ResNet-56 asked for 0.34 of its latency
# got 99.5 % of its MACs removed (20 % top-1) after trials that fell short of the goal.
BRACKET_TRIALS = 3
# Absolute tolerance on the fraction of latency removed: the interleaved medians of two models on a
# shared 2-core machine move by about this much between runs.
TOLERANCE = 0.02
# Two timings of the same files must agree within this. A quiet machine repeats within TOLERANCE, so
# 2.5x that is outside what noise gives, yet far inside the 0.24 a loaded machine was off by (0.36 vs
# 0.12 removed, module docstring).
RETIME_TOLERANCE = 2.5 * TOLERANCE
RUNS = 60
WARMUP = 10


@dataclass(frozen=True)
class Trial:
    flops_ratio: float  # the fraction of MACs the allocation was asked to remove
    macs_removed: float  # the fraction of MACs it removed (can be far more: a residual block goes whole)
    removed: float  # fraction of the unpruned model's latency removed, measured
    before_ms: float
    after_ms: float
    load_average: float | None = None  # the 1-minute load around the timing (the higher reading)


@dataclass
class Search:
    goal: float
    trials: list[Trial] = field(default_factory=list)

    def best(self, tolerance: float = TOLERANCE) -> Trial | None:
        """The least-pruned trial within `tolerance` of the goal (or beyond it), None when none is."""
        met = [t for t in self.trials if t.removed >= self.goal - tolerance]
        return min(met, key=lambda t: t.macs_removed) if met else None


@dataclass(frozen=True)
class Candidate:
    """An allocation asked for and not yet converted: what it removes, known without converting, and
    how to convert and time it."""

    flops_ratio: float  # asked
    macs_removed: float  # achieved: 1 - cost after / cost before, of the allocation
    measure: Callable[[], Trial]


# allocate(FLOPs ratio asked) -> the allocation at that ratio, not yet converted
Allocate = Callable[[float], Candidate]


@dataclass(frozen=True)
class Load:
    """The host's 1-minute load average, its cores, and how much of that load is this process."""

    average: float
    cores: int
    own: float = 0.0  # this process's CPU use, in cores: its share of `average`

    @property
    def others(self) -> float:
        return max(0.0, self.average - self.own)

    @property
    def busy(self) -> bool:
        """No core free of other work for a one-thread timing. The load average counts this process
        too (it has been computing the analysis), so only the rest of the load is weighed: of the 3.3
        measured on 2 cores beside two other one-thread jobs, those made about 2."""
        return self.others > self.cores - 1

    def describe(self) -> str:
        return f"load {self.average:.1f} on {self.cores} cores, {self.others:.1f} of it other work"


LoadReader = Callable[[], Load]


def host_load() -> Load:
    """This host's load now: the 1-minute load average (psutil's: the OS's on Linux and macOS, emulated
    on Windows, which has none, from psutil's first call on), os.cpu_count(), and this process's
    CPU use (with its finished children: the host bench runs a process per model) averaged over its
    life, the nearest figure to its share of a 1-minute average without a reading a minute ago."""
    import psutil

    process = psutil.Process()
    used = process.cpu_times()
    seconds = used.user + used.system + used.children_user + used.children_system
    cores = os.cpu_count() or 1
    alive = max(time.time() - process.create_time(), 1e-3)
    return Load(psutil.getloadavg()[0], cores, min(seconds / alive, float(cores)))


def timed(
    flops_ratio: float, macs_removed: float, timer: Callable[[], tuple[float, float]], load: LoadReader
) -> Trial:
    """One timing as a Trial of the allocation asked for `flops_ratio` that removed `macs_removed`:
    `timer() -> (unpruned ms, pruned ms)`, with the load read before and after it (the higher: the
    reading that could have fooled it)."""
    first = load().average
    before, after = timer()
    removed = 1.0 - after / before if before > 0 else 0.0
    return Trial(flops_ratio, macs_removed, removed, before, after, round(max(first, load().average), 2))


def agree(first: Trial, again: Trial) -> bool:
    """Two timings of the same files repeat each other (within RETIME_TOLERANCE)."""
    return abs(first.removed - again.removed) <= RETIME_TOLERANCE


def next_guess(goal: float, points: Sequence[tuple[float, float]], reachable: float) -> float:
    """The next fraction of MACs to remove from the measured (MACs removed, latency removed) points,
    (0, 0) among them: interpolated between the closest points on either side of the goal when a trial
    reached it, else extrapolated through the two most pruned; the most the options allow when the
    latency did not fall between those two (noise, or a model whose time is not in its MACs)."""
    below = [p for p in points if p[1] < goal]
    above = [p for p in points if p[1] >= goal]
    if above:
        a, b = max(below, key=lambda p: p[1]), min(above, key=lambda p: p[1])
    else:
        a, b = sorted(points)[-2:]
        if b[1] <= a[1]:
            return reachable
    guess = a[0] + (goal - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
    return min(max(guess, 0.01), reachable)


def search(
    goal: float,
    allocate: Allocate,
    reachable: float,
    trials: int = MAX_TRIALS,
    bracket_trials: int = BRACKET_TRIALS,
) -> Search:
    """Try fractions of MACs to remove until one removes `goal` of the latency (within TOLERANCE) or
    `trials` are spent. Each guess is asked of `allocate` as its FLOPs ratio; the allocation it
    returns is converted and timed (`Candidate.measure`) unless it removes the same fraction as an
    earlier trial's (the same allocation: the search ends there). The last of `trials` goes to
    `reachable` when none met the goal before it; once one met it, up to `bracket_trials` more narrow
    the bracket."""
    found = Search(goal)
    reachable = round(reachable, 4)
    points: list[tuple[float, float]] = [(0.0, 0.0)]
    guess = min(goal, reachable)
    for index in range(trials + bracket_trials):
        met = found.best() is not None
        if index >= trials and not met:
            break
        if index == trials - 1 and not met:
            guess = reachable
        candidate = allocate(round(guess, 4))
        if any(t.macs_removed == candidate.macs_removed for t in found.trials):
            break  # an earlier trial's allocation again: nothing new to learn, no conversion spent
        trial = candidate.measure()
        found.trials.append(trial)
        points.append((trial.macs_removed, trial.removed))
        if abs(trial.removed - goal) <= TOLERANCE:
            break
        if trial.removed < goal and max(candidate.flops_ratio, trial.macs_removed) >= reachable:
            break  # the most the options allow is not enough
        guess = next_guess(goal, points, reachable)
    return found


class HostLatency:
    """Float .tflite conversions of modules measured beside the unpruned model on this host's LiteRT
    (one thread), through edgeport.bench's host runner."""

    def __init__(self, reference: onnx.ModelProto, to_tflite: Callable[[onnx.ModelProto], bytes]) -> None:
        self.to_tflite = to_tflite  # an Exporter's float_tflite (export.py)
        self.workdir = make_tempdir("prune-latency")
        self.reference = self.workdir / "unpruned.tflite"
        self.reference.write_bytes(to_tflite(reference))
        self.count = 0
        self.last: Path | None = None  # the last trial's .tflite, kept to time it again

    def measure(self, graph: onnx.ModelProto) -> tuple[float, float]:
        """(unpruned ms, pruned ms) of `graph` converted: medians of one interleaved run of both."""
        self.count += 1
        self.last = self.workdir / f"trial{self.count}.tflite"
        self.last.write_bytes(self.to_tflite(graph))
        return self.interleaved(self.last)

    def interleaved(self, path: Path) -> tuple[float, float]:
        """(unpruned ms, pruned ms): medians of one interleaved run of the unpruned model and `path`."""
        from edgeport.bench import bench
        from edgeport.bench.schema import BenchSettings

        settings = BenchSettings(runner="host", runs=RUNS, warmup=WARMUP, threads=1)
        report = bench([self.reference, path], "host", settings, progress=False)
        before, after = (r.stats.median for r in report.results)
        return before, after

    def close(self) -> None:
        remove_tempdir(self.workdir)


RUNNER = (
    f"LiteRT on this host, 1 thread (XNNPACK), float32, median of {RUNS} runs interleaved with the "
    "unpruned model's"
)
