"""Activation ranges for int8: min/max, percentile and MSE-optimal clipping, from observed values.

TFLite's converter sets every activation's int8 range to the min/max it saw on the calibration
samples. One rare large value then stretches the quantization step for all the others; clipping
the range trades a large error on a few outliers for a smaller rounding error everywhere else.
These are pure functions over a `Histogram` of one tensor's float values (quant/int8.py collects
the histograms in LiteRT and hands the chosen ranges to the TFLite quantizer):

* `minmax`: the observed extremes, what the converter does.
* `percentile`: the lower and upper `PERCENTILE`-th percentiles, each tail clipped on its own.
  Two one-sided percentiles rather than one of |x|: TFLite int8 activations are asymmetric (a
  zero point), and activations are skewed (ReLU outputs, residual sums), so a |x| percentile
  would set the short tail from the long one.
* `mse`: the range whose int8 quantization (TFLite's asymmetric grid with an integer zero point)
  gives the smallest mean squared error on the observed values, by grid search over shrink
  factors of both ends.

A range always contains 0 (the TFLite quantizer widens it to do so) and never exceeds min/max.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

RANGE_METHODS = ("minmax", "percentile", "mse")
# Bins per histogram. The MSE search below goes down to 1/50 of the observed range; with 2048
# bins a bin is then ~1/6 of the finest int8 step (and ~1/8 of a step at the full range), fine
# enough for the within-bin uniform model the error integral uses. 16 KB per tensor.
HISTOGRAM_BINS = 2048
# 99.999, measured: ResNet-20 int8 (int8 I/O), output SQNR vs float on CIFAR-10 test images
# 500-2499 for 99.9 / 99.99 / 99.999 / min-max: 17.5 / 26.8 / 27.9 / 26.9 dB calibrated on the
# default distilled inputs, 14.1 / 22.0 / 25.2 / 25.5 dB on 64 real images. 99.99 (TensorRT's
# default) clips ~100 values per tail of a tensor that sees 10^6 values on 64 samples, and on real
# images those tails recur beyond the calibration set; 99.999 clips ~10, the outliers.
PERCENTILE = 99.999
# Shrink factors of the MSE grid search: geometric from 1 (min/max) down to 0.02, 96 steps (4 %
# apart). A Gaussian body with rare 10-20 sigma outliers has its optimum near 4 sigma, i.e. a
# factor of 0.2-0.4; 0.02 leaves room for heavier tails.
MSE_MIN_FACTOR = 0.02
MSE_STEPS = 96
# Rounds of the per-end refinement after the joint search (each end searched with the other fixed).
MSE_ROUNDS = 2

INT8_MIN, INT8_MAX = -128, 127


@dataclass
class Histogram:
    """Counts of one tensor's nonzero values in bins over [low, high], plus the exact zeros.

    0 is a bin edge (the bins on each side of it are uniform), so the mass of exact zeros that
    ReLU outputs and padding produce is kept apart: TFLite's zero point makes 0 exactly
    representable, and spreading those zeros over a bin would invent rounding error for them.
    Values outside [low, high] are counted in the end bins.
    """

    edges: np.ndarray  # float64, increasing; low, ..., 0, ..., high
    counts: np.ndarray = field(repr=False)  # int64, one per bin
    zeros: int = 0

    @classmethod
    def over(cls, low: float, high: float, bins: int = HISTOGRAM_BINS) -> Histogram:
        """Empty histogram over [min(low, 0), max(high, 0)]."""
        low, high = min(float(low), 0.0), max(float(high), 0.0)
        if high == low:  # only zeros were seen: one empty bin, every value lands in `zeros`
            return cls(np.zeros(2), np.zeros(1, np.int64))
        neg = 0 if low == 0 else max(1, min(bins - 1, round(bins * -low / (high - low))))
        pos = bins - neg if high > 0 else 0
        if pos == 0:
            neg = bins
        parts = []
        if neg:
            parts.append(np.linspace(low, 0.0, neg + 1)[:-1])
        parts.append(np.linspace(0.0, high, pos + 1) if pos else np.zeros(1))
        edges = np.concatenate(parts)
        return cls(edges, np.zeros(len(edges) - 1, np.int64))

    @classmethod
    def of(cls, values: np.ndarray, bins: int = HISTOGRAM_BINS) -> Histogram:
        values = np.asarray(values)
        hist = cls.over(float(values.min()), float(values.max()), bins) if values.size else cls.over(0, 0)
        hist.add(values)
        return hist

    @property
    def low(self) -> float:
        return float(self.edges[0])

    @property
    def high(self) -> float:
        return float(self.edges[-1])

    @property
    def total(self) -> int:
        return int(self.counts.sum()) + self.zeros

    def add(self, values: np.ndarray) -> None:
        """Count more values (any shape)."""
        flat = np.asarray(values, np.float64).ravel()
        nonzero = flat[flat != 0]
        self.zeros += flat.size - nonzero.size
        if not nonzero.size:
            return
        # Bins are uniform on each side of 0, so a value's bin is arithmetic, no search.
        zero_edge = int(np.searchsorted(self.edges, 0.0))
        index = np.empty(nonzero.size, np.int64)
        negative = nonzero < 0
        if zero_edge > 0:
            width = -self.low / zero_edge
            index[negative] = np.floor((nonzero[negative] - self.low) / width).astype(np.int64)
        else:
            index[negative] = 0
        positive_bins = len(self.counts) - zero_edge
        if positive_bins > 0 and self.high > 0:
            width = self.high / positive_bins
            index[~negative] = zero_edge + np.floor(nonzero[~negative] / width).astype(np.int64)
        else:
            index[~negative] = len(self.counts) - 1
        np.clip(index, 0, len(self.counts) - 1, out=index)
        self.counts += np.bincount(index, minlength=len(self.counts))


def int8_params(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) TFLite's quantizer derives from an activation range [low, high].

    As its fake-quant support does for signed 8 bits (not narrow range): the range is widened to
    contain 0, scale = (high - low) / 255, and the zero point, -128 - low / scale, is rounded
    (half away from zero) and clamped to [-128, 127].
    """
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if high - low < np.finfo(np.float64).eps:
        return 1.0, 0
    scale = (high - low) / (INT8_MAX - INT8_MIN)
    zero = INT8_MIN - low / scale
    zero_point = int(np.clip(np.sign(zero) * np.floor(abs(zero) + 0.5), INT8_MIN, INT8_MAX))
    return scale, zero_point


