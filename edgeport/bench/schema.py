"""The one result schema of `edgeport bench`: what every runner returns, written as versioned JSON.

A `BenchReport` is one run of the harness: the settings, the device, and one `BenchResult` per model,
in the order the models were given (ratios are to the first). Times are milliseconds. What a runner
cannot measure stays None; what kind of time a number is (host wall clock, instruction-derived ticks,
an estimate on the board's clock, a device's own timer) is said by `time_kind`, never implied.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# 2: OpProfile.ticks_are (required). Version-1 reports are still read: their profiles came from QEMU
# only, so their ticks are instructions (`_profiles_of_version_1`).
SCHEMA_VERSION = 2

TimeKind = Literal[
    "host-wall-clock",  # time.perf_counter around invoke on this machine
    "device-timer",  # the device's own clock (benchmark_model on Android, a board's DWT/SysTick)
    "instruction-estimate",  # QEMU -icount instructions / the board's clock: an estimate, not a measurement
]

# What one tick of an OpProfile is, so its ms (ticks at the board's clock) say what they rest on.
TicksAre = Literal[
    "instructions",  # QEMU -icount instructions, taken as one per cycle of the board's clock: an estimate
    "cycles",  # a board's own cycle counter (DWT, else SysTick) at the clock its firmware states
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceInfo(_Strict):
    """Where the numbers were measured."""

    kind: Literal["host", "tflm-host", "qemu", "android", "board"]
    description: str  # one line: "x86_64 Linux, 2 cores", "qemu mps2-an386 (Cortex-M4)", "Pixel 7, arm64-v8a"
    cpu: str = ""
    cores: int | None = None
    clock_hz: int | None = None  # the board clock an estimate is scaled by
    os: str = ""
    abi: str = ""  # Android ABI
    android_version: str = ""
    cpu_governor: str = ""
    serial: str = ""  # adb serial or serial port


class ModelInfo(_Strict):
    name: str  # as shown in tables: the file name, or the convert/package dir's name plus the variant
    path: str  # the .tflite (or package dir) measured, as given
    sha256: str  # of the .tflite
    size_bytes: int


class Stats(_Strict):
    """Summary of the per-iteration samples (ms). Median and percentiles, never the mean alone."""

    count: int
    median: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float
    std: float


class Memory(_Strict):
    peak_rss_bytes: int | None = None  # host: the measuring process's peak resident set
    arena_bytes: int | None = None  # TFLite Micro tensor arena actually used
    flash_bytes: int | None = None  # firmware ELF: text + rodata (+ data's load image)
    ram_bytes: int | None = None  # firmware: data + bss (arena included) + stack high-water mark
    stack_bytes: int | None = None  # firmware: stack high-water mark
    footprint_init_bytes: int | None = None  # benchmark_model's memory footprint lines
    footprint_overall_bytes: int | None = None


class Delegation(_Strict):
    delegate: str = "none"  # "xnnpack", "gpu", "nnapi", "cmsis-nn", "reference", "none"
    delegated_ops: int | None = None  # ops (nodes) the delegate took
    total_ops: int | None = None


class BenchSettings(_Strict):
    runner: (
        str  # the --on value as given: "host", "tflm", "qemu:mps2-an386", "adb:SERIAL", "serial:/dev/ttyACM0"
    )
    runs: int = Field(
        50, ge=1, description="Measured inferences per model (serial: as many as the firmware times)."
    )
    warmup: int = Field(5, ge=0, description="Inferences run and discarded before measuring.")
    threads: int = Field(1, ge=1, description="CPU threads (host, adb).")
    xnnpack: bool = Field(
        True, description="LiteRT's XNNPACK delegate (--no-xnnpack: builtin kernels only; host, adb)."
    )
    delegate: Literal["none", "xnnpack", "gpu", "nnapi"] | None = Field(
        None, description="Delegate benchmark_model uses on the device (adb only)."
    )
    timeout_s: float = Field(600, gt=0, description="Seconds a model may take to load or answer.")
    profile: bool = Field(
        False,
        description="Time each op of one inference with TFLite Micro's MicroProfiler and report them "
        "(qemu:BOARD; serial:PORT with a firmware flashed with `edgeport flash ... --bench-profile`).",
    )


class OpTime(_Strict):
    """One op of the profiled inference, in the order the interpreter ran it."""

    index: int  # the op's index in the model's graph
    op: str  # the runtime's name of the op ("CONV_2D")
    ticks: int  # in OpProfile.ticks_are
    ms: float  # ticks on the board's clock


class OpTypeTime(_Strict):
    """Every op of one type in the profiled inference, summed."""

    op: str
    count: int
    ticks: int
    ms: float
    share: float  # of the whole profiled inference's ticks, in [0, 1]


class OpProfile(_Strict):
    """Where one inference's time went, op by op (`--profile`)."""

    inference: int  # which measured iteration was profiled (an index into samples_ms)
    ticks_are: TicksAre  # what this profile's ticks count (the same as BenchResult.ticks)
    ticks: int  # that inference, whole
    ops: list[OpTime]
    by_type: list[OpTypeTime]  # most ticks first
    outside_ticks: int  # the inference less its ops: the interpreter's loop and the profiler itself
    outside_ms: float
    source: str = ""  # what timed the ops


