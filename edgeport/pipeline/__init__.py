"""`edgeport convert` as a Python API: named stages over one state object (stages.py, state.py).

Where things go:
- a PyTorch pass (pruning, ...): one module + one line in torch_passes.py's TORCH_PASSES;
- an ONNX pass: one module + one line in onnx_passes.py's ONNX_PASSES (an onnx2tf rewrite: one module
  in converters/rewrites/ + one line in its REWRITES);
- a stage: a function over ConvertState + one line in stages.py's STAGES.
Everything is written to a staging directory that replaces OUTDIR only when every stage passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edgeport.converters.onnx_to_tflite import ConversionFailed
from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.outdir import staged_outdir
from edgeport.pipeline.onnx_passes import ONNX_PASSES
from edgeport.pipeline.passes import Pass, PassReport, check_names
from edgeport.pipeline.stages import FLOAT32_TOLERANCE, STAGES, Stage
from edgeport.pipeline.state import ConvertOptions, ConvertState, StageObserver
from edgeport.pipeline.torch_passes import TORCH_PASSES
from edgeport.quant.section import QuantSection
from edgeport.quant.tflm_ops import OP_REPLACEMENTS

__all__ = [
    "FLOAT32_TOLERANCE",
    "ConvertOptions",
    "ConvertResult",
    "StageObserver",
    "all_passes",
    "convert_model",
]


@dataclass
class ConvertResult:
    outdir: Path
    manifest: Manifest
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, in run order
    pass_reports: list[PassReport] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # the load stage's, before the passes' warnings

    def summary(self) -> str:
        ver = self.manifest.verification
        worst: dict[str, float] = {}
        for err in ver.errors if ver else []:
            worst[err.stage] = max(worst.get(err.stage, 0.0), err.max_rel_error)
        checks = ", ".join(f"{stage} {rel:.1e}" for stage, rel in worst.items())
        tfl = self.manifest.artifact("model_float32.tflite")
        ops = sum(tfl.op_counts.values())
        notes = "".join(f", {h}" for h in (r.headline() for r in self.pass_reports) if h)
        line = (
            f"converted in {self.seconds:.1f}s -> {self.outdir}: {ops} ops{notes}, "
            f"layout {self.manifest.layout}; "
            f"max rel. error vs {ver.reference if ver else '?'}: {checks}"
        )
        quant = QuantSection.find(self.manifest)
        line = f"{line}; {quant.describe()}" if quant else line
        line = f"{line}; {where_the_time_went(self.timings)}" if self.timings else line
        notes = [*self.warnings, *(w for r in self.pass_reports for w in r.warnings_())]
        return "\n".join([line] + [f"warning: {w}" for w in notes])


def where_the_time_went(timings: dict[str, float], top: int = 3) -> str:
    """`most time: quantize 141.0s, tflite 2.3s, export 0.9s`: the slowest stages, slowest first."""
    slowest = sorted(timings.items(), key=lambda item: -item[1])[:top]
    return "most time: " + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in slowest)


def all_passes() -> list[tuple[str, Pass]]:
    """(kind, pass) for every registered pass, in the order they run."""
    return [("pytorch", p) for p in TORCH_PASSES] + [("onnx", p) for p in ONNX_PASSES]


def convert_model(opts: ConvertOptions, observer: StageObserver | None = None) -> ConvertResult:
    """Convert and verify; raises EdgeportError (nothing written) on any failure."""
    started = time.perf_counter()
    check_names(opts.skip_passes, [p.name for _, p in all_passes()] + [r.name for r in OP_REPLACEMENTS])
    state = ConvertState(options=opts)
    if observer is not None:
        state.observer = observer
    # A bad SOURCE is refused before the staging directory exists.
    load, *rest = STAGES
    _run(load, state)
    with staged_outdir(Path(opts.outdir), opts.force) as stage_dir:
        state.stage_dir = stage_dir
        for stage in rest:
            _run(stage, state)
    return ConvertResult(
        outdir=Path(opts.outdir),
        manifest=state.manifest,
        seconds=time.perf_counter() - started,
        timings=state.timings,
        pass_reports=state.pass_reports,
        warnings=list(state.source.warnings) if state.source else [],
    )


def _run(stage: Stage, state: ConvertState) -> None:
    if not stage.when(state):
        return
    observer = state.observer
    state.running = stage.name
    observer.started(stage.name)
    started = time.perf_counter()
    try:
        stage.run(state)
    except Exception as exc:
        # EdgeportErrors are already the user's message, except onnx2tf giving up (ConversionFailed).
        if stage.failure is None or (
            isinstance(exc, EdgeportError) and not isinstance(exc, ConversionFailed)
        ):
            raise
        observer.started(f"{stage.name} failed; finding where")
        raise stage.failure(state, exc) from exc
    state.timings[stage.name] = time.perf_counter() - started
    observer.finished(stage.name, state.timings[stage.name])
