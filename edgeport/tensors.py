"""The tensors every stage passes around: a model input/output described in the source's terms, and
samples (one value per named tensor) in the source layout.

The .tflite may hold a tensor channels-last where the source (PyTorch / ONNX) has it channels-first;
`TensorSpec.channels_last` records that, and the two moves below convert between the layouts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Sample = dict[str, np.ndarray]

# The values an integer (index) input is drawn from when its range is not given (--input-range):
# small non-negative integers, valid indices for any table of 8 rows or more.
DEFAULT_INDEX_RANGE = (0, 7)


@dataclass
class TensorSpec:
    name: str
    shape: list[int]  # in the source (PyTorch / ONNX) layout
    dtype: str = "float32"
    channels_last: bool = False  # the .tflite holds this tensor with the channel axis moved last


def to_channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 1, -1) if x.ndim >= 3 else x


def to_channels_first(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1) if x.ndim >= 3 else x


def index_values(
    rng: np.random.Generator, spec: TensorSpec, low: int | None = None, high: int | None = None
) -> np.ndarray:
    """One value of an integer (index) input, uniform over low..high inclusive, DEFAULT_INDEX_RANGE when
    not given: the one integer draw of verification, calibration and random inputs."""
    if low is None or high is None:
        low, high = DEFAULT_INDEX_RANGE
    return rng.integers(low, high + 1, size=spec.shape).astype(spec.dtype)


def random_inputs(specs: Sequence[TensorSpec], num_samples: int, seed: int) -> list[Sample]:
    """Standard-normal floats (small non-negative integers for index inputs), reproducible by seed."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(num_samples):
        sample = {}
        for spec in specs:
            if np.dtype(spec.dtype).kind in "iu":
                sample[spec.name] = index_values(rng, spec)
            else:
                sample[spec.name] = rng.standard_normal(spec.shape).astype(spec.dtype)
        samples.append(sample)
    return samples


def signature_name(name: str) -> str:
    """A tensor name usable as a TFLite signature key: word characters, not starting with a digit."""
    cleaned = re.sub(r"\W+", "_", name).strip("_") or "tensor"
    return f"t_{cleaned}" if cleaned[0].isdigit() else cleaned
