"""int8 LOGISTIC / TANH inputs too wide for TFLite Micro: found from the scale, refused with the reason."""

from pathlib import Path

import numpy as np
import pytest

from edgeport.quant import int8
from edgeport.quant.calibrated import recorded_range
from edgeport.quant.tflm_saturation import (
    ACTIVATION_BOUND,
    bound_activation_inputs,
    input_radius,
    saturating_activations,
)
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import parse_tflite, tensor_name

# Scales measured on silero-vad's int8 model: its LSTM gates (+-6e4, every input saturated in TFLite
# Micro) and the cell-state TANH that follows (an ordinary range).
GATE_SCALE, CELL_SCALE = 468.7236633300781, 0.03045324794948101


@pytest.mark.parametrize(
    ("scale", "radius"),
    [(GATE_SCALE, 0), (CELL_SCALE, 480), (7.4, 1), (15.1, 0), (1 / 128, 960), (0.05, 240)],
)
def test_input_radius_is_tflite_micros(scale: float, radius: int) -> None:
    assert input_radius(scale) == radius


LOUD_SOURCE = '''
import torch
from torch import nn


class LoudGate(nn.Module):
    """A sigmoid on a Linear whose outputs span about +-2e4 (an unnormalized gate)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)
        with torch.no_grad():
            self.fc.weight.mul_(1e4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))


class LoudSilu(LoudGate):
    """The same large values, read by the sigmoid and by the product: they cannot be bounded."""

    def forward(self, x):
        h = self.fc(x)
        return h * torch.sigmoid(h)


class LoudLstm(nn.Module):
    """An LSTM over features in the thousands (no normalization), last step to a sigmoid head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(8, 16, batch_first=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.sigmoid(self.head(out[:, -1]))
'''


def _convert(run_cli, tmp_path: Path, model: str, *extra: str) -> tuple[int, str, Path]:
    (tmp_path / "loud.py").write_text(LOUD_SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'loud.py'}:{model}", "-o", out, "--quantize", "int8", *extra
    )
    return code, err, out


def _tflm_agrees(out: Path) -> None:
    import json

    manifest = json.loads((out / "edgeport.json").read_text())
    (section,) = [s for s in manifest["sections"].values() if isinstance(s, dict) and "tflm_vs_litert" in s]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0
    assert section["activation_ranges"]["clamped_for_logistic_tanh"]["tensors"]
    assert any("read only by LOGISTIC / TANH" in note for note in section["calibration"]["notes"])
    assert saturating_activations((out / "model_int8.tflite").read_bytes()) == []


@pytest.mark.parametrize(
    ("model", "extra"),
    [
        ("LoudGate", ("--input-shape", "1,8")),
        ("LoudLstm", ("--input-shape", "1,6,8", "--input-range", "-3000,3000")),
    ],
)
def test_int8_of_an_unnormalized_gate_is_bounded_and_runs_the_same_on_tflite_micro(
    run_cli, tmp_path: Path, model: str, extra: tuple[str, ...]
) -> None:
    code, err, out = _convert(run_cli, tmp_path, model, *extra)
    assert code == 0, err
    _tflm_agrees(out)


def test_int8_of_an_unboundable_saturating_sigmoid_is_refused_before_calibration(
    run_cli, tmp_path: Path, no_calibration: None
) -> None:
    code, err, out = _convert(run_cli, tmp_path, "LoudSilu", "--input-shape", "1,8")
    assert code == 1 and "Traceback" not in err and not out.exists()
    assert "TFLite Micro's int8 LOGISTIC" in err and "saturates every input, 0 included" in err
    assert "synthetic samples (found before calibration)" in err
    assert "--quantize dynamic or float16" in err


def test_with_calibration_data_the_check_after_calibration_refuses_it(run_cli, tmp_path: Path) -> None:
    data = tmp_path / "cal.npy"
    np.save(data, np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32))
    code, err, out = _convert(run_cli, tmp_path, "LoudSilu", "--input-shape", "1,8", "--calibration", data)
    assert code == 1 and "Traceback" not in err and not out.exists()
    assert "its input's calibrated range spans" in err


