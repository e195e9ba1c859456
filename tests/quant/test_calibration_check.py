"""--calibration data is checked before any conversion work, every problem on its own line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import calibration_problems, check_calibration, load_calibration
from edgeport.tensors import TensorSpec

IMAGE = TensorSpec("x", [1, 3, 8, 8], channels_last=True)
VECTOR = TensorSpec("v", [1, 4])


def test_usable_data_has_no_problems(tmp_path: Path) -> None:
    np.save(tmp_path / "ok.npy", np.zeros((5, 8, 8, 3), np.uint8))  # channels-last images are accepted
    assert calibration_problems(tmp_path / "ok.npy", [IMAGE]) == []
    check_calibration(tmp_path / "ok.npy", [IMAGE])


@pytest.mark.parametrize(
    ("array", "problem"),
    [
        (
            np.zeros((4, 3, 9, 9), np.float32),
            "has shape (4, 3, 9, 9) but input 'x' takes (N, 3, 8, 8) or channels-last (N, 8, 8, 3)",
        ),
        (np.array(["a"] * 192 * 2).reshape(2, 3, 8, 8), "has dtype <U1, not numbers"),
        (np.zeros((2, 3, 8, 8), np.complex64), "has dtype complex64, not numbers"),
        (np.zeros((0, 3, 8, 8), np.float32), "has no samples (shape (0, 3, 8, 8))"),
        (np.where(np.eye(8) > 0, np.nan, 0.0) * np.ones((2, 3, 8, 8)), "has 48 NaN or infinite value(s)"),
    ],
)
def test_each_bad_file_is_named_with_its_problem(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    assert calibration_problems(tmp_path / "bad.npy", [IMAGE]) == [f"calibration data bad.npy {problem}"]


def test_missing_path_and_empty_directory(tmp_path: Path) -> None:
    assert calibration_problems(tmp_path / "nope.npy", [IMAGE]) == [
        f"calibration data {tmp_path / 'nope.npy'} does not exist"
    ]
    assert calibration_problems(tmp_path, [IMAGE]) == [
        f"calibration directory {tmp_path} has no .npy or .npz files"
    ]


def test_every_problem_is_reported_at_once_one_line_each(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 3, 8, 7), np.float32))
    np.save(tmp_path / "b.npy", np.full((2, 3, 8, 8), np.inf, np.float32))
    np.save(tmp_path / "c.npy", np.zeros((2, 3, 8, 8), np.float32))  # fine
    with pytest.raises(EdgeportError) as caught:
        check_calibration(tmp_path, [IMAGE])
    lines = caught.value.problem.splitlines()
    assert lines[0] == "the calibration data has 2 problems:"
    assert lines[1].startswith("  - calibration data a.npy has shape (2, 3, 8, 7)")
    assert lines[2].startswith("  - calibration data b.npy has 384 NaN or infinite")
    with pytest.raises(EdgeportError, match="2 problems"):  # using the data checks the same things
        load_calibration(tmp_path, [IMAGE])


def test_several_inputs_need_one_named_array_each(tmp_path: Path) -> None:
    np.savez(tmp_path / "cal.npz", x=np.zeros((3, 3, 8, 8), np.float32))
    assert calibration_problems(tmp_path / "cal.npz", [IMAGE, VECTOR]) == [
        "calibration file cal.npz has no array named 'v' (has ['x'])"
    ]
    np.savez(tmp_path / "cal.npz", x=np.zeros((3, 3, 8, 8), np.float32), v=np.zeros((2, 4), np.float32))
    assert calibration_problems(tmp_path / "cal.npz", [IMAGE, VECTOR]) == [
        "calibration data gives different sample counts per input ({'x': 3, 'v': 2})"
    ]
    np.savez(tmp_path / "cal.npz", x=np.zeros((2, 3, 8, 8), np.float32), v=np.ones((2, 4), np.float32))
    samples = load_calibration(tmp_path / "cal.npz", [IMAGE, VECTOR])
    assert len(samples) == 2 and samples[1]["v"].shape == (1, 4)
