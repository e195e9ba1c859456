"""`edgeport bench --on tflm`: TFLite Micro's Python runtime on this host (edgeport.runtimes.tflm).

What it tells: the model runs in TFLite Micro (an op without a kernel is refused before anything is
measured), the arena it needs (the smallest that allocates and invokes), and a host wall-clock time.
That time is TFLite Micro's reference kernels compiled for x86, not a board's: good for comparing
models with each other, not for a board's latency (use --on qemu:BOARD or a board for that).

All of a model's inferences (first, warmup, runs) happen in one child process, so this runner does
not interleave models: each model is measured whole, one after the other.
"""

from __future__ import annotations

from edgeport.bench.hostinfo import host_device
from edgeport.bench.runner import BenchModel, RunnerOptions, SessionExtras, cli_words
from edgeport.bench.schema import BenchSettings, Delegation, DeviceInfo, Memory, TimeKind
from edgeport.errors import EdgeportError
from edgeport.manifest import tool_versions
from edgeport.options import Spell
from edgeport.tensors import TensorSpec, random_inputs
from edgeport.tflite_file import TfliteModel, verify_tflite

INPUT_SEED = 0
NOTE = (
    "host wall clock of TFLite Micro's reference kernels on x86 (tflite_micro Python runtime), not a board "
    "time; arena: the smallest that allocates and invokes"
)


def cannot_run_fix(spell: Spell = cli_words) -> str:
    """The fix for a model TFLite Micro cannot run, naming the runner option as `spell` writes it."""
    return f"measure it {spell('runner')} host (LiteRT), or replace that op for a microcontroller"


def model_inputs(model: TfliteModel, seed: int = INPUT_SEED) -> list:
    """One seeded value per model input, of its dtype and shape (a dynamic dimension taken as 1)."""
    specs = [TensorSpec(t.name, [max(1, d) for d in t.shape], t.dtype) for t in model.inputs]
    sample = random_inputs(specs, 1, seed)[0]
    return [sample[s.name] for s in specs]


def _run(model: BenchModel, count: int, settings: BenchSettings, measure_arena: bool):
    from edgeport.runtimes.tflm import run_tflm

    data = model.tflite.read_bytes()
    inputs = model_inputs(verify_tflite(data, model.tflite))
    return run_tflm(
        data, [inputs] * count, model.info.name, measure_arena=measure_arena, timeout=settings.timeout_s
    )


class TflmRunner:
    name = "tflm"
    time_kind: TimeKind = "host-wall-clock"
    interleaves = False
    uses = ()

    def __init__(self, spell: Spell = cli_words) -> None:
        self.spell = spell  # names options in its errors

    def device(self) -> DeviceInfo:
        return host_device("tflm-host", "TFLite Micro (reference kernels)")

    def tools(self) -> dict[str, str]:
        return tool_versions("tflite-micro")

    def check(self, model: BenchModel) -> None:
        """One inference: a model TFLite Micro cannot run fails here, naming the op."""
        try:
            _run(model, 1, BenchSettings(runner=self.name), measure_arena=False)
        except EdgeportError as err:
            raise EdgeportError(err.problem, cannot_run_fix(self.spell)) from err

    def open(self, model: BenchModel, settings: BenchSettings) -> TflmSession:
        return TflmSession(model, settings)


class TflmSession:
    """All of one model's inferences, run at open; `run` hands the measured ones out in order."""

    def __init__(self, model: BenchModel, settings: BenchSettings) -> None:
        self.name = model.info.name
        result = _run(model, 1 + settings.warmup + settings.runs, settings, measure_arena=True)
        ms = [s * 1e3 for s in result.invoke_seconds]
        self.init_ms: float | None = result.init_seconds * 1e3
        self.first_ms: float | None = ms[0]
        self._samples = ms[1 + settings.warmup :]
        self._arena = result.arena.measured_bytes if result.arena is not None else None

    def run(self, count: int) -> list[float]:
        if count > len(self._samples):
            raise EdgeportError(
                f"{self.name}: asked for {count} more runs, {len(self._samples)} were measured",
                "report this as an edgeport bug",
            )
        taken, self._samples = self._samples[:count], self._samples[count:]
        return taken

    def finish(self) -> SessionExtras:
        return SessionExtras(
            memory=Memory(arena_bytes=self._arena), delegation=Delegation(delegate="reference"), notes=[NOTE]
        )

    def close(self) -> None:
        """Nothing stays open: the child process ended with the run."""


def make_runner(arg: str | None, options: RunnerOptions, spell: Spell = cli_words) -> TflmRunner:
    if arg is not None:
        on = spell("runner")
        raise EdgeportError(f"{on} tflm takes no argument (got tflm:{arg})", f"write {on} tflm")
    return TflmRunner(spell)
