"""Mixed 4/8-bit weights under a flash budget (`--quantize w4a8 --flash-budget 200KB`).

Which layers keep 8-bit weights is decided by data-free sensitivity: each weight layer alone is
stored as int4 (quant/int4.py) and the model's outputs are compared with the int8 model's on the
synthetic held-out inputs; the relative noise power it adds is that layer's cost. Layers then go
to 4 bits cheapest-noise-per-byte-saved first until the .tflite fits the budget. Noise powers of
independent layers add (to first order), so the greedy order is the knapsack's usual ratio rule;
measuring each layer in the whole model (rather than its weight error alone) counts what the
layers after it do to its error: a first conv's error is amplified, a wide layer's averages out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.quant.int4 import to_w4a8, weight_layers
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.tensors import Sample, TensorSpec
from edgeport.tflite_file import parse_tflite

_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


def parse_size(text: str, what: str = "--flash-budget") -> int:
    """'200KB' -> 204800 bytes. KB and MB are binary (1024), as flash sizes are quoted."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS or float(match.group(1)) <= 0:
        raise EdgeportError(f"{what} {text!r} is not a size", "write it as bytes or with KB/MB, e.g. 200KB")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass
class LayerCost:
    name: str
    op: str
    bytes_saved: int
    noise: float  # output noise power it adds alone, relative to the int8 output's power


def _outputs(runner: LiteRTRunner, samples: Sequence[Sample]) -> list[np.ndarray]:
    return [value for sample in samples for value in runner.run(sample).values()]


def layer_costs(
    int8_model: bytes,
    float_model: bytes,
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    samples: Sequence[Sample],
    rounding: str = "squant",
) -> list[LayerCost]:
    """Each weight layer's output noise when it alone is int4, in op order."""
    reference = _outputs(LiteRTRunner(int8_model, in_specs, out_specs), samples)
    power = sum(float(np.sum(np.asarray(r, np.float64) ** 2)) for r in reference) or 1.0
    costs = []
    for layer in weight_layers(parse_tflite(int8_model).raw):
        model, _ = to_w4a8(int8_model, float_model, [layer.name], rounding)
        got = _outputs(LiteRTRunner(model, in_specs, out_specs), samples)
        noise = sum(
            float(np.sum((np.asarray(r, np.float64) - np.asarray(g, np.float64)) ** 2))
            for r, g in zip(reference, got, strict=True)
        )
        costs.append(LayerCost(layer.name, layer.op, layer.int8_bytes - layer.int4_bytes, noise / power))
    return costs


def choose_four_bit(costs: Sequence[LayerCost], int8_size: int, budget: int) -> list[str]:
    """The layers to store as int4 so that an `int8_size` model shrinks to `budget` bytes, cheapest
    noise per saved byte first; empty when the int8 model already fits."""
    chosen: list[str] = []
    size = int8_size
    for cost in sorted(costs, key=lambda c: (c.noise / max(c.bytes_saved, 1), c.name)):
        if size <= budget:
            break
        chosen.append(cost.name)
        size -= cost.bytes_saved
    return chosen


def smallest_size(int8_model: bytes) -> int:
    """The size of `int8_model` with every weight layer in 4 bits (before flatbuffer alignment)."""
    layers = weight_layers(parse_tflite(int8_model).raw)
    return len(int8_model) - sum(layer.int8_bytes - layer.int4_bytes for layer in layers)


def budget_problem(int8_model: bytes, budget: int, slack: int = 0) -> EdgeportError | None:
    """The error when even every weight layer in 4 bits exceeds `budget` (by more than `slack` bytes)."""
    smallest = smallest_size(int8_model)
    if smallest <= budget + slack:
        return None
    return EdgeportError(
        f"the model needs {_kb(smallest)} of flash with every weight layer in 4 bits "
        f"(int8: {_kb(len(int8_model))}); the flash budget is {_kb(budget)}",
        "raise --flash-budget, or make the model smaller (fewer channels or layers)",
    )


def fit_flash_budget(
    int8_model: bytes,
    float_model: bytes,
    budget: int,
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    samples: Sequence[Sample],
    rounding: str = "squant",
) -> tuple[bytes, dict]:
    """The mixed model that fits `budget` bytes with the least measured noise, and what was chosen."""
    if (problem := budget_problem(int8_model, budget)) is not None:  # before measuring every layer
        raise problem
    costs = layer_costs(int8_model, float_model, in_specs, out_specs, samples, rounding)
    ordered = sorted(costs, key=lambda c: (c.noise / max(c.bytes_saved, 1), c.name))
    # The byte count saved per layer is exact for the weights; flatbuffer alignment can add a few
    # bytes, so the model is rebuilt with one more layer until the written file really fits.
    count = len(choose_four_bit(costs, len(int8_model), budget))
    while True:
        names = [c.name for c in ordered[:count]]
        model = to_w4a8(int8_model, float_model, names, rounding)[0] if names else int8_model
        if len(model) <= budget or count >= len(ordered):
            break
        count += 1
    if len(model) > budget:  # alignment ate the last bytes: nothing left to make 4-bit
        raise EdgeportError(
            f"the mixed model is {_kb(len(model))}, over the flash budget of {_kb(budget)}",
            "raise --flash-budget by a few KB",
        )
    four = set(names)
    return model, {
        "budget_bytes": budget,
        "size_bytes": len(model),
        "int8_size_bytes": len(int8_model),
        "four_bit_layers": len(four),
        "eight_bit_layers": len(costs) - len(four),
        "layers": [
            {
                "tensor": c.name,
                "op": c.op,
                "bits": 4 if c.name in four else 8,
                "bytes_saved_at_4_bits": c.bytes_saved,
                "noise_at_4_bits": float(f"{c.noise:.3g}"),
            }
            for c in costs
        ],
        "method": "greedy by measured output noise per byte saved (each layer alone in int4, "
        "synthetic held-out inputs)",
    }


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KB"
