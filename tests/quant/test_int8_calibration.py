"""Calibration inputs without a converter run: input statistics from the graph, data loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.errors import EdgeportError
from edgeport.quant.calibration import distill_samples, load_calibration, make_calibration
from edgeport.quant.input_stats import infer_input_stats
from edgeport.tensors import TensorSpec
from tests.quant import int8_models as M

IMAGE = TensorSpec("x", [1, 3, 8, 8], channels_last=True)


def export(module: nn.Module, tmp_path: Path, shape: tuple[int, ...] = (1, 3, 8, 8)) -> onnx.ModelProto:
    return export_onnx(module.eval(), [torch.zeros(shape)], tmp_path / "m.onnx", ["x"], fold_constants=False)


def test_input_statistics_from_the_first_batchnorm(tmp_path: Path) -> None:
    """BN running stats measured on inputs with known per-channel mean/std give those back."""
    torch.manual_seed(0)
    mean, std = torch.tensor([100.0, -3.0, 0.5]), torch.tensor([30.0, 12.0, 20.0])
    conv, bn = nn.Conv2d(3, 12, 1), nn.BatchNorm2d(12, momentum=None)
    # Independent input elements: exactly the model the inference assumes, so it must recover them.
    x = mean.view(1, 3, 1, 1) + std.view(1, 3, 1, 1) * torch.randn(4096, 3, 8, 8)
    bn.train()
    with torch.no_grad():
        bn(conv(x))
    stats = infer_input_stats(export(nn.Sequential(conv, bn), tmp_path))["x"]
    assert stats.source == "batchnorm"
    # Mean error judged against the spread of the values (1 % of the largest std).
    np.testing.assert_allclose(stats.mean, mean.numpy(), atol=0.01 * float(std.max()))
    np.testing.assert_allclose(stats.std, std.numpy(), rtol=0.05)


def test_no_statistics_without_normalisation_or_batchnorm(tmp_path: Path) -> None:
    assert infer_input_stats(export(nn.Conv2d(3, 4, 3), tmp_path)) == {}


def test_distillation_matches_batchnorm_statistics() -> None:
    net = M.train(M.SmallCnn(), steps=30)
    spec = TensorSpec("x", [1, *M.SHAPE])
    samples, report = distill_samples(net, [spec], 16, 0, {}, steps=40)
    assert len(samples) == 16 and samples[0]["x"].shape == (1, *M.SHAPE)
    assert report["loss_end"] < 0.5 * report["loss_start"]
    assert report["class_targets"]


def test_calibration_from_npz_with_labels_and_channels_last_uint8(tmp_path: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (7, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "cal.npz", images=images, labels=np.arange(7))
    samples = load_calibration(tmp_path / "cal.npz", [IMAGE])
    assert len(samples) == 7 and samples[0]["x"].shape == (1, 3, 8, 8) and samples[0]["x"].dtype == np.float32
    np.testing.assert_array_equal(samples[2]["x"][0], images[2].transpose(2, 0, 1))


def test_calibration_from_a_directory(tmp_path: Path) -> None:
    for i in range(3):
        np.save(tmp_path / f"part{i}.npy", np.full((2, 3, 8, 8), i, np.float32))
    samples = load_calibration(tmp_path, [IMAGE])
    assert [float(s["x"].mean()) for s in samples] == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 3, 9, 9), np.float32), "has shape (4, 3, 9, 9) but input 'x' takes (N, 3, 8, 8)"),
        (np.array([["a"] * 192] * 2).reshape(2, 3, 8, 8), "not numbers"),
        (np.full((2, 3, 8, 8), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_calibration_data_is_refused(tmp_path: Path, array: np.ndarray, message: str) -> None:
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(EdgeportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_calibration(tmp_path / "bad.npy", [IMAGE])


def test_missing_calibration_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgeportError, match="does not exist"):
        make_calibration("auto", [IMAGE], {}, data=tmp_path / "nope.npy")


def test_clip_sigmas_bounds_synthetic_inputs_only_when_the_range_is_unknown() -> None:
    from edgeport.quant.input_stats import InputStats

    mean, std = np.array([10.0, -1.0, 0.0]), np.array([2.0, 0.5, 1.0])
    stats = {"x": InputStats(mean, std, "user")}
    cal = make_calibration("input-stats", [IMAGE], stats, count=48, held_out=16, clip_sigmas=3.0)
    x = np.concatenate([s["x"] for s in cal.samples + cal.held_out])
    view = (1, 3, 1, 1)
    assert np.all(x >= (mean - 3 * std).reshape(view) - 1e-5)
    assert np.all(x <= (mean + 3 * std).reshape(view) + 1e-5)
    # 64 x 192 draws: some fall beyond 3 std (0.27 % each) and were clipped onto the bound.
    assert np.any(
        np.isclose(x, (mean + 3 * std).reshape(view)) | np.isclose(x, (mean - 3 * std).reshape(view))
    )
    assert cal.detail["clip_sigmas"] == 3.0
    # A known hard range wins over the sigma clip.
    ranged = {"x": InputStats(mean, std, "user", 0.0, 1.0)}
    x = make_calibration("input-stats", [IMAGE], ranged, count=8, held_out=2, clip_sigmas=3.0).samples[0]["x"]
    assert x.min() >= 0.0 and x.max() <= 1.0

    net = M.train(M.SmallCnn(), steps=10)
    spec = TensorSpec("x", [1, *M.SHAPE])
    one = {"x": InputStats(np.zeros(1), np.ones(1), "user")}
    samples, _ = distill_samples(net, [spec], 8, 0, one, steps=5, clip_sigmas=1.0)
    assert max(float(np.abs(s["x"]).max()) for s in samples) <= 1.0 + 1e-5
