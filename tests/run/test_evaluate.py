"""Reading a validation set: arrays per input, labels, and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.run.evaluate import load_data
from edgeport.tensors import TensorSpec

MFCC = [TensorSpec("mfcc", [1, 1, 49, 10])]


def test_samples_are_batches_of_one_with_their_labels(tmp_path):
    x = np.arange(3 * 490, dtype=np.float32).reshape(3, 1, 49, 10)
    np.savez(tmp_path / "v.npz", features=x, labels=np.array([2, 0, 1]))
    # One input: the array's name does not matter.
    samples, labels = load_data(tmp_path / "v.npz", MFCC, "labels")
    assert len(samples) == 3 and samples[1]["mfcc"].shape == (1, 1, 49, 10)
    assert np.array_equal(samples[2]["mfcc"][0], x[2]) and list(labels) == [2, 0, 1]


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"a": np.zeros((2, 1, 49, 10)), "b": np.zeros((2, 1, 49, 10))}, "has no array for input 'mfcc'"),
        ({"mfcc": np.zeros((2, 1, 10, 49))}, "samples are [1, 10, 49], the model takes [1, 49, 10]"),
        ({"mfcc": np.zeros((2, 1, 49, 10)), "labels": np.zeros(3)}, "different numbers of samples"),
    ],
)
def test_bad_data_is_one_line(tmp_path, arrays, message):
    np.savez(tmp_path / "v.npz", **arrays)
    with pytest.raises(EdgeportError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_data(tmp_path / "v.npz", MFCC, "labels")


def test_a_file_that_is_not_npz_is_one_line(tmp_path):
    (tmp_path / "v.npz").write_text("hello")
    with pytest.raises(EdgeportError, match="is not a readable .npz"):
        load_data(tmp_path / "v.npz", MFCC, "labels")
