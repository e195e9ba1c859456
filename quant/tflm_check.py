"""Run an int8 model in TFLite Micro and LiteRT on the same raw inputs and compare the raw outputs.

TFLite Micro's kernels and TensorFlow 2.19's TFLite reference kernels (OpResolverType.BUILTIN_REF)
share the requantization arithmetic (gemmlowp: doubling high multiply, then a rounding right shift,
ties away from zero), so their outputs are bit-identical. (LiteRT's reference FULLY_CONNECTED
requantizes in double precision with one rounding, since April 2025: one step off TFLM in ~0.1 %
of a dense layer's outputs, so it is not used as the reference.) LiteRT's optimized CONV_2D (ruy)
rounds ties upward instead, which differs on negative ties: measured on ResNet-20, a conv without
a fused ReLU differs from TFLM by one step in 0.04-0.12 % of its elements, and residual ADDs grow
that to a few steps deeper in the network (up to 6 inside, 1-2 at the logits). quant/modes.py
holds TFLM to bit-exactness against the reference kernels and records the optimized kernels'
difference. The runs themselves are edgeport.runtimes' (litert with kernels="reference", tflm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TflmComparison:
    samples: int
    max_diff_steps: int | None  # largest |TFLM - LiteRT| of integer outputs, in quantization steps
    max_abs_diff: float  # largest |TFLM - LiteRT| over all outputs, in the outputs' own units
    exact_fraction: float  # share of output elements that are bit-identical

    def to_dict(self) -> dict:
        return {
            "samples": self.samples,
            "max_diff_steps": self.max_diff_steps,
            "max_abs_diff": self.max_abs_diff,
            "exact_fraction": round(self.exact_fraction, 6),
        }


def compare_raw(
    litert: Sequence[Sequence[np.ndarray]], tflm: Sequence[Sequence[np.ndarray]]
) -> TflmComparison:
    steps: int | None = None
    worst, same, total = 0.0, 0, 0
    for a_sample, b_sample in zip(litert, tflm, strict=True):
        for a, b in zip(a_sample, b_sample, strict=True):
            a = np.asarray(a)
            b = np.asarray(b).reshape(a.shape)
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            if a.dtype.kind in "iu":
                steps = max(steps or 0, int(diff.max()) if diff.size else 0)
            worst = max(worst, float(diff.max()) if diff.size else 0.0)
            same += int(np.sum(diff == 0))
            total += a.size
    return TflmComparison(len(litert), steps, worst, same / max(total, 1))
