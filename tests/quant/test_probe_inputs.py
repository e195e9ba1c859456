"""The TFLite Micro probe's inputs: index inputs drawn by calibration's one integer draw, quantized inputs
over their integers, floats from N(0, 1); all seeded, in the file's input order."""

from __future__ import annotations

import numpy as np

from edgeport.quant.input_stats import integer_samples
from edgeport.quant.modes import CALIBRATION_SEED, probe_inputs
from edgeport.tensors import TensorSpec
from tests.targets.synth import Graph, T


def _model() -> bytes:
    """Inputs: int32 token ids (no quantization), an int16 quantized input (a16w8's integer I/O), an
    int8 quantized one, a float one. No operators: the probe only reads the inputs."""
    g = Graph()
    ids = g.tensor([1, 40], T.INT32, scale=None)
    wide = g.tensor([1, 64], T.INT16, scale=None)
    g.tensors[wide].quantization = g.tensors[g.tensor([1], T.INT8)].quantization  # a scale, as int16 I/O has
    narrow = g.tensor([1, 64], T.INT8)
    floats = g.tensor([2, 3], T.FLOAT32)
    return g.build([ids, wide, narrow, floats], [floats])


def test_index_inputs_use_calibrations_integer_draw() -> None:
    ids, wide, narrow, floats = probe_inputs(_model())[0]
    expected = integer_samples(
        np.random.default_rng(CALIBRATION_SEED), TensorSpec("t0", [1, 40], "int32"), None
    )
    np.testing.assert_array_equal(ids, expected)
    assert ids.dtype == np.int32
    for quantized, dtype in ((wide, np.int16), (narrow, np.int8)):
        assert quantized.dtype == dtype and quantized.min() < 0 <= quantized.max() <= 127
    assert floats.dtype == np.float32 and floats.shape == (2, 3)
    np.testing.assert_array_equal(probe_inputs(_model())[0][1], wide)  # seeded
