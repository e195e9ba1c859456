"""Host LiteRT latency of an Android package's variants, measured once by `edgeport package`.

One `edgeport bench --on host` run (edgeport.bench's Python API) over every variant: each in its own
LiteRT child process, one thread, XNNPACK (LiteRT's default CPU delegate), seeded inputs, the runs
interleaved in rounds across the variants so that a busy machine's load falls on all of them alike.
These are this machine's CPU timings, not a phone's: `edgeport bench --on adb` measures a phone.

Timings differ between runs, so they never enter the android section: they go to the manifest's `run`
block (run.measured["android"]) with the hashes of the READMEs that show them (record()), and reach the
READMEs through VariantEntry.latency, which the section does not serialize.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pydantic import Field

from edgeport.bench.runner import BenchModel, Runner
from edgeport.bench.schema import BenchReport, BenchResult, BenchSettings
from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest, Record

# A small model's cost is each variant's process start, LiteRT load and warm-up, not its runs; 20 runs bound
# a large model's cost and still give a median and a p90 that are observed values.
RUNS = 20
WARMUP = 3
THREADS = 1
SETTINGS = BenchSettings(runner="host", runs=RUNS, warmup=WARMUP, threads=THREADS, xnnpack=True)
# Finding which variant ended an interleaved run: each alone, one run.
_PROBE = SETTINGS.model_copy(update={"runs": 1, "warmup": 0})
COLUMN = "host LiteRT, this machine, median ms"


class VariantLatency(Record):
    """One variant's timing, or why LiteRT could not time it on this host (`problem`, runs 0)."""

    OPTIONAL = ("median_ms", "p90_ms", "problem")

    median_ms: float | None = None
    p90_ms: float | None = None
    runs: int
    threads: int
    delegate: str  # "xnnpack": LiteRT's default CPU delegate; the nodes it takes are in the section
    time_kind: str  # "host-wall-clock"
    problem: str | None = None


class ShownIn(Record):
    sha256: str
    size_bytes: int


class PackageLatency(Record):
    runner: str  # the bench runner: "host"
    device: str  # where: "x86_64 Linux, 2 cores, <CPU>"
    warmup: int
    interleaved: bool  # the variants' runs alternated in rounds (edgeport/bench/harness.py)
    tools: dict[str, str] = Field(default_factory=dict)  # the LiteRT that ran them
    variants: dict[str, VariantLatency]
    files: dict[str, ShownIn] = Field(default_factory=dict)  # the files showing these numbers, as written


def host_runner() -> Runner:
    from edgeport.targets.android.bench_host import HostRunner

    return HostRunner()


def measure(files: Mapping[str, Path], runner: Runner | None = None) -> PackageLatency:
    """Time every variant (name -> its .tflite) once with the host runner. A variant LiteRT cannot load
    or that ends its process gets a one-line `problem` instead of numbers; the others are still timed."""
    from edgeport.bench.models import resolve_models

    runner = runner or host_runner()
    names = list(files)
    models = dict(zip(names, resolve_models([files[n] for n in names]), strict=True))
    problems: dict[str, str] = {}
    for name, model in models.items():
        try:
            runner.check(model)
        except EdgeportError as exc:
            problems[name] = reason(exc, model)
    timed = [n for n in names if n not in problems]
    report = _bench(runner, [models[n] for n in timed], SETTINGS)
    if isinstance(report, EdgeportError):
        # One child failed and took the interleaved run with it: find which, each alone and briefly, and
        # time the rest together again (a second failure is then every remaining variant's reason).
        for name in timed:
            alone = _bench(runner, [models[name]], _PROBE)
            if isinstance(alone, EdgeportError):
                problems[name] = reason(alone, models[name])
        timed = [n for n in timed if n not in problems]
        report = _bench(runner, [models[n] for n in timed], SETTINGS)
        if isinstance(report, EdgeportError):
            problems.update({n: reason(report, models[n]) for n in timed})
            timed, report = [], None
    results = dict(zip(timed, report.results, strict=True)) if report else {}
    return PackageLatency(
        runner=SETTINGS.runner,
        device=report.device.description if report else runner.device().description,
        warmup=SETTINGS.warmup,
        interleaved=runner.interleaves and len(timed) > 1,
        tools={k: v for k, v in (report.tools if report else {}).items() if k != "edgeport"},
        variants={
            n: _timed(results[n], SETTINGS) if n in results else _untimed(problems[n], runner) for n in names
        },
    )