def test_without_the_bound_the_lstm_is_refused_before_calibration(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_calibration: None
) -> None:
    monkeypatch.setattr(int8, "bound_activation_inputs", lambda calibrated: calibrated)
    code, err, out = _convert(
        run_cli, tmp_path, "LoudLstm", "--input-shape", "1,6,8", "--input-range", "-3000,3000"
    )
    assert code == 1 and not out.exists()
    assert "TFLite Micro's int8 LOGISTIC" in err and "(found before calibration)" in err


SEED = 0


def _calibrated(build, low: float = -1.0, high: float = 1.0) -> tuple[bytes, dict[str, tuple[float, float]]]:
    """The calibrate-only model of a small Keras model on seeded samples, and its recorded ranges by
    the name of the op output they belong to (Keras layer names are set by the builders below)."""
    import tf_keras as K

    x = K.Input((8,), batch_size=1, name="x")
    model = K.Model(x, build(K, x))
    rng = np.random.default_rng(SEED)
    samples = [{"x": rng.uniform(low, high, (1, 8)).astype(np.float32)} for _ in range(4)]
    calibrated = int8.calibrate_only(int8.int8_converter(model, [TensorSpec("x", [1, 8])], samples, "int8"))
    return calibrated, _ranges(calibrated)


def _ranges(calibrated: bytes) -> dict[str, tuple[float, float]]:
    graph = parse_tflite(calibrated).raw.subgraphs[0]
    return {tensor_name(t): r for t in graph.tensors if (r := recorded_range(t)) is not None}


def _loud(K, name: str):
    return K.layers.Dense(8, kernel_initializer=K.initializers.RandomNormal(stddev=1e3, seed=SEED), name=name)


def test_a_gate_input_nothing_else_reads_is_narrowed_to_the_bound() -> None:
    import tensorflow as tf

    def build(K, x):
        h = _loud(K, "loud")(x)
        a, b = K.layers.Lambda(lambda t: tf.split(t, 2, axis=-1), name="halves")(h)
        return K.layers.Concatenate(name="gates")([K.activations.sigmoid(a), K.activations.tanh(b)])

    calibrated, before = _calibrated(build)
    clamped: list[str] = []
    after = _ranges(bound_activation_inputs(calibrated, clamped=clamped))
    wide = [n for n, (lo, hi) in before.items() if hi - lo > 100]
    assert wide and sorted(clamped) == sorted(wide)  # the Dense output and its halves: about +-1e4
    for n in wide:
        assert after[n][0] >= -ACTIVATION_BOUND and after[n][1] <= ACTIVATION_BOUND
        assert after[n][0] < 0 < after[n][1]


def test_an_addend_is_narrowed_by_the_other_addends_range() -> None:
    def build(K, x):
        loud = _loud(K, "loud")(x)
        quiet = K.layers.Dense(8, name="quiet")(x)
        return K.activations.sigmoid(K.layers.Add(name="sum")([loud, quiet]))

    calibrated, before = _calibrated(build)
    after = _ranges(bound_activation_inputs(calibrated))
    quiet = next(r for n, r in before.items() if "quiet" in n and "loud" not in n)
    loud = next(n for n, (lo, hi) in before.items() if "loud" in n and hi - lo > 100 and "sum" not in n)
    low, high = after[loud]
    assert low == pytest.approx(max(before[loud][0], -ACTIVATION_BOUND - quiet[1]))
    assert high == pytest.approx(min(before[loud][1], ACTIVATION_BOUND - quiet[0]))


def _silu(K, x):
    h = _loud(K, "loud")(x)
    return K.layers.Multiply(name="silu")([h, K.activations.sigmoid(h)])


def _concatenated(K, x):
    # The quantizer imposes a concatenation's output range on its inputs, here x (a model input).
    return K.activations.sigmoid(K.layers.Concatenate(name="joined")([_loud(K, "loud")(x), x]))


@pytest.mark.parametrize("build", [_silu, _concatenated], ids=["another reader", "concatenation"])
def test_a_gate_input_that_cannot_be_clamped_alone_keeps_its_range(build) -> None:
    calibrated, before = _calibrated(build)
    assert max(hi - lo for lo, hi in before.values()) > 100  # the loud values are there
    assert bound_activation_inputs(calibrated) == calibrated
