"""The pure parts of the Android package: option parsing, tensor layout, metadata checks, signature keys."""

from __future__ import annotations

import pytest

from edgeport.errors import EdgeportError
from edgeport.options import parse_floats
from edgeport.targets.android import describe
from edgeport.targets.android.signature import _key, _unique
from edgeport.targets.android.target import AndroidOptions
from edgeport.tensors import TensorSpec

IMAGE = TensorSpec("image", [1, 3, 16, 20], channels_last=True)
FEATURES = TensorSpec("meta", [1, 6])


def test_model_shape_and_layout():
    assert describe.model_shape(IMAGE) == [1, 16, 20, 3]
    assert describe.dimension_names(IMAGE, keep_nchw=False) == ["batch", "height", "width", "channels"]
    kept = TensorSpec("image", [1, 3, 16, 20])
    assert describe.dimension_names(kept, keep_nchw=True) == ["batch", "channels", "height", "width"]
    assert describe.channel_axis(kept, keep_nchw=True) == 1
    assert describe.is_image(IMAGE, False) and describe.is_image(kept, True)
    assert not describe.is_image(FEATURES, False) and describe.dimension_names(FEATURES, False) == []
    assert not describe.is_image(TensorSpec("x", [1, 8, 4, 4], channels_last=True), False)  # 8 channels


def test_model_range_normalises_per_channel():
    assert describe.model_range(None, [1.0], [2.0]) is None
    assert describe.model_range((0.0, 255.0), None, None) == ([0.0], [255.0])
    low, high = describe.model_range((0.0, 255.0), [127.5], [127.5, 63.75, -127.5])
    assert low == [-1.0, -2.0, -1.0] and high == [1.0, 2.0, 1.0]


def test_normalisation_must_fit_the_channels():
    assert describe.check_normalization([1.0], IMAGE, False, "--mean") == [1.0]
    assert describe.check_normalization([1.0, 2.0, 3.0], IMAGE, False, "--mean") == [1.0, 2.0, 3.0]
    with pytest.raises(EdgeportError, match="--mean has 2 values but input 'image' has 3 channels"):
        describe.check_normalization([1.0, 2.0], IMAGE, False, "--mean")
    with pytest.raises(EdgeportError, match="--std has a zero"):
        describe.check_normalization([1.0, 0.0, 1.0], IMAGE, False, "--std")


def test_labels_name_the_classifier_output(tmp_path):
    feature_map = TensorSpec("seg", [1, 3, 8, 8], channels_last=True)
    scores = TensorSpec("scores", [1, 5])
    assert describe.labelled_output([feature_map, scores]) is scores
    describe.check_labels(list("abcde"), scores, "scores", "--labels")
    with pytest.raises(EdgeportError, match="has 4 labels but output 'scores' has 5 classes"):
        describe.check_labels(list("abcd"), scores, "scores", "--labels")
    path = tmp_path / "labels.txt"
    path.write_text("a\n b \n\n")
    assert describe.read_labels(path, "--labels") == ["a", "b"]
    path.write_text("\n\n")
    with pytest.raises(EdgeportError, match="has no labels"):
        describe.read_labels(path, "--labels")


def test_options_parse_text_and_refuse_nonsense():
    options = AndroidOptions.model_validate(
        {"mean": "127.5, 127.5,127.5", "std": "58", "input_range": "0,255", "variants": "int8,float16"}
    )
    assert options.mean == [127.5] * 3 and options.std == [58.0] and options.input_range == (0.0, 255.0)
    assert options.variants == ["int8", "float16"]
    assert parse_floats("1,2", "--x", 2) == [1.0, 2.0]
    with pytest.raises(EdgeportError, match="Write it as lo,hi"):
        parse_floats("1", "--input-range", 2)
    with pytest.raises(EdgeportError, match="names no known variant"):
        AndroidOptions.model_validate({"variants": ""})


def test_signature_keys_from_tensor_names():
    assert _key(b"serving_default_image:0") == "image"
    assert _key("PartitionedCall:1") == "PartitionedCall"
    assert _key("input.1") == "input_1"
    assert _unique(["a", "a", "b", "a"]) == ["a", "a_1", "b", "a_2"]


def test_integer_only_counts_float_tensors_inside_the_graph():
    from edgeport.targets.android.delegates import float_tensors_inside
    from tests.targets.synth import mobilenet_stem_model

    assert float_tensors_inside(mobilenet_stem_model()) == 0  # an int8 model


def test_readme_advice_names_only_built_variants():
    from types import SimpleNamespace

    from edgeport.targets.android.readme import _advice

    def entry(name: str, integer_only: bool) -> SimpleNamespace:
        delegates = SimpleNamespace(
            nodes=4, xnnpack_nodes=4, gpu=SimpleNamespace(taken_nodes=4), integer_only=integer_only
        )
        return SimpleNamespace(name=name, file=f"model_{name}.tflite", delegates=delegates)

    advice = _advice(SimpleNamespace(variants=[entry("float32", False), entry("int8", True)]))
    assert len(advice) == 3
    assert advice[0].startswith("the CPU (XNNPACK): `model_float32.tflite` (")
    assert advice[1].startswith("the GPU delegate: `model_float32.tflite` (")
    assert advice[2].startswith("NPUs and DSPs behind NNAPI: `model_int8.tflite` (integer-only")


def test_index_inputs_are_small_non_negative_integers():
    import numpy as np

    from edgeport.targets.android.variants import with_index_inputs

    specs = [TensorSpec("ids", [1, 5], "int64"), TensorSpec("x", [1, 3])]
    samples = [{"ids": np.full((1, 5), -1.7), "x": np.ones((1, 3), np.float32)} for _ in range(4)]
    out = with_index_inputs(samples, specs, 0)
    assert all(s["ids"].dtype == np.int64 and s["ids"].min() >= 0 for s in out)
    assert all((s["x"] == 1).all() for s in out)
    assert with_index_inputs(samples, [specs[1]], 0) is samples


def test_normalisation_found_in_the_model_means_raw_values():
    from pathlib import Path

    import numpy as np

    from edgeport.quant.input_stats import InputStats
    from edgeport.targets.android.packager import _missing_normalisation, _normalisation_from_model, _spell
    from edgeport.targets.android.variants import FloatSource

    def source(kind: str) -> FloatSource:
        stats = InputStats(np.array([123.7]), np.array([58.4]), kind, detail={"ops": ["Sub", "Div"]})
        return FloatSource(Path("m"), b"", [IMAGE], [], {"image": stats})

    options, notes = _normalisation_from_model(AndroidOptions(), source("normalization"))
    assert (options.mean, options.std) == ([0.0], [1.0]) and "Sub -> Div" in notes[0]
    # Given by the user, or statistics of another kind (a BatchNorm's): left alone.
    given = AndroidOptions(mean=[127.5], std=[127.5])
    assert _normalisation_from_model(given, source("normalization")) == (given, [])
    assert _normalisation_from_model(AndroidOptions(), source("batchnorm")) == (AndroidOptions(), [])

    keys = {"image": "image", "meta": "m"}
    meta = describe.build_metadata(AndroidOptions(), [IMAGE], [FEATURES], keys, "n", False, {}, _spell())
    (note,) = _missing_normalisation(meta)
    assert "image input image has no normalisation" in note
