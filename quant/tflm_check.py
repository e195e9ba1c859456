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
difference.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.tflite_file import parse_tflite

TIMEOUT_S = 600


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


def run_tflm(
    model: bytes, raw_inputs: Sequence[Sequence[np.ndarray]], name: str = "model"
) -> list[list[np.ndarray]]:
    """Raw outputs (subgraph order) per sample from the TFLite Micro runtime, in a child process.

    A model TFLM cannot run raises EdgeportError naming the op and the node.
    """
    n_outputs = len(parse_tflite(model).outputs)
    with tempfile.TemporaryDirectory(prefix="edgeport-tflm-") as tmp:
        model_path, in_path, out_path = Path(tmp) / "m.tflite", Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        model_path.write_bytes(model)
        np.savez(
            in_path,
            **{
                f"s{i}_in{j}": np.ascontiguousarray(a)
                for i, s in enumerate(raw_inputs)
                for j, a in enumerate(s)
            },
        )
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "edgeport.quant._tflm_run",
                str(model_path),
                str(in_path),
                str(out_path),
                str(n_outputs),
            ],
            capture_output=True,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            timeout=TIMEOUT_S,
        )
        if done.returncode != 0 or not out_path.exists():
            raise tflm_failure(name, done.stderr + done.stdout, done.returncode)
        with np.load(out_path) as saved:
            return [[saved[f"s{i}_out{k}"] for k in range(n_outputs)] for i in range(len(raw_inputs))]


def tflm_failure(name: str, log: str, returncode: int) -> EdgeportError:
    """TFLM's own error, as one line naming the op and node, with what to do instead."""
    from edgeport.targets.cortex_m.arena import _FAILED_NODE, _MISSING_OP

    fix = (
        "TFLite Micro has no int8 kernel for it: keep float I/O with --io float, use --quantize dynamic "
        "or float16 for Android, or replace the op in the model"
    )
    node = _FAILED_NODE.search(log)
    if node:
        lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not _FAILED_NODE.search(ln)]
        detail = next((ln for ln in lines if "Traceback" not in ln and not ln.startswith("File ")), "")
        return EdgeportError(
            f"{name}: TFLite Micro cannot {node.group(3)} op {node.group(1)} at node {node.group(2)}"
            + (f" ({detail[:160]})" if detail else ""),
            fix,
        )
    missing = _MISSING_OP.search(log)
    if missing:
        return EdgeportError(f"{name}: TFLite Micro has no kernel for op {missing.group(1)}", fix)
    last = [ln for ln in log.splitlines() if ln.strip()]
    what = (
        f"signal {-returncode}" if returncode < 0 else (last[-1][:160] if last else f"exit code {returncode}")
    )
    return EdgeportError(f"{name}: TFLite Micro failed to run the model ({what})", fix)


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
