"""Child process: run a (verified) model in the TFLite Micro Python runtime.

Run as `python -m edgeport.targets.cortex_m._tflm_probe MODEL ARENA INPUTS.npz OUTPUTS.npz N_OUTPUTS`.
It is a separate process so a native crash in TFLM cannot take the CLI down. It writes to stdout
the RecordingMicroAllocator report for one inference with a generous arena, then
`MINIMUM_ARENA <bytes>`: the smallest arena (in TFLM's 16-byte units) with which the interpreter
allocates and invokes. That can exceed the recorded total, because the memory planner borrows
temporary space while planning that the report does not count.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import numpy as np

UNIT = 16


def _run(runtime, model: bytes, arena_size: int, inputs, n_outputs: int):
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    for index in range(len(inputs.files)):
        interpreter.set_input(inputs[f"input_{index}"], index)
    interpreter.invoke()
    return interpreter, [np.array(interpreter.get_output(i)) for i in range(n_outputs)]


def _fits(runtime, model: bytes, arena_size: int, inputs, n_outputs: int) -> bool:
    try:
        _run(runtime, model, arena_size, inputs, n_outputs)
    except RuntimeError:
        return False
    return True


def _native_stderr_of(action) -> str:
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


def main(argv: list[str]) -> int:
    model_path, arena_size, inputs_path, outputs_path, n_outputs = argv
    from tflite_micro.python.tflite_micro import runtime

    with open(model_path, "rb") as handle:
        model = handle.read()
    inputs, count = np.load(inputs_path), int(n_outputs)
    interpreter, outputs = _run(runtime, model, int(arena_size), inputs, count)
    np.savez(outputs_path, **{f"output_{i}": out for i, out in enumerate(outputs)})
    report = _native_stderr_of(interpreter.print_allocations)
    print(report, flush=True)
    recorded = int(re.search(r"Arena allocation total (\d+) bytes", report).group(1))

    # Smallest working arena, by bisection in 16-byte units: `high` works, `low` does not.
    # Failed attempts print TFLM's allocation errors; they are expected, so they are discarded.
    def search() -> int:
        if _fits(runtime, model, recorded, inputs, count):
            return recorded
        low, high = recorded, recorded + UNIT
        while not _fits(runtime, model, high, inputs, count):
            low, high = high, recorded + 2 * (high - recorded)
        while high - low > UNIT:
            mid = (low + high) // 2 // UNIT * UNIT
            if _fits(runtime, model, mid, inputs, count):
                high = mid
            else:
                low = mid
        return high

    result: list[int] = []
    _native_stderr_of(lambda: result.append(search()))
    print(f"MINIMUM_ARENA {result[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
