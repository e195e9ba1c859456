"""ONNX -> Keras (onnx2tf) -> .tflite (TFLite converter), offline and builtin-ops only.

onnx2tf does the layout work (NCHW graph -> NHWC graph). We ask it for the Keras model only and run
the TFLite converter ourselves, for three reasons: onnx2tf enables SELECT_TF_OPS (Flex ops that no
microcontroller and no stock Android runtime can run), --keep-nchw needs transposes at the I/O
boundary that onnx2tf has no switch for, and the quantization stage needs the Keras model anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeport.converters.onnx_prepare import rename_io, tf_safe_names
from edgeport.errors import EdgeportError, exception_line
from edgeport.keras_export import keras_converter
from edgeport.tensors import signature_name  # the runtimes match signature keys with it too

# Shapes of the sample batch onnx2tf would otherwise download for its own checks.
_ONNX2TF_SAMPLE_SHAPE = (20, 128, 128, 3)


@dataclass
class KerasResult:
    model: Any  # tf_keras.Model
    input_names: list[str]  # ONNX input names, in Keras input order
    output_names: list[str]  # ONNX output names, in Keras output order
    output_channels_last: dict[str, bool]  # onnx2tf moved this output's channel axis to the end
    input_channels_last: dict[str, bool]


def _offline_sample_data() -> np.ndarray:
    """Stand-in for onnx2tf's download_test_image_data: deterministic, local, never the network."""
    return np.random.default_rng(0).random(_ONNX2TF_SAMPLE_SHAPE, dtype=np.float32)


class _NetworkForbidden(RuntimeError):
    pass


class ConversionFailed(EdgeportError):
    """onnx2tf or the TFLite converter failed on the graph; the pipeline then looks for the failing node."""


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    """chdir for the duration, back to where it was on every path out."""
    previous = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


@contextlib.contextmanager
def offline_onnx2tf() -> Iterator[None]:
    """Run onnx2tf with its sample-data download replaced and every HTTP request refused.

    onnx2tf fetches a calibration .npy from the internet when it sees a 4-D float input; edgeport
    must work with no network, so the fetch is replaced by local data and `requests` is disarmed
    for the duration as a second line of defence.
    """
    import onnx2tf.onnx2tf as onnx2tf_main
    import onnx2tf.utils.common_functions as onnx2tf_common
    import requests

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise _NetworkForbidden("edgeport runs onnx2tf offline; a network request was refused")

    saved = (
        onnx2tf_main.download_test_image_data,
        onnx2tf_common.download_test_image_data,
        requests.get,
        requests.Session.request,
    )
    onnx2tf_main.download_test_image_data = _offline_sample_data
    onnx2tf_common.download_test_image_data = _offline_sample_data
    requests.get = refuse
    requests.Session.request = refuse
    try:
        yield
    finally:
        (
            onnx2tf_main.download_test_image_data,
            onnx2tf_common.download_test_image_data,
            requests.get,
            requests.Session.request,
        ) = saved


