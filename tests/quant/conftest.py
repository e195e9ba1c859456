"""Fixtures shared by the quantization tests."""

from __future__ import annotations

import pytest

from edgeport.quant import modes


@pytest.fixture
def no_calibration(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration fails the test if it starts: for checks that must refuse a model before it."""

    def reached(*args: object, **kwargs: object) -> None:
        raise AssertionError("calibration started before the check refused the model")

    monkeypatch.setattr(modes, "make_calibration", reached)
