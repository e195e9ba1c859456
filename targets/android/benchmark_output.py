"""What LiteRT / TensorFlow Lite `benchmark_model` prints, parsed, in every wording it has used.

The tool prints summaries only (no per-run times). The lines read here, as the sources print them
(tensorflow/lite/tools/benchmark/benchmark_model.cc, benchmark_tflite_model.cc, the Stat /
StatWithPercentiles classes of stats_calculator.h, the interpreter's delegate partitioning log):

- `Running benchmark for ...` followed by one stats line, once for the warm-up runs and once for the
  timed runs: `count=N first=F curr=C min=M max=X avg=A std=S`, since LiteRT's StatWithPercentiles
  followed by ` p5=P median=Q p95=R`; one value only: `count=1 curr=C`, several equal ones
  `count=N curr=C(all same)`; no runs: `count=0`. Averages are C++ doubles with 6 significant digits,
  so large ones are in scientific notation (`avg=2.95034e+06`); the other numbers are integers.
- the totals: `Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A`
  (TF after 2.0, LiteRT); before it `Average inference timings in us: Warmup: W, Init: I, no stats: A`
  (TF 1.x and 2.0 native binary) or `..., Inference: A` (the TF 1.x Android benchmark app).
- memory: `Peak memory footprint (MB): init=X overall=Y` (earlier TF 2.x), then
  `Memory footprint delta from the start of the tool (MB): init=X overall=Y` (TF 2.13 prints it, LiteRT),
  and with --report_peak_memory_footprint `Overall peak memory footprint (MB) via periodic monitoring: P`.
- delegation: `Replacing N node(s) with delegate (NAME) node, yielding P partitions.` (older),
  `Replacing N out of M node(s) with delegate (NAME) node, yielding P partitions for the whole graph.`
  (newer), and the tool's own `Explicitly applied GPU delegate, and the model graph will be completely
  executed by the delegate.` / `... partially executed by the delegate w/ K delegate kernels.` /
  `Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.`

Lines may carry a log prefix (`INFO: `, `VERBOSE: `, a logcat `07-08 15:34:26.201 I/tflite (5395): `):
every pattern is searched for inside the line.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_NUM = r"[-+]?(?:nan|inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"

_STAT_TOKEN = re.compile(rf"\b(count|first|curr|min|max|avg|std|p5|median|p95)=({_NUM})", re.IGNORECASE)
_RUNNING = re.compile(r"Running benchmark for ")
_TIMINGS = re.compile(
    rf"Inference timings in us: Init: ({_NUM}), First inference: ({_NUM}), "
    rf"Warmup \(avg\): ({_NUM}), Inference \(avg\): ({_NUM})"
)
_TIMINGS_V1 = re.compile(
    rf"Average inference timings in us: Warmup: ({_NUM}), Init: ({_NUM}), (?:no stats|Inference): ({_NUM})"
)
_FOOTPRINT_DELTA = re.compile(
    rf"Memory footprint delta from the start of the tool \(MB\): init=({_NUM}) overall=({_NUM})"
)
_FOOTPRINT_PEAK_RSS = re.compile(rf"Peak memory footprint \(MB\): init=({_NUM}) overall=({_NUM})")
_PEAK_MONITOR = re.compile(rf"Overall peak memory footprint \(MB\) via periodic monitoring: ({_NUM})")
_REPLACING = re.compile(
    r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node"
    r"(?:, yielding (\d+) partitions)?"
)
_APPLIED = re.compile(
    r"Explicitly applied (\S+) delegate, and the model graph will be (completely|partially) executed by"
    r" the delegate(?: w/ (\d+) delegate kernels)?"
)
_NOT_APPLIED = re.compile(r"Though (\S+) delegate is explicitly applied, the model graph will not be")
_ERROR = re.compile(r"\b(ERROR|FATAL|Error|error)\b|Failed|failed|not found|No such file|cannot|CANNOT")

# The interpreter logs a delegate by its registration name; the tool by its provider name.
_DELEGATE_KINDS = {
    "tflitexnnpackdelegate": "xnnpack",
    "xnnpack": "xnnpack",
    "tflitegpudelegatev2": "gpu",
    "tflitegpudelegate": "gpu",
    "gpu": "gpu",
    "tflitennapidelegate": "nnapi",
    "nnapi": "nnapi",
}


def delegate_kind(name: str) -> str:
    """`TfLiteXNNPackDelegate` / `XNNPACK` -> "xnnpack"; an unknown delegate keeps its name, lower-cased."""
    return _DELEGATE_KINDS.get(name.strip().lower(), name.strip().lower())


@dataclass(frozen=True)
class RunStats:
    """One `count=... ` line: microseconds as printed (None where that wording has no such field)."""

    count: int
    first: float | None = None
    curr: float | None = None
    min: float | None = None
    max: float | None = None
    avg: float | None = None
    std: float | None = None
    p5: float | None = None
    median: float | None = None
    p95: float | None = None
    all_same: bool = False


@dataclass(frozen=True)
class DelegateReplacement:
    """One `Replacing N [out of M] node(s) with delegate (NAME)` line."""

    delegate: str  # as logged, e.g. TfLiteXNNPackDelegate
    replaced: int
    total: int | None  # None in the older wording
    partitions: int | None


@dataclass(frozen=True)
class DelegateApplied:
    """The tool's own summary of an explicitly applied delegate."""

    delegate: str  # provider name as printed: XNNPACK, GPU, NNAPI
    extent: str  # "completely", "partially" or "none"
    kernels: int | None = None


