"""What every runner returns: the outputs of a model run and what the runtime measured along the way."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgeport.tensors import Sample


@dataclass
class ArenaUsage:
    """TFLite Micro's tensor arena after the inferences (recording allocator) and the least that fits."""

    measured_bytes: int  # smallest arena with which the interpreter allocates and invokes (bisection)
    recorded_bytes: int  # the allocator's "Arena allocation total"
    head_bytes: int
    tail_bytes: int
    categories: dict[str, int]  # allocator report lines: what -> bytes used


@dataclass
class RunResult:
    """A model run on a list of samples, in one runtime.

    `raw_outputs` are the model's own output tensors (subgraph order; int8 for an int8-I/O model);
    `outputs` the same by source name, in float and the source layout, where the runner knows the
    source names (empty otherwise). Measurements a runtime does not make stay empty / None; the bench
    harness adds its own (peak RSS, delegated ops) as further optional fields here.
    """

    runtime: str  # "litert", "litert-reference", "onnxruntime", "tflite-micro"
    raw_outputs: list[list[np.ndarray]] = field(repr=False)
    outputs: list[Sample] = field(repr=False, default_factory=list)
    invoke_seconds: list[float] = field(default_factory=list)  # host wall time of each invoke, in order
    init_seconds: float | None = None  # host wall time to load the model and allocate its tensors
    arena: ArenaUsage | None = None  # TFLite Micro only, when asked to measure it
    log: str = ""  # what the runtime printed, when it was captured
