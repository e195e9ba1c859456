"""Child process: run a model on raw inputs in the TFLite Micro Python runtime (see runtimes/tflm.py).

`python -m edgeport.runtimes._tflm_child MODEL ARENA INPUTS.npz OUTPUTS.npz N_OUTPUTS MEASURE`.
INPUTS.npz holds `s{i}_in{j}` (sample i, subgraph input j); OUTPUTS.npz gets `s{i}_out{k}`,
`invoke_seconds` and `init_seconds`. A separate process, so a native crash in TFLM cannot take the
caller down; its stderr carries TFLM's error (op, node).

With MEASURE=1 it then prints to stdout the RecordingMicroAllocator report (what stays allocated
after the inferences) and `MINIMUM_ARENA <bytes>`: the smallest arena (in TFLM's 16-byte units)
with which the interpreter allocates and invokes on the first sample. That can exceed the recorded
total, because the memory planner borrows temporary space while planning that the report does not
count.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

UNIT = 16


def _interpreter(runtime: Any, model: bytes, arena_size: int) -> Any:
    return runtime.Interpreter.from_bytes(model, arena_size=arena_size)


def _invoke(interpreter: Any, sample: list[np.ndarray], n_outputs: int) -> tuple[list[np.ndarray], float]:
    """The outputs, and the wall time of the invoke alone."""
    for index, value in enumerate(sample):
        interpreter.set_input(value, index)
    start = time.perf_counter()
    interpreter.invoke()
    seconds = time.perf_counter() - start
    return [np.array(interpreter.get_output(k)) for k in range(n_outputs)], seconds


def _fits(runtime: Any, model: bytes, arena_size: int, sample: list[np.ndarray], n_outputs: int) -> bool:
    try:
        _invoke(_interpreter(runtime, model, arena_size), sample, n_outputs)
    except RuntimeError:
        return False
    return True


def _native_stderr_of(action: Callable[[], Any]) -> str:
    """What native code prints on fd 2 while `action` runs."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            action()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        return capture.read().decode(errors="replace")


def minimum_arena(fits: Callable[[int], bool], recorded: int) -> int:
    """Smallest working arena, by bisection in 16-byte units from the recorded total upwards."""
    if fits(recorded):
        return recorded
    low, high = recorded, recorded + UNIT  # `high` works once the first loop ends, `low` never does
    while not fits(high):
        low, high = high, recorded + 2 * (high - recorded)
    while high - low > UNIT:
        mid = (low + high) // 2 // UNIT * UNIT
        if fits(mid):
            high = mid
        else:
            low = mid
    return high


def main(argv: list[str]) -> int:
    model_path, arena_size, inputs_path, outputs_path, n_outputs, measure = argv
    from tflite_micro.python.tflite_micro import runtime

    with open(model_path, "rb") as handle:
        model = handle.read()
    count = int(n_outputs)
    with np.load(inputs_path) as saved:
        n_samples = len({key.split("_")[0] for key in saved.files})
        n_inputs = [sum(key.startswith(f"s{i}_") for key in saved.files) for i in range(n_samples)]
        samples = [[saved[f"s{i}_in{j}"] for j in range(n_inputs[i])] for i in range(n_samples)]
    start = time.perf_counter()
    interpreter = _interpreter(runtime, model, int(arena_size))
    init_seconds = time.perf_counter() - start
    results: dict[str, np.ndarray] = {}
    seconds = []
    for i, sample in enumerate(samples):
        outputs, took = _invoke(interpreter, sample, count)
        seconds.append(took)
        results.update({f"s{i}_out{k}": out for k, out in enumerate(outputs)})
    np.savez(outputs_path, invoke_seconds=np.array(seconds), init_seconds=np.array(init_seconds), **results)
    if measure != "1":
        return 0
    report = _native_stderr_of(interpreter.print_allocations)
    print(report, flush=True)
    recorded = int(re.search(r"Arena allocation total (\d+) bytes", report).group(1))

    # Failed attempts print TFLM's allocation errors; they are expected, so they are discarded.
    def fits(size: int) -> bool:
        return _fits(runtime, model, size, samples[0], count)

    found: list[int] = []
    _native_stderr_of(lambda: found.append(minimum_arena(fits, recorded)))
    print(f"MINIMUM_ARENA {found[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
