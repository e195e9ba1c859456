"""--calibration data is checked before any conversion work, every problem on its own line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import (
    calibration_problems,
    check_calibration,
    check_calibration_inputs,
    load_calibration,
)
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


def test_before_export_image_samples_may_be_channels_last_unless_keep_nchw(tmp_path: Path) -> None:
    np.save(tmp_path / "nhwc.npy", np.zeros((2, 8, 8, 3), np.float32))
    check_calibration_inputs(tmp_path / "nhwc.npy", {"x": [1, 3, 8, 8]})
    with pytest.raises(EdgeportError, match=r"takes \(N, 3, 8, 8\)\. Save one sample per row"):
        check_calibration_inputs(tmp_path / "nhwc.npy", {"x": [1, 3, 8, 8]}, keep_nchw=True)
    check_calibration_inputs(None, {"x": [1, 3, 8, 8]})  # no data given: nothing to check


@pytest.fixture
def no_conversion(monkeypatch):
    """Fail loudly if the pipeline gets as far as export or onnx2tf."""
    from edgeport.pipeline import stages

    def never(*args, **kwargs):
        raise AssertionError("export / conversion ran before the calibration data was checked")

    monkeypatch.setattr(stages, "export_onnx", never)
    monkeypatch.setattr(stages, "onnx_to_keras", never)


def test_bad_calibration_is_refused_before_export_through_the_cli(
    tmp_path: Path, run_cli, no_conversion
) -> None:
    data = tmp_path / "cal"
    data.mkdir()
    np.save(data / "a.npy", np.zeros((4, 5, 15), np.float32))
    np.save(data / "b.npy", np.full((4, 5, 16), np.nan, np.float32))
    out = tmp_path / "out"
    source = "tests/fixtures/tiny_models.py:SequenceHead"
    args = ("--input-shape", "1,5,16", "--quantize", "int8", "--calibration")
    code, _, err = run_cli("convert", source, "-o", out, *args, data)
    assert code == 1, err
    assert "the calibration data has 2 problems:" in err and "Traceback" not in err
    assert "calibration data a.npy has shape (4, 5, 15) but input 'x' takes (N, 5, 16)" in err
    assert "calibration data b.npy has 320 NaN or infinite value(s)" in err
    code, _, err = run_cli("convert", source, "-o", out, *args, tmp_path / "missing.npy")
    assert code == 1 and f"calibration data {tmp_path / 'missing.npy'} does not exist" in err
    assert not out.exists()


def test_bad_calibration_for_an_onnx_source_is_refused_before_onnx2tf(
    tmp_path: Path, run_cli, no_conversion
) -> None:
    import onnx
    from onnx import helper

    from tests.onnx_graphs import make_model

    onnx.save(make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 4]}, ["y"]), tmp_path / "m.onnx")
    np.save(tmp_path / "cal.npy", np.zeros((3, 5), np.int64))
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", tmp_path / "m.onnx", "-o", out, "--quantize", "int8", "--calibration", tmp_path / "cal.npy"
    )
    assert code == 1 and "calibration data cal.npy has shape (3, 5) but input 'x' takes (N, 4)" in err, err
    assert not out.exists()


def test_the_manifest_names_the_data_by_file_and_hash_and_keeps_its_path_for_run(tmp_path: Path) -> None:
    from edgeport.manifest import sha256_of
    from edgeport.quant.calibration import make_calibration

    np.save(tmp_path / "cal.npy", np.zeros((10, 3, 8, 8), np.float32))
    detail = make_calibration("data", [IMAGE], {}, data=tmp_path / "cal.npy").detail
    assert detail == {
        "data": "cal.npy",
        "sha256": sha256_of(tmp_path / "cal.npy"),
        "local_path": str(tmp_path / "cal.npy"),  # moved to the manifest's run block when written
        "samples": 8,
    }


def test_has_batchnorm_reads_pytorch_modules_and_onnx_graphs() -> None:
    import torch
    from onnx import helper

    from edgeport.quant.calibration import has_batchnorm
    from tests.quant.helpers import bn_node, bn_params, make_model

    assert has_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4)))
    assert not has_batchnorm(torch.nn.Linear(3, 4)) and not has_batchnorm(None)
    inits = bn_params("bn", 3, np.random.default_rng(0))
    with_bn = make_model([bn_node("bn", "x", "y")], {"x": [1, 3, 4, 4]}, ["y"], inits)
    assert has_batchnorm(with_bn)
    assert not has_batchnorm(make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3]}, ["y"]))