@dataclass
class BenchmarkOutput:
    """Everything one benchmark_model run printed that edgeport reads; None where it printed nothing."""

    runs: list[RunStats] = field(default_factory=list)  # in order: warm-up, then the timed runs
    init_us: float | None = None
    first_us: float | None = None
    warmup_avg_us: float | None = None
    inference_avg_us: float | None = None
    timings_wording: str | None = None  # "v2" (Inference timings in us: Init: ...) or "v1" (Average ...)
    footprint_init_mb: float | None = None
    footprint_overall_mb: float | None = None
    footprint_wording: str | None = None  # "delta" or "peak"
    peak_monitor_mb: float | None = None
    replacements: list[DelegateReplacement] = field(default_factory=list)
    applied: list[DelegateApplied] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)

    @property
    def timed(self) -> RunStats | None:
        """The timed runs' stats: the last stats line (the first one is the warm-up's)."""
        return self.runs[-1] if len(self.runs) >= 2 else None

    @property
    def complete(self) -> bool:
        """True when the run got as far as printing its totals."""
        return self.inference_avg_us is not None


def _number(text: str) -> float:
    return float(text)


def parse_stats_line(line: str) -> RunStats | None:
    """A `count=...` stats line in any of its wordings; None if the line has no count."""
    values = {key.lower(): _number(value) for key, value in _STAT_TOKEN.findall(line)}
    if "count" not in values:
        return None
    count = int(values["count"])
    if count == 0:
        return RunStats(count=0)
    if "min" not in values and "curr" in values:
        # `count=1 curr=C` or `count=N curr=C(all same)`: every value was C.
        curr = values["curr"]
        return RunStats(
            count=count,
            first=curr,
            curr=curr,
            min=curr,
            max=curr,
            avg=curr,
            std=0.0,
            p5=values.get("p5"),
            median=values.get("median"),
            p95=values.get("p95"),
            all_same=True,
        )
    return RunStats(
        count=count,
        first=values.get("first"),
        curr=values.get("curr"),
        min=values.get("min"),
        max=values.get("max"),
        avg=values.get("avg"),
        std=values.get("std"),
        p5=values.get("p5"),
        median=values.get("median"),
        p95=values.get("p95"),
    )


def _stats_lines(lines: list[str]) -> list[RunStats]:
    """The stats line after each `Running benchmark for ...` line; without those (output grepped or cut
    by a log reader), every line that opens with count= after its log prefix."""
    stats: list[RunStats] = []
    waiting = False
    for line in lines:
        if _RUNNING.search(line):
            waiting = True
            continue
        if waiting:
            parsed = parse_stats_line(line)
            if parsed is not None:
                stats.append(parsed)
                waiting = False
    if stats:
        return stats
    for line in lines:
        if re.search(r"(?:^|INFO: |\): |^\s*)count=\d", line) and "(microseconds)" not in line:
            parsed = parse_stats_line(line)
            if parsed is not None:
                stats.append(parsed)
    return stats


def parse_benchmark_output(text: str) -> BenchmarkOutput:
    """Parse benchmark_model's combined stdout/stderr (or a logcat capture of it)."""
    lines = text.splitlines()
    out = BenchmarkOutput(runs=_stats_lines(lines))
    for line in lines:
        if m := _TIMINGS.search(line):
            out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us = map(_number, m.groups())
            out.timings_wording = "v2"
        elif m := _TIMINGS_V1.search(line):
            out.warmup_avg_us, out.init_us, out.inference_avg_us = map(_number, m.groups())
            out.timings_wording = "v1"
        elif m := _FOOTPRINT_DELTA.search(line):
            out.footprint_init_mb, out.footprint_overall_mb = map(_number, m.groups())
            out.footprint_wording = "delta"
        elif m := _PEAK_MONITOR.search(line):
            out.peak_monitor_mb = _number(m.group(1))
        elif m := _FOOTPRINT_PEAK_RSS.search(line):
            out.footprint_init_mb, out.footprint_overall_mb = map(_number, m.groups())
            out.footprint_wording = "peak"
        elif m := _REPLACING.search(line):
            replaced, total, name, partitions = m.groups()
            out.replacements.append(
                DelegateReplacement(
                    delegate=name,
                    replaced=int(replaced),
                    total=int(total) if total else None,
                    partitions=int(partitions) if partitions else None,
                )
            )
        elif m := _APPLIED.search(line):
            name, extent, kernels = m.groups()
            out.applied.append(DelegateApplied(name, extent, int(kernels) if kernels else None))
        elif m := _NOT_APPLIED.search(line):
            out.applied.append(DelegateApplied(m.group(1), "none", 0))
        elif _ERROR.search(line):
            out.error_lines.append(line.strip())
    if out.first_us is None and out.runs and len(out.runs) >= 2:
        # The TF 1.x totals have no first inference; it is the warm-up's first run.
        out.first_us = out.runs[0].first
    return out


def finite(value: float | None) -> float | None:
    """None for a missing or NaN value (an empty Stat prints its average as nan)."""
    return None if value is None or math.isnan(value) else value
