"""edgeport/keras_export.keras_converter: one SavedModel export per Keras model, same bytes as the
TFLite converter writes on its own (float32, float16, int8), and the export removed with the model."""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import pytest

from edgeport import keras_export
from edgeport.converters.onnx_to_tflite import keras_to_tflite
from edgeport.keras_export import keras_converter
from edgeport.quant.int8 import keras_to_quantized
from edgeport.tensors import TensorSpec

SPEC = TensorSpec("x", [1, 8, 8, 3])


def _model():
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    x = tf_keras.Input((8, 8, 3), batch_size=1, name="x")
    y = tf_keras.layers.Conv2D(4, 3, activation="relu")(x)
    y = tf_keras.layers.Flatten()(y)
    return tf_keras.Model(x, tf_keras.layers.Dense(5)(y))


def _samples(count: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [{"x": rng.standard_normal(SPEC.shape).astype(np.float32)} for _ in range(count)]


def _unshared(model, precision: str = "float32", samples=()) -> bytes:
    """What the TFLite converter writes by itself, with its own SavedModel export."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "int8":
        from edgeport.quant.int8 import calibrate_only, int8_converter, quantize_calibrated

        converter = int8_converter(model, [SPEC], samples, "int8")
        del converter._convert_keras_to_saved_model  # the converter's own export again
        return quantize_calibrated(converter, calibrate_only(converter), "int8")
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    return bytes(converter.convert())


@pytest.fixture()
def saves(monkeypatch) -> list[str]:
    """The directories the SavedModel exports are written to, in order."""
    from tensorflow.lite.python import lite

    written: list[str] = []
    real = lite._save.save

    def save(obj, export_dir, *args, **kwargs):
        written.append(export_dir)
        return real(obj, export_dir, *args, **kwargs)

    monkeypatch.setattr(lite._save, "save", save)
    return written


def test_conversions_of_one_model_export_it_once_and_write_the_same_bytes(
    saves: list[str], monkeypatch
) -> None:
    from tensorflow.lite.python import lite

    loads: list[str] = []
    real_load = lite._load
    monkeypatch.setattr(lite, "_load", lambda path, *args: loads.append(path) or real_load(path, *args))
    model = _model()
    samples = _samples(4)
    float32 = keras_to_tflite(model, "float32")
    float16 = keras_to_tflite(model, "float16")
    int8 = keras_to_quantized(model, "int8", [SPEC], samples)
    assert len(saves) == 1
    assert len(loads) == 1
    assert float32 == _unshared(model, "float32")
    assert float16 == _unshared(model, "float16")
    assert int8 == _unshared(model, "int8", samples)
    assert len(saves) == 4  # each unshared conversion exported the model itself


def test_each_model_gets_its_own_export(saves: list[str]) -> None:
    first, second = _model(), _model()
    keras_to_tflite(first)
    keras_to_tflite(second)
    keras_to_tflite(first)
    assert len(saves) == 2


def test_the_export_is_removed_with_its_model(saves: list[str]) -> None:
    model = _model()
    keras_to_tflite(model)
    (directory,) = saves
    assert Path(directory).is_dir()
    del model
    gc.collect()
    assert not Path(directory).exists()


def test_a_failed_export_is_left_to_the_converter_fallback(monkeypatch) -> None:
    """lite.py converts without a SavedModel when saving fails: the shared export does not change that."""
    from tensorflow.lite.python import lite

    def fail(*_args, **_kwargs):
        raise RuntimeError("cannot save")

    model = _model()
    monkeypatch.setattr(lite._save, "save", fail)
    converted = keras_to_tflite(model)  # lite.py's freeze path
    assert converted[4:8] == b"TFL3"
    assert keras_export._SAVED_MODELS[model] is None


def test_a_stand_in_converter_is_returned_untouched(monkeypatch) -> None:
    import tensorflow as tf

    class Converter:
        pass

    stand_in = Converter()
    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", lambda _model: stand_in)
    assert keras_converter(object()) is stand_in


def test_keras_metadata_is_back_after_the_export(saves: list[str]) -> None:
    """The export leaves tf_keras's revival metadata out; Keras' own saving still writes it afterwards."""
    model = _model()
    keras_to_tflite(model)
    assert saves
    assert '"class_name"' in model._tracking_metadata
