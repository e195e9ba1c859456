"""A validation set given as a folder of images with a labels file: reading, layout, normalisation, and
one-line errors for bad input, in the config check and at load time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgeport.errors import EdgeportError
from edgeport.run.config import check_validation
from edgeport.run.evaluate import ValidationOptions, image_layout, load_validation, read_labels_file
from edgeport.tensors import TensorSpec

NCHW = [TensorSpec("image", [1, 3, 4, 6], channels_last=True)]
NHWC = [TensorSpec("image", [1, 4, 6, 3])]


def images(folder: Path, count: int = 3, size: tuple[int, int] = (6, 4)) -> list[np.ndarray]:
    """`count` seeded RGB images of `size` (width, height) and a labels file naming them."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(count)]
    for i, p in enumerate(pixels):
        Image.fromarray(p).save(folder / f"img{i}.png")
    lines = ["# filename label", *(f"img{i}.png {i % 2}" for i in range(count))]
    (folder / "labels.txt").write_text("\n".join(lines) + "\n")
    return pixels


def test_images_become_samples_in_the_model_layout_normalised(tmp_path):
    pixels = images(tmp_path / "val")
    options = ValidationOptions(data=tmp_path / "val", mean=[0.5, 0.5, 0.5], std=0.25)
    samples, labels = load_validation(options, NCHW)
    assert list(labels) == [0, 1, 0] and len(samples) == 3
    expected = ((pixels[2].astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    assert samples[2]["image"].shape == (1, 3, 4, 6)
    np.testing.assert_allclose(samples[2]["image"][0], expected, rtol=1e-5, atol=1e-5)
    # The same image for an NHWC model is the same numbers, channels last.
    nhwc, _ = load_validation(options, NHWC)
    np.testing.assert_allclose(nhwc[2]["image"][0], expected.transpose(1, 2, 0), rtol=1e-5, atol=1e-5)


def test_images_are_resized_to_the_input_and_converted_to_its_channels(tmp_path):
    images(tmp_path / "val", size=(12, 8))
    options = ValidationOptions(data=tmp_path / "val", scale=1.0)
    gray = [TensorSpec("x", [1, 1, 4, 6], channels_last=True)]
    samples, _ = load_validation(options, gray)
    assert samples[0]["x"].shape == (1, 1, 4, 6)
    assert 0 <= samples[0]["x"].min() and samples[0]["x"].max() <= 255 and samples[0]["x"].max() > 1


def test_the_layout_of_an_image_input():
    assert image_layout(NCHW[0]) == "NCHW" and image_layout(NHWC[0]) == "NHWC"
    assert image_layout(TensorSpec("x", [1, 1, 28, 28])) == "NCHW"
    with pytest.raises(EdgeportError, match="not one image of 1 or 3 channels"):
        image_layout(TensorSpec("x", [1, 49, 10]))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "img1.png").unlink(), "labels.txt names img1.png, which is not in"),
        (lambda d: (d / "img1.png").write_text("not an image"), "img1.png is not a readable PNG or JPEG"),
        (lambda d: Image.new("RGB", (6, 4)).save(d / "extra.png"), r"1 image\(s\) in .* have no label"),
        (lambda d: (d / "labels.txt").write_text("img0.png cat\n"), "line 1: 'img0.png cat' is not"),
        (lambda d: (d / "labels.txt").write_text("# nothing\n"), "names no image"),
    ],
)
def test_bad_images_or_labels_are_one_line(tmp_path, damage, message):
    images(tmp_path / "val")
    damage(tmp_path / "val")
    with pytest.raises(EdgeportError, match=message) as caught:
        load_validation(ValidationOptions(data=tmp_path / "val"), NCHW)
    assert "\n" not in caught.value.one_line()


def test_normalisation_that_does_not_fit_the_channels_is_one_line(tmp_path):
    images(tmp_path / "val")
    with pytest.raises(EdgeportError, match="mean has 2 values, the model's images have 3 channels"):
        load_validation(ValidationOptions(data=tmp_path / "val", mean=[0.1, 0.2]), NCHW)


def test_a_multi_input_model_cannot_take_a_folder(tmp_path):
    images(tmp_path / "val")
    with pytest.raises(EdgeportError, match="the model has 2 inputs"):
        load_validation(ValidationOptions(data=tmp_path / "val"), NCHW * 2)


def test_the_labels_file_can_be_named(tmp_path):
    images(tmp_path / "val")
    (tmp_path / "val" / "labels.txt").rename(tmp_path / "val" / "classes.txt")
    _, labels = load_validation(ValidationOptions(data=tmp_path / "val", labels="classes.txt"), NCHW)
    assert list(labels) == [0, 1, 0]
    assert read_labels_file(tmp_path / "val" / "classes.txt")[1] == ("img1.png", 1)


def test_the_config_check_reports_every_image_problem_at_once(tmp_path):
    images(tmp_path / "val")
    (tmp_path / "val" / "labels.txt").unlink()
    options, found = check_validation({"data": "val", "std": [1.0, 0.0, 1.0], "mean": [0.1, 0.2]}, tmp_path)
    assert options is None
    assert found == [
        "[validation] std: [1.0, 0.0, 1.0] has a zero; give the standard deviation per channel",
        "[validation] mean and std: give as many values each (one per channel), or one for all",
        f"[validation] labels: {tmp_path / 'val' / 'labels.txt'} does not exist; write one `FILENAME LABEL` "
        "line per image there",
    ]


def test_image_keys_do_not_apply_to_an_npz(tmp_path):
    np.savez(tmp_path / "v.npz", x=np.zeros((2, 3)))
    options, found = check_validation({"data": "v.npz", "scale": 1.0}, tmp_path)
    assert options is None and found == [
        "[validation] scale: applies to a folder of images only (data is v.npz)"
    ]


def test_a_good_folder_passes_the_config_check(tmp_path):
    images(tmp_path / "val")
    options, found = check_validation({"data": "val", "mean": [0.5, 0.5, 0.5], "std": 0.5}, tmp_path)
    assert found == [] and options.data == tmp_path / "val" and options.labels_name == "labels.txt"
