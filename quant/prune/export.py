"""A module as the graph the conversion would make of it: exported to ONNX as the export stage does
(BatchNorms kept as nodes), and, for a latency measurement, on to a float32 .tflite through the
ONNX passes and onnx2tf as convert does (without its verification or float16 model)."""

from __future__ import annotations

from collections.abc import Sequence

import onnx
import torch
import torch.nn as nn

from edgeport.converters.torch_to_onnx import DEFAULT_OPSET, export_onnx
from edgeport.tempdirs import make_tempdir, remove_tempdir


def exported_graph(
    module: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str], opset: int = DEFAULT_OPSET
) -> onnx.ModelProto:
    """`module` exported for the shapes of `inputs` (one sample each), as the export stage exports."""
    workdir = make_tempdir("prune")
    try:
        return export_onnx(
            module, [x[:1] for x in inputs], workdir / "m.onnx", list(names), opset, fold_constants=False
        )
    finally:
        remove_tempdir(workdir)


def float_tflite(model: onnx.ModelProto) -> bytes:
    """The float32 .tflite convert makes of an exported graph: the ONNX passes (BatchNorms folded,
    the rewrites), then onnx2tf and TensorFlow's converter, NHWC image inputs."""
    from edgeport.converters import onnx_prepare
    from edgeport.converters.onnx_to_tflite import keras_to_tflite, onnx_to_keras
    from edgeport.converters.rewrites import onnx2tf_options_for
    from edgeport.pipeline.onnx_passes import ONNX_PASSES
    from edgeport.pipeline.passes import run_passes

    passed, _, _ = run_passes(ONNX_PASSES, model, (), "ONNX")
    workdir = make_tempdir("prune")
    try:
        path = workdir / "model.onnx"
        onnx.save(passed, str(path))
        keras = onnx_to_keras(
            path, workdir, onnx_prepare.channels_first_inputs(passed), False, onnx2tf_options_for(passed)
        )
        return keras_to_tflite(keras.model, "float32")
    finally:
        remove_tempdir(workdir)
