"""How close a quantized model is to the float one: SQNR per output and the worst layers.

SQNR = 10 log10(sum(y_float^2) / sum((y_float - y_quant)^2)) in dB over all held-out samples:
scale-free, so outputs of any magnitude compare, and additive (every 6 dB halves the error's
RMS). Layers are compared by running both .tflite files with every intermediate tensor kept and
matching activations by tensor name and shape (the TFLite converter names an activation after the
Keras ops fused into it, the same in the float and the quantized model). A layer's SQNR is
cumulative: it includes the error of every layer before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeport.runtimes.litert import LiteRTRunner
from edgeport.tensors import Sample, TensorSpec

WORST_LAYERS = 5


def sqnr_db(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> float:
    signal = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in reference)
    noise = sum(
        float(np.sum((np.asarray(r, np.float64) - np.asarray(c, np.float64)) ** 2))
        for r, c in zip(reference, candidate, strict=True)
    )
    if noise == 0:
        return float("inf")
    if signal == 0:
        return float("-inf")
    return 10.0 * np.log10(signal / noise)


def _activations(runner: LiteRTRunner) -> dict[str, int]:
    """Name -> tensor index of every operator output (weights and constants excluded)."""
    interp = runner.interpreter
    outputs = {i for op in interp._get_ops_details() for i in op["outputs"]}
    return {d["name"]: d["index"] for d in interp.get_tensor_details() if d["index"] in outputs}


def fidelity_report(
    float_model: bytes,
    quant_model: bytes,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    samples: Sequence[Sample],
    worst: int = WORST_LAYERS,
) -> dict[str, Any]:
    """Per-output SQNR and the `worst` intermediate tensors by SQNR, on the same float samples."""
    ref = LiteRTRunner(float_model, inputs, outputs, preserve_all_tensors=True)
    got = LiteRTRunner(quant_model, inputs, outputs, preserve_all_tensors=True)
    ref_acts, got_acts = _activations(ref), _activations(got)
    shared = [
        (name, ref_acts[name], got_acts[name])
        for name in got_acts
        if name in ref_acts
        and tuple(ref.details[ref_acts[name]]["shape"]) == tuple(got.details[got_acts[name]]["shape"])
    ]
    per_output: dict[str, tuple[list, list]] = {s.name: ([], []) for s in outputs}
    per_layer: dict[str, tuple[list, list]] = {name: ([], []) for name, _, _ in shared}
    for sample in samples:
        r, g = ref.run(sample), got.run(sample)
        for spec in outputs:
            per_output[spec.name][0].append(r[spec.name])
            per_output[spec.name][1].append(g[spec.name])
        for name, ri, gi in shared:
            per_layer[name][0].append(ref.tensor(ri))
            per_layer[name][1].append(got.tensor(gi))
    scored = sorted((sqnr_db(*per_layer[name]), name) for name, _, _ in shared)
    layers = [{"tflite_name": name, "sqnr_db": _round(value)} for value, name in scored]
    # The I/O tensors are reported per output; the worst layers are the internal ones.
    io_names = {ref.details[i]["name"] for _, i in ref.inputs + ref.outputs}
    internal = [e for e in layers if e["tflite_name"] not in io_names]
    return {
        "samples": len(samples),
        "outputs": [{"name": name, "sqnr_db": _round(sqnr_db(*pair))} for name, pair in per_output.items()],
        "layers_compared": len(internal),
        "worst_layers": internal[:worst],
    }


def _round(x: float) -> float | None:
    """JSON has no infinity: an error-free tensor (infinite SQNR) is recorded as null."""
    return round(float(x), 2) if np.isfinite(x) else None
