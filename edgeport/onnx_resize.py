"""ONNX Resize's arithmetic along one axis: where each output index samples the input
(`coordinate_transformation_mode`) and the four taps of cubic convolution.

Two places compute a Resize without running onnxruntime: the converter's bicubic rewrite bakes the taps
into Gathers (TFLite has no bicubic kernel), and quant's ONNX evaluator runs Resize in PyTorch for
calibration and pruning. Both read the rules here, so they cannot drift apart. The rules live in the
spine package because neither of those packages may import the other.
"""

from __future__ import annotations

import numpy as np

# Every coordinate_transformation_mode but tf_crop_and_resize (which needs the roi input).
TRANSFORMS = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
CUBIC_COEFF_A = -0.75  # ONNX's default cubic_coeff_a (PyTorch's bicubic uses it too; TensorFlow's -0.5)


def source_coordinates(
    in_size: int, out_size: int, scale: float, mode: str, dtype: type = np.float64
) -> np.ndarray:
    """The input coordinate each output index samples, as ONNX Resize defines it. `scale` is the axis'
    scale (given, or out_size / in_size); `dtype` float32 rounds as onnxruntime does, which decides a
    nearest index at a tie."""
    if mode not in TRANSFORMS:
        raise ValueError(f"coordinate_transformation_mode {mode!r} is not one of {', '.join(TRANSFORMS)}")
    i = np.arange(out_size, dtype=dtype)
    if mode == "align_corners":
        return i * ((in_size - 1) / (out_size - 1)) if out_size > 1 else np.zeros(out_size, dtype)
    if mode == "asymmetric":
        return i / scale
    if mode == "pytorch_half_pixel" and out_size == 1:
        return np.zeros(1, dtype)
    if mode == "half_pixel_symmetric":
        return (in_size / 2) * (1 - out_size / (scale * in_size)) + (i + 0.5) / scale - 0.5
    return (i + 0.5) / scale - 0.5


def cubic_taps(
    in_size: int,
    out_size: int,
    scale: float,
    mode: str,
    a: float = CUBIC_COEFF_A,
    exclude_outside: bool = False,
    dtype: type = np.float64,
) -> tuple[np.ndarray, np.ndarray]:
    """(indices [4, out] clamped to the input, float32 weights [4, out]) of cubic convolution with
    coefficient `a`: each output element is the weighted sum of its four taps. `exclude_outside`: taps
    that fall outside the input get weight 0 and the others are renormalised (ONNX's attribute); without
    it they repeat the edge element."""
    x = source_coordinates(in_size, out_size, scale, mode, dtype)
    base = np.floor(x)
    t = x - base
    d = np.stack([t + 1, t, 1 - t, 2 - t])  # distance of each tap to the sample point
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = np.where(d <= 1, near, far)
    raw = base[None, :] + np.arange(-1, 3)[:, None]
    if exclude_outside:
        weights = np.where((raw >= 0) & (raw <= in_size - 1), weights, 0.0)
        weights = weights / weights.sum(axis=0, keepdims=True)
    indices = np.clip(raw, 0, in_size - 1)
    return indices.astype(np.int64), weights.astype(np.float32)
