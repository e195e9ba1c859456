"""BN folding on whole networks exported with their BNs kept (constant folding off), onnxruntime-checked."""

from __future__ import annotations

import importlib.util
import io
import warnings

import numpy as np
import onnx
import pytest
import torch

from edgeport.quant.bn_fold import fold_batch_norms
from tests.conftest import shared_path
from tests.quant import models
from tests.quant.helpers import max_rel_error, op_count


def export_module(module: torch.nn.Module, shape: list[int], fold_constants: bool = False) -> onnx.ModelProto:
    """Legacy export. With constant folding off (the default here) the exporter's own conv+BN fusion
    does not run, so every BN reaches the pass; with it on, the model is as PyTorch users usually export."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.randn(*shape),
            buf,
            dynamo=False,
            opset_version=17,
            do_constant_folding=fold_constants,
            input_names=["x"],
            output_names=["y"],
        )
    model = onnx.load_from_string(buf.getvalue())
    return onnx.shape_inference.infer_shapes(model)


def _resnet20() -> torch.nn.Module:
    path = shared_path("models", "resnet_cifar.py")
    spec = importlib.util.spec_from_file_location("resnet_cifar", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load("resnet20")


@pytest.mark.parametrize(
    "build,bns",
    [(_resnet20, 19), (models.mobilenet_v2_small, 31), (models.bn_everywhere, 4)],
    ids=["resnet20", "mobilenet_v2", "bn_everywhere"],
)
def test_network_bns_fold(build, bns: int) -> None:
    model = export_module(build(), [1, 3, 32, 32])
    assert op_count(model, "BatchNormalization") == bns
    out, report = fold_batch_norms(model)
    onnx.checker.check_model(out)
    assert op_count(out, "BatchNormalization") == 0
    # nothing left behind as Mul/Add (ResNet's shortcut computes pad sizes with integer Muls)
    assert op_count(out, "Mul") == op_count(model, "Mul") and op_count(out, "Add") == op_count(model, "Add")
    assert len(report.found) == bns and not report.warnings
    if build is models.bn_everywhere:  # the input BN before a padded conv is the one that must stay
        (left,) = report.left
        assert "bn_in" in left["name"] and left["now"] == "depthwise 1x1 Conv"
    else:
        assert not report.left and len(report.folded) == bns
        # every BN sat right after a conv: each gives its statistics to high-bias absorption
        assert len(report.activation_stats) == bns
    assert max_rel_error(model, out) < 1e-5


def test_torch_eval_output_is_matched() -> None:
    module = models.post_activation_bn()
    model = export_module(module, [2, 3, 16, 16])
    out, report = fold_batch_norms(model)
    assert [f["direction"] for f in report.folded] == ["forward", "forward"]
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    with torch.no_grad():
        ref = module(torch.from_numpy(x)).numpy()
    from tests.quant.helpers import run

    (got,) = run(out, {"x": x})
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-5