class BenchResult(_Strict):
    model: ModelInfo
    runner: str
    time_kind: TimeKind
    init_ms: float | None = None  # load + allocate
    first_ms: float | None = None  # the first inference (before warmup is discarded)
    samples_ms: list[float]  # every measured iteration, in order, warmup excluded
    stats: Stats
    ticks: list[int] | None = None  # per-iteration counts before scaling (qemu: instructions; serial: cycles)
    memory: Memory = Field(default_factory=Memory)
    delegation: Delegation = Field(default_factory=Delegation)
    notes: list[str] = Field(default_factory=list)
    profile: OpProfile | None = None  # --profile: one inference op by op


class BenchReport(_Strict):
    schema_version: int = SCHEMA_VERSION
    settings: BenchSettings
    device: DeviceInfo
    results: list[BenchResult]
    tools: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _profiles_of_version_1(cls, data: Any) -> Any:
        """A version-1 report (before OpProfile.ticks_are) read as what its profiles were: QEMU
        instruction counts, the only profiling runner then."""
        if not isinstance(data, dict) or data.get("schema_version") != 1:
            return data
        results = []
        for result in data.get("results", []):
            profile = result.get("profile") if isinstance(result, dict) else None
            if isinstance(profile, dict) and "ticks_are" not in profile:
                result = {**result, "profile": {**profile, "ticks_are": "instructions"}}
            results.append(result)
        return {**data, "results": results, "schema_version": SCHEMA_VERSION}

    def ratios(self) -> list[float]:
        """Each result's median over the first's (1.0 for the first)."""
        first = self.results[0].stats.median
        return [r.stats.median / first if first > 0 else math.nan for r in self.results]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2) + "\n"


def json_schema() -> str:
    """The JSON Schema of BenchReport (`edgeport bench --schema`)."""
    return json.dumps(BenchReport.model_json_schema(), indent=2) + "\n"


def summarize(samples_ms: list[float]) -> Stats:
    """Order statistics of the samples (nearest-rank percentiles: an observed value, never interpolated)."""
    if not samples_ms:
        raise ValueError("no samples to summarize")
    ordered = sorted(samples_ms)
    n = len(ordered)

    def rank(q: float) -> float:
        return ordered[min(n - 1, max(0, math.ceil(q * n) - 1))]

    mean = sum(ordered) / n
    var = sum((x - mean) ** 2 for x in ordered) / n
    mid = n // 2
    median = ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return Stats(
        count=n,
        median=median,
        p90=rank(0.90),
        p99=rank(0.99),
        min=ordered[0],
        max=ordered[-1],
        mean=mean,
        std=math.sqrt(var),
    )
