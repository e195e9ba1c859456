"""Issue-3 acceptance at the .tflite level: what is left of the BNs after onnx2tf and the TFLite converter.

Each test converts with the project's converter chain (onnxsim, converter rewrites, onnx2tf, builtin-only
TFLite converter) and counts ops in the flatbuffer. A few seconds each.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from edgeport.converters.onnx_to_tflite import keras_to_tflite, onnx_to_keras
from edgeport.converters.rewrites import prepare_for_onnx2tf
from edgeport.quant.bn_fold import fold_batch_norms
from edgeport.tflite_file import parse_tflite
from tests.quant import models
from tests.quant.test_bn_fold_models import _resnet20, export_module


def tflite(model: onnx.ModelProto, workdir: Path) -> bytes:
    import onnxsim

    model, _ = onnxsim.simplify(model)
    model = prepare_for_onnx2tf(model).model
    workdir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(workdir / "m.onnx"))
    return keras_to_tflite(onnx_to_keras(workdir / "m.onnx", workdir, ["x"]).model)


def run(data: bytes, x: np.ndarray) -> np.ndarray:
    from edgeport.runtimes import litert

    interp = litert.interpreter(data, delegates=True, threads=None)
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


def test_bn_at_input_add_concat_and_conv_leave_only_the_residual_add(tmp_path: Path) -> None:
    # Exported with the exporter's own conv+BN fusion, so "plain" is what plain onnx2tf users get.
    model = export_module(models.bn_everywhere(), [1, 3, 32, 32], fold_constants=True)
    folded, report = fold_batch_norms(model)
    plain = tflite(model, tmp_path / "plain")
    ours = tflite(folded, tmp_path / "folded")
    plain_ops, ops = parse_tflite(plain).op_counts, parse_tflite(ours).op_counts
    assert (plain_ops.get("MUL"), plain_ops.get("ADD")) == (3, 4)  # what plain onnx2tf leaves
    assert "SUB" not in ops and "MUL" not in ops
    assert ops["ADD"] == 1  # the residual add
    assert ops["DEPTHWISE_CONV_2D"] == 1  # the input BN: before a zero-padded conv, so one op
    assert [x["now"] for x in report.left] == ["depthwise 1x1 Conv"]
    x = np.random.default_rng(0).standard_normal((1, 32, 32, 3)).astype(np.float32)
    ref = run(plain, x)
    assert np.max(np.abs(run(ours, x) - ref)) / np.max(np.abs(ref)) < 1e-5


@pytest.mark.parametrize("name", ["resnet20", "mobilenet_v2"])
def test_networks_convert_with_zero_bn_remnants(name: str, tmp_path: Path) -> None:
    # BNs kept at export so that this pass, not the exporter, is what removes them.
    module = _resnet20() if name == "resnet20" else models.mobilenet_v2_small()
    residual_adds = {"resnet20": 9, "mobilenet_v2": 5}[name]
    model = export_module(module, [1, 3, 32, 32])
    folded, report = fold_batch_norms(model)
    assert report.found and not report.left
    ops = parse_tflite(tflite(folded, tmp_path)).op_counts
    assert "MUL" not in ops and "SUB" not in ops, ops
    assert ops.get("ADD", 0) == residual_adds, ops
