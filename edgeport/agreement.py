"""How far two runs of a model are apart, per output: the worst absolute and relative error over
all samples, or why the two cannot be compared at all (shapes differ, NaN or inf on either side).

Relative error of an output is max|y - ref| / max|ref|: elementwise relative error explodes near
zero, while this scale-aware form is what "agrees to 1e-4" means for a whole tensor.

An output with a known natural scale (a probability from a Sigmoid or Softmax) may get a floor under
max|ref|: where such a map is near 0 everywhere (a detector on an input with nothing to detect), max|ref|
is tiny and kernels' absolute rounding (about 1e-7 near 0) would read as a large relative error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from edgeport.manifest import StageError
from edgeport.tensors import Sample


def compare(
    stage: str,
    reference: Sequence[Sample],
    candidate: Sequence[Sample],
    scale_floors: Mapping[str, float] | None = None,
) -> list[StageError]:
    """Worst absolute and relative error per output over all samples; `scale_floors` (by output name)
    is the least max|ref| an output's error is divided by.

    An output that cannot be measured (its shape differs, or NaN / inf on either side) gets NaN
    errors and `problem` saying why: NaN would otherwise vanish in max() and pass as agreement.
    """
    errors = []
    for name in reference[0]:
        problem = _unmeasurable(stage, name, reference, candidate)
        if problem is not None:
            nan = float("nan")
            errors.append(
                StageError(stage=stage, output=name, max_abs_error=nan, max_rel_error=nan, problem=problem)
            )
            continue
        worst_abs, scale = 0.0, 0.0
        for ref, got in zip(reference, candidate, strict=True):
            r = np.asarray(ref[name], dtype=np.float64)
            g = np.asarray(got[name], dtype=np.float64)
            worst_abs = max(worst_abs, float(np.max(np.abs(r - g))) if r.size else 0.0)
            scale = max(scale, float(np.max(np.abs(r))) if r.size else 0.0)
        floor = (scale_floors or {}).get(name, 0.0)
        floored = floor > scale
        scale = max(scale, floor)
        rel = worst_abs / scale if scale > 0 else worst_abs
        errors.append(
            StageError(
                stage=stage,
                output=name,
                max_abs_error=worst_abs,
                max_rel_error=rel,
                scale_floor=floor if floored else None,
            )
        )
    return errors


def _non_finite(x: np.ndarray) -> int:
    x = np.asarray(x)
    return int(x.size - np.count_nonzero(np.isfinite(x))) if x.dtype.kind in "fc" else 0


# How a problem of the reference itself starts (not of the stage compared with it).
REFERENCE_NOT_FINITE = "the reference output"


def _unmeasurable(
    stage: str, name: str, reference: Sequence[Sample], candidate: Sequence[Sample]
) -> str | None:
    """Why output `name` of `stage` cannot be compared with the reference, or None."""
    for i, (ref, got) in enumerate(zip(reference, candidate, strict=True)):
        where = f"on verification input {i + 1} of {len(reference)}"
        if name not in got:
            return f"the {stage} model has no output {name!r}"
        r, g = np.asarray(ref[name]), np.asarray(got[name])
        if r.shape != g.shape:
            return (
                f"the {stage} output {name!r} has shape {list(g.shape)} but the reference's has "
                f"{list(r.shape)} (a shape mismatch, not a numeric error)"
            )
        if bad := _non_finite(r):
            return f"{REFERENCE_NOT_FINITE} {name!r} has {bad} NaN or inf value(s) of {r.size} {where}"
        if bad := _non_finite(g):
            return (
                f"the {stage} output {name!r} has {bad} NaN or inf value(s) of {g.size} {where}, "
                "where the reference is finite"
            )
    return None