def fake_quantize(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Values quantized to int8 with the range [low, high] and dequantized back (float64)."""
    scale, zero = int8_params(low, high)
    q = np.clip(np.round(np.asarray(values, np.float64) / scale) + zero, INT8_MIN, INT8_MAX)
    return (q - zero) * scale


def _sawtooth_integral(u: np.ndarray) -> np.ndarray:
    """G(u) = integral over [0, u] of (t - round(t))^2 dt: every whole step adds 1/12."""
    n = np.rint(u)
    r = u - n
    return n / 12.0 + r * r * r / 3.0


def quantization_mse(hist: Histogram, low: np.ndarray | float, high: np.ndarray | float) -> np.ndarray:
    """Mean squared error of int8-quantizing the histogram's values with each range [low, high].

    `low` and `high` broadcast (one error per candidate range). Values are taken as uniform
    within their bin, so the error of a bin is the integral of the quantization error function
    over it, in closed form: rounding error (x - s*round(x/s))^2 inside the representable range
    [L, U] and clipping error (x - U)^2, (L - x)^2 outside. Exact zeros contribute nothing.
    """
    lows = np.atleast_1d(np.asarray(low, np.float64))
    highs = np.atleast_1d(np.asarray(high, np.float64))
    lows, highs = np.broadcast_arrays(lows, highs)
    params = [int8_params(lo, hi) for lo, hi in zip(lows.ravel(), highs.ravel(), strict=True)]
    scale = np.array([p[0] for p in params]).reshape(lows.shape)[..., None]
    zero = np.array([p[1] for p in params], np.float64).reshape(lows.shape)[..., None]
    lo_rep, hi_rep = (INT8_MIN - zero) * scale, (INT8_MAX - zero) * scale

    if hist.total == 0 or not hist.counts.any():
        return np.zeros(lows.shape)
    edges = hist.edges
    # One antiderivative per edge (shared by the bins on either side), differenced per bin.
    inside = np.clip(edges, lo_rep, hi_rep)
    above = np.maximum(edges - hi_rep, 0.0)
    below = np.maximum(lo_rep - edges, 0.0)
    antiderivative = (
        scale**3 * _sawtooth_integral(inside / scale) + (above * above * above - below * below * below) / 3.0
    )
    widths = np.diff(edges)
    used = hist.counts > 0
    per_bin = np.diff(antiderivative, axis=-1)[..., used] / widths[used]
    return (per_bin * hist.counts[used]).sum(axis=-1) / hist.total


def minmax(hist: Histogram) -> tuple[float, float]:
    return hist.low, hist.high


def _quantile(hist: Histogram, rank: float) -> float:
    """Smallest x with at least `rank` values <= x, linear within a bin; zeros sit exactly at 0."""
    zero_bin = int(np.searchsorted(hist.edges, 0.0))
    # The exact zeros as a zero-width bin at 0, between the negative and the positive bins.
    lefts = np.concatenate([hist.edges[:zero_bin], [0.0], hist.edges[zero_bin:-1]])
    widths = np.concatenate([np.diff(hist.edges)[:zero_bin], [0.0], np.diff(hist.edges)[zero_bin:]])
    counts = np.concatenate([hist.counts[:zero_bin], [hist.zeros], hist.counts[zero_bin:]]).astype(np.float64)
    cumulative = np.cumsum(counts)
    i = min(int(np.searchsorted(cumulative, rank, side="left")), len(counts) - 1)
    before = cumulative[i] - counts[i]
    fraction = 0.0 if counts[i] == 0 else float(np.clip((rank - before) / counts[i], 0.0, 1.0))
    return float(lefts[i] + fraction * widths[i])


def percentile(hist: Histogram, q: float = PERCENTILE) -> tuple[float, float]:
    """The (100 - q)-th and q-th percentiles, widened to contain 0."""
    if hist.total == 0:
        return 0.0, 0.0
    upper = _quantile(hist, q / 100.0 * hist.total)
    # The lower tail is the upper tail of -x.
    mirrored = Histogram(-hist.edges[::-1].copy(), hist.counts[::-1].copy(), hist.zeros)
    lower = -_quantile(mirrored, q / 100.0 * hist.total)
    return min(lower, 0.0) or 0.0, max(upper, 0.0)  # `or 0.0`: -0.0 from the mirror reads as 0


def mse(
    hist: Histogram, min_factor: float = MSE_MIN_FACTOR, steps: int = MSE_STEPS, rounds: int = MSE_ROUNDS
) -> tuple[float, float]:
    """The range [f_lo * min, f_hi * max] with the least int8 quantization MSE on the histogram.

    A joint search over one shrink factor for both ends, then `rounds` of searching each end with
    the other fixed (activations are skewed: a residual sum's negative tail is not its positive
    one). Min/max (factor 1) is a candidate throughout, so the result is never worse than it.
    """
    low, high = hist.low, hist.high
    if hist.total == 0 or low == high:
        return low, high
    factors = np.geomspace(min_factor, 1.0, steps)
    errors = quantization_mse(hist, factors * low, factors * high)
    f_lo = f_hi = float(factors[int(np.argmin(errors))])
    for _ in range(rounds):
        f_lo = float(factors[int(np.argmin(quantization_mse(hist, factors * low, f_hi * high)))])
        f_hi = float(factors[int(np.argmin(quantization_mse(hist, f_lo * low, factors * high)))])
    return f_lo * low, f_hi * high


RANGE_FUNCTIONS: dict[str, Callable[[Histogram], tuple[float, float]]] = {
    "minmax": minmax,
    "percentile": percentile,
    "mse": mse,
}