def onnx_to_keras(
    onnx_path: Path,
    workdir: Path,
    channels_first_inputs: Sequence[str],
    keep_nchw: bool = False,
    onnx2tf_options: dict[str, Any] | None = None,
    debug: bool = False,
) -> KerasResult:
    """Build the Keras model for `onnx_path` with onnx2tf.

    `channels_first_inputs` are the inputs that feed spatial ops (conv, pool, ...): onnx2tf turns
    them NHWC. Every other input keeps its shape exactly (a [batch, time, features] sequence must
    not be read as NCW). With keep_nchw, the image inputs keep their NCHW shape too.
    """
    model = onnx.load(str(onnx_path), load_external_data=False)
    input_names = [i.name for i in model.graph.input]
    output_names = [o.name for o in model.graph.output]
    # onnx2tf writes its own simplified graph back over its input file: give it a private copy,
    # with I/O names the TFLite signature accepts (a '/' or a leading digit silently drops it).
    safe = {name: signature_name(name) for name in input_names + output_names}
    private_copy = Path(workdir).resolve() / "onnx2tf_input.onnx"
    onnx.save(tf_safe_names(rename_io(model, safe)), str(private_copy))
    keep_shape = [safe[n] for n in input_names if keep_nchw or n not in channels_first_inputs]
    options: dict[str, Any] = {
        "input_onnx_file_path": str(private_copy),
        "output_folder_path": str(Path(workdir).resolve()),
        "disable_model_save": True,
        "non_verbose": not debug,
        "verbosity": "debug" if debug else "error",
        "keep_shape_absolutely_input_names": keep_shape or None,
    }
    options.update(onnx2tf_options or {})
    import onnx2tf
    import tf_keras

    # Keras numbers layer names per process ("model_2/tf.linalg.matmul_1"), and the names end up in
    # the .tflite: without this a second conversion in one process writes a different file.
    tf_keras.backend.reset_uids()
    try:
        # onnx2tf drops scratch files in the working directory.
        with working_directory(workdir), offline_onnx2tf():
            keras_model = onnx2tf.convert(**options)
    except _NetworkForbidden as exc:
        raise EdgeportError(str(exc), "report this: an onnx2tf code path tried to download data") from exc
    except SystemExit as exc:  # onnx2tf calls sys.exit() on ops it cannot convert
        raise ConversionFailed(
            f"onnx2tf could not convert {onnx_path.name} (it exited with code {exc.code})",
            "rerun with --debug to see the failing ONNX node",
        ) from exc
    except EdgeportError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnx2tf or TensorFlow raising is a conversion failure
        raise ConversionFailed(
            f"onnx2tf failed on {onnx_path.name} ({exception_line(exc)})",
            "rerun with --debug for the traceback",
        ) from exc
    if keras_model is None:
        raise EdgeportError(f"onnx2tf produced no model for {onnx_path.name}", "rerun with --debug")
    layouts = dict(getattr(keras_model, "onnx_output_layouts", {}) or {})
    outs = keras_model.outputs if isinstance(keras_model.outputs, list) else [keras_model.outputs]
    onnx_shapes = {o.name: [d.dim_value for d in o.type.tensor_type.shape.dim] for o in model.graph.output}
    out_last = {
        name: output_channels_last(bool(layouts.get(safe[name], False)), onnx_shapes[name], list(t.shape))
        for name, t in zip(output_names, outs, strict=True)
    }
    in_last = {n: (n in channels_first_inputs and not keep_nchw) for n in input_names}
    return KerasResult(keras_model, input_names, output_names, out_last, in_last)


def output_channels_last(flag: bool, onnx_shape: list[int], keras_shape: list[int | None]) -> bool:
    """Whether onnx2tf's output holds the channel axis last. Its own flag can be wrong (an output it
    transposed back to NCHW, e.g. after a residual add with the input, still says NHWC): the Keras
    shape decides whenever it tells the two layouts apart."""
    last = [*onnx_shape[:1], *onnx_shape[2:], *onnx_shape[1:2]]
    shape = [int(d) if d is not None else -1 for d in keras_shape]
    if len(onnx_shape) >= 3 and onnx_shape != last and shape in (onnx_shape, last):
        return shape == last
    return flag


def wrap_keep_nchw(result: KerasResult) -> Any:
    """Keras model whose image outputs onnx2tf made NHWC are transposed back to PyTorch's layout."""
    import tf_keras

    model = result.model
    outs = model.outputs if isinstance(model.outputs, list) else [model.outputs]
    new_outs = []
    for name, tensor in zip(result.output_names, outs, strict=True):
        rank = len(tensor.shape)
        if result.output_channels_last.get(name) and rank >= 3:
            # Permute's dims skip the batch axis and count from 1: NHWC -> NCHW is (3, 1, 2).
            dims = (rank - 1, *range(1, rank - 1))
            tensor = tf_keras.layers.Permute(dims, name=f"{name}_nchw")(tensor)
        new_outs.append(tensor)
    return tf_keras.Model(inputs=model.inputs, outputs=new_outs)


def keras_to_tflite(keras_model: Any, precision: str = "float32") -> bytes:
    """Convert with TFLite builtin ops only; an op that needs Flex fails with its name."""
    import tensorflow as tf

    converter = keras_converter(keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision != "float32":
        raise ValueError(f"unknown precision {precision}")
    try:
        return converter.convert()
    except Exception as exc:
        # The converter names each op it has no builtin kernel for in this phrase; other errors print
        # `tf.Tensor(...)` values or `tf.reshape(` calls, which are no such op.
        ops = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(exc))))
        if ops:
            raise EdgeportError(
                f"the model needs {', '.join(ops[:5])}, which TFLite has no builtin kernel for "
                "(only TensorFlow Flex ops would run it, and no microcontroller has those)",
                "replace that operation in the model, or export only the part before it",
            ) from exc
        raise ConversionFailed(
            f"the TFLite converter failed: {str(exc).strip().splitlines()[0][:200]}",
            "rerun with --debug and report the model",
        ) from exc
