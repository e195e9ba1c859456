"""int8 checks that do not need the calibrated ranges refuse a model before calibration runs (issue 10)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.quant import modes

SOURCE = """
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return torch.relu(self.fc(x))
"""


def test_a_model_the_quantizer_leaves_partly_float_is_refused_before_calibration(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_calibration: None
) -> None:
    checked = []

    def not_full_integer(model: bytes, io: str, keep_float=(), *args) -> None:
        checked.append(len(model))
        raise EdgeportError("the int8 model is not full-integer: tensor 't' is float32", "report this model")

    monkeypatch.setattr(modes, "_check_full_integer", not_full_integer)
    (tmp_path / "small.py").write_text(SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'small.py'}:Small", "-o", out, "--input-shape", "1,8", "--quantize", "int8"
    )  # fmt: skip
    assert code == 1 and not out.exists() and checked
    assert "not full-integer" in err and "found before calibration" in err


def test_a_flash_budget_no_4_bit_model_meets_is_refused_before_calibration(
    run_cli, tmp_path: Path, no_calibration: None
) -> None:
    (tmp_path / "small.py").write_text(SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'small.py'}:Small", "-o", out, "--input-shape", "1,8",
        "--quantize", "w4a8", "--flash-budget", "100",
    )  # fmt: skip
    assert code == 1 and not out.exists()
    assert "with every weight layer in 4 bits" in err and "found before calibration" in err


def test_the_budget_check_refuses_beyond_the_slack_only(run_cli, tmp_path: Path) -> None:
    from edgeport.quant.mixed import budget_problem, smallest_size

    (tmp_path / "small.py").write_text(SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'small.py'}:Small", "-o", out, "--input-shape", "1,8", "--quantize", "int8"
    )  # fmt: skip
    assert code == 0, err
    int8 = (out / "model_int8.tflite").read_bytes()
    smallest = smallest_size(int8)
    assert 0 < smallest < len(int8)
    assert budget_problem(int8, smallest) is None
    assert budget_problem(int8, smallest - 1) is not None
    assert budget_problem(int8, smallest - modes.FLASH_SLACK, modes.FLASH_SLACK) is None
    assert budget_problem(int8, smallest - modes.FLASH_SLACK - 1, modes.FLASH_SLACK) is not None
