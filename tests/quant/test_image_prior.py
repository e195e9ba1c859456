"""Distillation's image prior (calibration.ImagePrior): smooth starting noise, a total-variation
penalty, inputs moved at each step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgeport.quant.calibration import ImagePrior, distill_samples, is_image, smooth_noise, total_variation
from edgeport.tensors import TensorSpec
from tests.quant import int8_models as M


def roughness(samples: list[dict[str, np.ndarray]]) -> float:
    """Mean absolute difference of vertically neighbouring pixels, over the samples."""
    x = np.concatenate([s["x"] for s in samples])
    return float(np.abs(np.diff(x, axis=2)).mean())


def test_smooth_noise_has_unit_spread_and_varies_slowly() -> None:
    gen = torch.Generator().manual_seed(0)
    z = smooth_noise([64, 3, 32, 32], 8, gen)
    assert z.shape == (64, 3, 32, 32)
    assert float(z.std()) == pytest.approx(1.0, abs=1e-5)
    white = torch.randn([64, 3, 32, 32], generator=gen)
    # Neighbours of bilinearly upsampled 8x8 noise differ by a fraction of white noise's sqrt(2).
    assert float(total_variation(z)) < 0.25 * float(total_variation(white))


def test_smooth_noise_on_a_grid_finer_than_the_image_is_the_image_size() -> None:
    z = smooth_noise([2, 1, 4, 6], 8, torch.Generator().manual_seed(0))
    assert z.shape == (2, 1, 4, 6)


def test_total_variation_of_a_constant_is_zero_and_of_a_ramp_its_squared_step() -> None:
    assert float(total_variation(torch.ones(1, 1, 5, 5))) == 0.0
    ramp = torch.arange(5.0).reshape(1, 1, 1, 5).expand(1, 1, 5, 5)
    assert float(total_variation(0.5 * ramp)) == pytest.approx(0.25)


def test_only_float_images_of_at_least_8_pixels_take_the_prior() -> None:
    assert is_image(TensorSpec("x", [1, 3, 32, 32]))
    assert not is_image(TensorSpec("x", [1, 3, 4, 32]))
    assert not is_image(TensorSpec("x", [1, 16]))
    assert not is_image(TensorSpec("ids", [1, 3, 32, 32], dtype="int64"))


def test_the_prior_makes_distilled_inputs_smoother_and_still_matches_batchnorm() -> None:
    net = M.train(M.SmallCnn(), steps=30)
    spec = TensorSpec("x", [1, *M.SHAPE])
    plain, plain_report = distill_samples(net, [spec], 16, 0, {}, steps=40)
    smooth, report = distill_samples(net, [spec], 16, 0, {}, steps=40, prior=ImagePrior())
    assert report["image_prior"]["grid"] == 8 and report["image_prior"]["flip"]
    assert "image_prior" not in plain_report
    assert report["loss_end"] < 0.5 * report["loss_start"]
    assert roughness(smooth) < 0.6 * roughness(plain)


def test_move_shifts_by_at_most_the_jitter_and_mirrors_about_half_the_time() -> None:
    prior = ImagePrior(jitter=1 / 16, flip=True)
    x = torch.arange(32.0).reshape(1, 1, 1, 32).expand(1, 1, 32, 32)
    gen = torch.Generator().manual_seed(0)
    mirrored = 0
    for _ in range(200):
        moved = prior.move(x, gen)
        row = moved[0, 0, 0]
        flipped = int((row[1:] < row[:-1]).sum()) > 16  # mostly descending
        mirrored += flipped
        start = int(row.flip(0)[0] if flipped else row[0])
        assert min(start, 32 - start) <= 2  # a circular shift of at most 2 of 32 columns
        assert sorted(row.tolist()) == list(range(32))
    assert 60 < mirrored < 140
    still = ImagePrior(jitter=0, flip=False)
    assert torch.equal(still.move(x, gen), x)


def test_a_model_without_an_image_input_is_distilled_and_reported_without_the_prior() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 4)).eval()
    spec = TensorSpec("x", [1, 16])
    with_prior, report = distill_samples(net, [spec], 8, 0, {}, steps=5, prior=ImagePrior())
    without, _ = distill_samples(net, [spec], 8, 0, {}, steps=5)
    assert "image_prior" not in report
    np.testing.assert_array_equal(with_prior[3]["x"], without[3]["x"])
