"""The distillation bound: work counted from the .tflite, steps from a fixed budget (never a time)."""

from __future__ import annotations

import os

import pytest
import torch

from edgeport.quant import cost, modes
from edgeport.quant.calibration import DISTILL_STEPS
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import parse_tflite


def _conv_dense_tflite() -> bytes:
    """Conv 3x3 (3 -> 8 channels, 6x6 output, 'same'), then a dense layer 288 -> 5."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(0)
    x = tf_keras.Input((6, 6, 3), batch_size=1)
    h = tf_keras.layers.Conv2D(8, 3, padding="same")(x)
    y = tf_keras.layers.Dense(5)(tf_keras.layers.Flatten()(h))
    return bytes(tf.lite.TFLiteConverter.from_keras_model(tf_keras.Model(x, y)).convert())


def test_macs_of_conv_and_dense() -> None:
    model = _conv_dense_tflite()
    conv, dense = 6 * 6 * 8 * (3 * 3 * 3), 5 * 288
    macs = cost.tflite_macs(model)
    # The converter may add a RESHAPE for the flatten: one operation per element of it at most.
    assert conv + dense <= macs <= conv + dense + 288
    assert cost.sample_work(model) == macs + cost.ELEMENT_WEIGHT * cost.activation_elements(model)


def test_steps_shrink_with_the_work_and_stop_at_the_wanted_count() -> None:
    assert cost.steps_within(1000, 10, 50) == 50
    assert cost.steps_within(1000, 100, 50) == 10
    assert cost.steps_within(1000, 10_000, 50) == 0
    model = _conv_dense_tflite()
    ops = len(parse_tflite(model).ops)
    assert cost.step_work(model, 80) == 80 * cost.sample_work(model) + cost.OP_WORK * ops


class _WithBn(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = torch.nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x)


@pytest.mark.parametrize(
    ("work", "method", "want_method", "want_steps", "skipped"),
    [
        (1, "auto", "auto", DISTILL_STEPS, False),  # a small model: the full step count
        (cost.DISTILL_BUDGET // 20, "auto", "auto", 20, False),  # budget for 20 steps
        (cost.DISTILL_BUDGET, "auto", "input-stats", None, True),  # not even MIN steps: input statistics
        (cost.DISTILL_BUDGET, "distill", "distill", cost.MIN_DISTILL_STEPS, False),  # asked for: MIN steps
    ],
)
def test_distillation_is_bounded_by_the_budget(
    monkeypatch: pytest.MonkeyPatch,
    work: int,
    method: str,
    want_method: str,
    want_steps: int | None,
    skipped: bool,
) -> None:
    monkeypatch.setattr(modes, "step_work", lambda model, batch: work)
    got_method, steps, record, note = modes._bounded_distillation(
        QuantOptions(method=method), b"", _WithBn(), has_stats=True
    )
    assert (got_method, steps, note is not None) == (want_method, want_steps, skipped)
    assert record["work_per_step"] == work and record["batch"] == 80
    if skipped:
        assert "distillation skipped" in note and "input statistics" in note


def test_explicit_steps_and_models_without_batchnorm_are_not_rebounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(modes, "step_work", lambda model, batch: cost.DISTILL_BUDGET)
    assert modes._bounded_distillation(QuantOptions(distill_steps=30), b"", _WithBn(), True)[1] == 30
    no_bn = torch.nn.Conv2d(3, 3, 1)
    assert modes._bounded_distillation(QuantOptions(), b"", no_bn, False)[3] is None
