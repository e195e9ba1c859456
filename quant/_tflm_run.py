"""Child process: run a model on several raw inputs in the TFLite Micro Python runtime.

`python -m edgeport.quant._tflm_run MODEL INPUTS.npz OUTPUTS.npz N_OUTPUTS`; INPUTS.npz holds `s{i}_in{j}`
(sample i, subgraph input j), OUTPUTS.npz gets `s{i}_out{k}`. A separate process, so a native
crash in TFLM cannot take the converter down; its stderr carries TFLM's error (op, node).
"""

from __future__ import annotations

import sys

import numpy as np

ARENA_FACTOR = 10  # generous: this run checks outputs, targets/cortex_m measures the real arena
MIN_ARENA = 1 << 20


def main(argv: list[str]) -> int:
    model_path, inputs_path, outputs_path, n_outputs = argv
    from tflite_micro.python.tflite_micro import runtime

    with open(model_path, "rb") as handle:
        model = handle.read()
    arena = max(MIN_ARENA, ARENA_FACTOR * len(model))
    interpreter = runtime.Interpreter.from_bytes(model, arena_size=arena)
    results = {}
    with np.load(inputs_path) as inputs:
        samples = sorted({int(k.split("_")[0][1:]) for k in inputs.files})
        for i in samples:
            j = 0
            while f"s{i}_in{j}" in inputs.files:
                interpreter.set_input(inputs[f"s{i}_in{j}"], j)
                j += 1
            interpreter.invoke()
            for k in range(int(n_outputs)):
                results[f"s{i}_out{k}"] = np.array(interpreter.get_output(k))
    np.savez(outputs_path, **results)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
