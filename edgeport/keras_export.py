"""One SavedModel export per Keras model for every TFLite conversion of it.

TensorFlow's TFLite converter saves a Keras model as a SavedModel each time it converts it, and one
`edgeport convert` converts the same model up to four times (float32, float16, the TFLite Micro probe,
int8: converters/ and quant/ both). This module is where that export is made once and shared; it sits in
the spine so both layers use the one copy.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgeport.tempdirs import make_tempdir, remove_tempdir

# Keras model -> the SavedModel the TFLite converter exported it to (None: the export failed), kept
# while the model lives. Weak keys: a model is dropped with its export.
_SAVED_MODELS: weakref.WeakKeyDictionary[Any, Path | None] = weakref.WeakKeyDictionary()
# Keras model -> that SavedModel as the converter loads it back (it reads the graph's debug info from it).
_LOADED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
# The export patches module and class attributes of tensorflow and tf_keras for its duration: one at a
# time, should conversions ever run in threads.
_EXPORT_LOCK = threading.RLock()


def keras_converter(keras_model: Any) -> Any:
    """`tf.lite.TFLiteConverter.from_keras_model(keras_model)`, exporting the model to a SavedModel once.

    Every conversion of a Keras model starts by saving it as a SavedModel, most of the conversion's
    time on an onnx2tf model. One `edgeport convert` writes float32, float16, the TFLite Micro probe
    and the int8 model from the same Keras model: the export is written the first time (without
    tf_keras's metadata, `_without_keras_metadata`) and copied into each later converter's directory,
    and the object the converter loads back from it (for the graph's debug info) is loaded once too;
    every converter runs as it would have, on the same graph, and writes the same bytes (tested).
    The model must not change after its first conversion (nothing in edgeport changes a Keras model).
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    export = getattr(converter, "_convert_keras_to_saved_model", None)
    if export is not None:  # a stand-in converter (tests) has no SavedModel step
        converter._convert_keras_to_saved_model = functools.partial(_export_once, keras_model, export)
    return converter


def _export_once(keras_model: Any, export: Callable[[str], Any], output_dir: str) -> Any:
    """The converter's own `_convert_keras_to_saved_model(output_dir)`, its save replaced by a copy of
    the model's first export (tensorflow 2.19's lite.py saves with `_save.save`, save_debug_info on)."""
    from tensorflow.lite.python import lite

    with _EXPORT_LOCK:
        if keras_model not in _SAVED_MODELS:
            _SAVED_MODELS[keras_model] = _save_model(lite, keras_model)
        saved = _SAVED_MODELS[keras_model]
        if saved is None:  # the converter's own attempt fails the same way and takes its fallback
            return export(output_dir)
        real_save, real_load = lite._save, lite._load

        def copy_saved(_obj: Any, export_dir: str, *_args: Any, **_kwargs: Any) -> None:
            # Links, not a copy of the weights: lite.py's export_dir is its own mkdtemp, which a killed
            # run leaves behind under a name nobody can tell is ours (the export's dir is swept).
            for entry in saved.iterdir():
                os.symlink(entry, os.path.join(export_dir, entry.name))

        def load_once(export_dir: str, *args: Any, **kwargs: Any) -> Any:
            if keras_model not in _LOADED:
                _LOADED[keras_model] = real_load(export_dir, *args, **kwargs)
            return _LOADED[keras_model]

        lite._save, lite._load = types.SimpleNamespace(save=copy_saved), load_once
        try:
            return export(output_dir)
        finally:
            lite._save, lite._load = real_save, real_load


def _save_model(lite: Any, keras_model: Any) -> Path | None:
    """The SavedModel of `keras_model` as lite.py writes it, in a directory removed with the model."""
    directory = make_tempdir("savedmodel")
    # Before the save, so that a save interrupted by Ctrl-C or SIGTERM is removed too (at exit).
    weakref.finalize(keras_model, remove_tempdir, directory)
    try:
        with _without_keras_metadata():
            lite._save.save(
                keras_model, str(directory), options=lite._save_options.SaveOptions(save_debug_info=True)
            )
    except Exception:  # noqa: BLE001 - lite.py catches it too and converts without a SavedModel
        remove_tempdir(directory)
        return None
    return directory


@contextlib.contextmanager
def _without_keras_metadata() -> Iterator[None]:
    """tf_keras layers save no revival metadata for the duration, as any other trackable object.

    The metadata (each layer's JSON config, with onnx2tf's constants spelled out as nested lists, and
    the whole model's config deep-copied twice) is what tf_keras reads to rebuild Keras objects from a
    SavedModel, and building it (deep copies and JSON of every config) takes most of the export's time;
    the TFLite converter loads the graph and its signatures only, so the .tflite is the same bytes
    without it (tested).
    """
    from tf_keras.src.engine import base_layer

    layer = base_layer.Layer
    saved = layer.__dict__["_tracking_metadata"]
    layer._tracking_metadata = property(lambda _self: "")
    try:
        yield
    finally:
        layer._tracking_metadata = saved