def _timed(result: BenchResult, settings: BenchSettings) -> VariantLatency:
    return VariantLatency(
        median_ms=result.stats.median,
        p90_ms=result.stats.p90,
        runs=result.stats.count,
        threads=settings.threads,
        delegate=result.delegation.delegate,
        time_kind=result.time_kind,
    )


def _bench(
    runner: Runner, models: Sequence[BenchModel], settings: BenchSettings
) -> BenchReport | EdgeportError | None:
    """The bench report, the error that ended it, or None when there is nothing to time."""
    from edgeport.bench import bench

    if not models:
        return None
    try:
        return bench(models, runner, settings, progress=False)
    except EdgeportError as exc:
        return exc


def _untimed(problem: str, runner: Runner) -> VariantLatency:
    delegate = "xnnpack" if SETTINGS.xnnpack else "none"
    return VariantLatency(
        runs=0, threads=THREADS, delegate=delegate, time_kind=runner.time_kind, problem=problem
    )


def reason(error: EdgeportError, model: BenchModel) -> str:
    """The error as one line about this variant (the bench names the file, which the row already does)."""
    text = " ".join(str(error.problem).split())
    prefix = f"{model.info.name}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def cell(latency: VariantLatency | None) -> str:
    """A README table cell: the median in ms, or why the variant was not timed."""
    if latency is None:
        return ""
    if latency.median_ms is None:
        return "not timed: " + (latency.problem or "no result").replace("|", "\\|")
    return f"{latency.median_ms:.3g}"


def summary(latency: VariantLatency | None) -> str:
    """The variant's part of the package's summary line: ' 0.0219 ms', ' not timed', or nothing."""
    if latency is None:
        return ""
    return " not timed" if latency.median_ms is None else f" {latency.median_ms:.3g} ms"


def describe(latency: PackageLatency) -> str:
    """What the latency column is, for the README under the table."""
    litert = f"LiteRT {latency.tools['ai-edge-litert']}" if "ai-edge-litert" in latency.tools else "LiteRT"
    timed = [v for v in latency.variants.values() if v.median_ms is not None]
    runs = "/".join(str(n) for n in sorted({v.runs for v in timed})) or "no"
    counts = sorted({v.threads for v in latency.variants.values()})
    threads = "/".join(str(n) for n in counts) + (" thread" if counts == [1] else " threads")
    return (
        f"{COLUMN}: the median of {runs} runs of each variant after {latency.warmup} warm-up runs, {litert} "
        f"with XNNPACK on {threads}, seeded random inputs, "
        f"{'the runs of the variants interleaved, ' if latency.interleaved else ''}wall clock on the machine "
        f"that packaged it ({latency.device}). A phone's CPU may rank them differently: `edgeport bench "
        "OUTDIR:VARIANT --on adb` times one on a device. Timings differ between runs; edgeport.json keeps "
        "these (with p90) in its `run` block."
    )


def record(
    manifest: Manifest, key: str, latency: PackageLatency | None, shown_in: Iterable[str] = ()
) -> None:
    """Put `latency` into run.measured[key] (None: remove an earlier package's) with the sha256 and size of
    the files in `shown_in` that show it, whose artifacts then carry neither: the rest of the manifest
    stays the same for the same inputs."""
    manifest.run.measured.pop(key, None)
    if latency is None:
        return
    shown = set(shown_in)
    files = {}
    for art in manifest.artifacts:
        if art.path in shown:
            files[art.path] = ShownIn(sha256=art.sha256, size_bytes=art.size_bytes)
            art.sha256, art.size_bytes = "", 0
    manifest.run.measured[key] = latency.model_copy(update={"files": files}).model_dump(mode="json")
