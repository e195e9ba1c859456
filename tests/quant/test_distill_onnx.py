"""BN-statistics distillation for ONNX sources: the graph run in PyTorch by quant/onnx_torch.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import onnx_torch
from edgeport.quant.calibration import distill_samples, make_calibration
from edgeport.quant.input_stats import infer_input_stats
from edgeport.quant.modes import QuantOptions
from edgeport.tensors import TensorSpec
from tests.quant import int8_models as M
from tests.quant.helpers import bn_node, bn_params, make_model
from tests.quant.models import bn_everywhere

SPEC = TensorSpec("x", [1, *M.SHAPE])


class Shortcuts(nn.Module):
    """The ops CIFAR ResNets and MobileNets export to beyond Conv/BN/ReLU: strided slicing and channel
    padding (the ResNet-20 option-A shortcut), ReLU6 (Clip), hard-swish, pools, concat, a view on
    the batch size, a BN on a [N, C] tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(16)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.bn3 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32 * 3 * 3, 12)
        self.bn4 = nn.BatchNorm1d(12)
        self.head = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv1(x)))
        short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))  # 8 -> 16 channels, stride 2
        x = F.relu(self.bn2(self.conv2(x)) + short)
        x = torch.cat([F.hardswish(self.dw(x)), F.max_pool2d(x, 3, 1, 1)], dim=1)
        x = F.avg_pool2d(F.relu(self.bn3(x)), 2)
        x = F.relu(self.bn4(self.fc(x.view(x.size(0), -1))))
        return self.head(x)


def trained(model: nn.Module, steps: int = 20) -> nn.Module:
    return M.train(model, steps=steps)


def export_kept(module: nn.Module, path: Path, fold: bool = False) -> onnx.ModelProto:
    """As edgeport exports (BNs kept as nodes) unless `fold`, which is torch's default export."""
    return export_onnx(module.eval(), [torch.zeros(1, *M.SHAPE)], path, ["x"], fold_constants=fold)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, onnx.ModelProto]:
    net = trained(M.SmallCnn(), steps=30)
    return net, export_kept(net, tmp_path_factory.mktemp("cnn") / "cnn.onnx")


@pytest.mark.parametrize(
    "build", [lambda: trained(Shortcuts()), bn_everywhere], ids=["shortcuts", "bn_everywhere"]
)
def test_evaluator_matches_onnxruntime_and_pytorch(build, tmp_path: Path) -> None:
    net = build()
    shape = (1, *M.SHAPE) if isinstance(net, Shortcuts) else (1, 3, 8, 8)
    model = export_onnx(net.eval(), [torch.zeros(shape)], tmp_path / "m.onnx", ["x"], fold_constants=False)
    ev = onnx_torch.onnx_to_torch(model)
    bns = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())
    assert len(ev.batchnorms) == bns == onnx_torch.batchnorm_count(model)
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal(shape).astype(np.float32)} for _ in range(3)]
    assert onnx_torch.check_against_onnxruntime(ev, model, samples) < 1e-5
    # On a batch of 5 (exported with 1) it computes what the PyTorch model computes.
    x = torch.randn(5, *shape[1:])
    with torch.no_grad():
        np.testing.assert_allclose(ev(x).numpy(), net(x).numpy(), rtol=1e-4, atol=1e-5)


def test_onnx_distillation_reaches_what_pytorch_distillation_reaches(
    cnn: tuple[nn.Module, onnx.ModelProto],
) -> None:
    """Same seed, same steps: the same BN loss and the same inputs as distilling the PyTorch model."""
    net, model = cnn
    stats = infer_input_stats(model)
    from_torch, torch_report = distill_samples(net, [SPEC], 16, 0, stats, steps=15)
    cal = make_calibration(
        "auto", [SPEC], stats, module=model, count=12, held_out=4, seed=0, distill_steps=15
    )
    assert cal.method == "distill" and not cal.notes
    assert cal.detail["via"] == "ONNX graph via edgeport.quant.onnx_torch"
    assert cal.detail["graph_vs_onnxruntime_rel_error"] < onnx_torch.CHECK_TOLERANCE
    assert cal.detail["batchnorms"] == torch_report["batchnorms"] == 2
    assert cal.detail["loss_end"] < 0.5 * cal.detail["loss_start"]
    assert cal.detail["loss_start"] == pytest.approx(torch_report["loss_start"], rel=1e-4)
    assert cal.detail["loss_end"] == pytest.approx(torch_report["loss_end"], rel=1e-3)
    got = np.concatenate([s["x"] for s in cal.samples + cal.held_out])
    want = np.concatenate([s["x"] for s in from_torch])
    np.testing.assert_allclose(got, want, atol=1e-3)
    # A PyTorch source says so too.
    cal = make_calibration("auto", [SPEC], stats, module=net, count=4, held_out=2, distill_steps=2)
    assert cal.method == "distill" and cal.detail["via"] == "PyTorch module"


def test_exported_batch_in_a_constant_reshape_follows_the_batch() -> None:
    """Reshape to a constant [1, -1] (x.view(1, -1) with constant folding) on a batch of several."""
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        bn_node("bn", "c", "b"),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["f"]),
        helper.make_node("Gemm", ["f", "fc"], ["y"], transB=1),
    ]
    params = {
        "w": rng.standard_normal((4, 3, 3, 3)),
        "fc": rng.standard_normal((2, 4 * 8 * 8)),
        **bn_params("bn", 4, rng),
    }
    params["shape"] = np.array([1, -1], np.int64)
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], params)
    ev = onnx_torch.onnx_to_torch(model)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(4)]
    assert onnx_torch.check_against_onnxruntime(ev, model, samples) < 1e-5


def test_folded_export_has_no_batchnorm_and_falls_back_with_a_note(tmp_path: Path) -> None:
    net = trained(M.SmallCnn(), steps=5)
    model = export_kept(net, tmp_path / "folded.onnx", fold=True)  # torch's default: BNs fused into Conv
    assert onnx_torch.batchnorm_count(model) == 0
    stats = {"x": infer_input_stats(export_kept(net, tmp_path / "kept.onnx"))["x"]}
    cal = make_calibration("auto", [SPEC], stats, module=model, count=4, held_out=2)
    assert cal.method == "input-stats"
    assert "no BatchNormalization node" in cal.notes[0] and "do_constant_folding=False" in cal.notes[0]
    cal = make_calibration("auto", [SPEC], {}, module=model, count=4, held_out=2)
    assert cal.method == "gaussian" and "no BatchNormalization node" in cal.notes[0]
    with pytest.raises(
        EdgeportError, match="distill needs a model with BatchNorm layers.*BatchNormalization"
    ):
        make_calibration("distill", [SPEC], stats, module=model)


def _with_unsupported_op() -> onnx.ModelProto:
    """input -> Conv -> BN -> LRN: the first BN gives input statistics, LRN has no evaluator op."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        bn_node("bn", "c", "b"),
        helper.make_node("LRN", ["b"], ["y"], size=3, name="the_lrn"),
    ]
    params = {"w": rng.standard_normal((4, 3, 1, 1)), **bn_params("bn", 4, rng)}
    return make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], params)


def test_unsupported_op_falls_back_to_input_stats_naming_the_op() -> None:
    model = _with_unsupported_op()
    spec = TensorSpec("x", [1, 3, 8, 8])
    stats = infer_input_stats(model)
    assert stats["x"].source == "batchnorm"
    cal = make_calibration("auto", [spec], stats, module=model, count=4, held_out=2)
    assert cal.method == "input-stats"
    assert "op LRN (node 'the_lrn')" in cal.notes[0] and "input statistics" in cal.notes[0]
    with pytest.raises(EdgeportError, match="op LRN"):
        make_calibration("distill", [spec], stats, module=model)


@pytest.mark.parametrize(
    ("broken", "note"),
    [
        (lambda ev, a, x: torch.relu(x) * 1.5, "differs from onnxruntime"),
        (lambda ev, a, x: x.reshape(7, -1), "running it in PyTorch failed (node"),
    ],
    ids=["wrong", "raises"],
)
def test_evaluator_that_disagrees_or_fails_is_not_used(
    cnn: tuple[nn.Module, onnx.ModelProto], monkeypatch: pytest.MonkeyPatch, broken, note: str
) -> None:
    """The onnxruntime check stands between a wrong evaluator op and distillation."""
    _, model = cnn
    monkeypatch.setitem(onnx_torch._OPS, "Relu", broken)
    stats = infer_input_stats(model)
    cal = make_calibration("auto", [SPEC], stats, module=model, count=4, held_out=2)
    assert cal.method == "input-stats" and note in cal.notes[0]


def test_non_distill_methods_never_touch_the_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(model: onnx.ModelProto) -> None:
        raise AssertionError("converted without need")

    monkeypatch.setattr(onnx_torch, "onnx_to_torch", fail)
    spec = TensorSpec("x", [1, 3, 8, 8])
    cal = make_calibration("input-stats", [spec], {}, module=_with_unsupported_op(), count=2, held_out=1)
    assert cal.method == "input-stats" and not cal.notes


def test_onnx_source_is_distilled_in_the_pipeline(
    cnn: tuple[nn.Module, onnx.ModelProto], tmp_path: Path
) -> None:
    """`edgeport convert model.onnx --quantize int8`: the unfolded source reaches distillation."""
    _, model = cnn
    onnx.save(model, str(tmp_path / "cnn.onnx"))
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(tmp_path / "cnn.onnx"),
            outdir=out,
            quantize=QuantOptions(distill_steps=5),
        )
    )
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    folds = [p for p in manifest["passes"] if p["name"] == "fold_batch_norms"]
    assert folds and folds[0]["folded"] == 2  # the .tflite is folded; distillation saw the BNs
    cal = manifest["sections"]["quantization"]["calibration"]
    assert cal["method"] == "distill" and cal["via"] == "ONNX graph via edgeport.quant.onnx_torch"
    assert cal["batchnorms"] == 2 and cal["steps"] == 5
    assert manifest["sections"]["quantization"]["fidelity"]["outputs"][0]["sqnr_db"] > 20.0


def test_renamed_inputs_feed_the_source_graph_by_position() -> None:
    """After --input-name the specs' names differ from the source graph's: inputs go by position."""
    rng = np.random.default_rng(2)
    model = make_model(
        [helper.make_node("Conv", ["x", "w"], ["c"]), bn_node("bn", "c", "y")],
        {"x": [1, 3, 8, 8]},
        ["y"],
        {"w": rng.standard_normal((4, 3, 1, 1)), **bn_params("bn", 4, rng)},
    )
    renamed = TensorSpec("image", [1, 3, 8, 8])
    cal = make_calibration("auto", [renamed], {}, module=model, count=4, held_out=2, distill_steps=2)
    assert cal.method == "distill" and cal.samples[0]["image"].shape == (1, 3, 8, 8)


def _node(op: str, inputs: list[str], **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, ["y"], **attrs)


_I64 = np.int64
OPS = {
    "conv_same_upper_stride2": ([_node("Conv", ["x", "w"], auto_pad="SAME_UPPER", strides=[2, 2])], {}),
    "conv_asymmetric_pads_group": ([_node("Conv", ["x", "wg"], pads=[0, 1, 2, 1], group=2)], {}),
    "maxpool_asymmetric_ceil": (
        [_node("MaxPool", ["x"], kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2], ceil_mode=1)],
        {},
    ),
    "avgpool_pads_excluded": ([_node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 0, 1, 2])], {}),
    "avgpool_pads_included": (
        [_node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
        {},
    ),
    "global_max_pool": ([_node("GlobalMaxPool", ["x"])], {}),
    "reduce_mean_keep": ([_node("ReduceMean", ["x"], axes=[2, 3], keepdims=1)], {}),
    "softmax_axis1": ([_node("Softmax", ["x"], axis=1)], {}),
    "leaky_relu": ([_node("LeakyRelu", ["x"], alpha=0.2)], {}),
    "clip_relu6": ([_node("Clip", ["x", "lo", "hi"])], {"lo": np.float32(0), "hi": np.float32(6)}),
    "hard_sigmoid": ([_node("HardSigmoid", ["x"])], {}),
    "prelu": ([_node("PRelu", ["x", "slope"])], {"slope": np.full((4, 1, 1), 0.1)}),
    "slice_reverse_channels": (
        [_node("Slice", ["x", "s", "e", "ax", "st"])],
        {
            "s": np.array([-1], _I64),
            "e": np.array([-100], _I64),
            "ax": np.array([1], _I64),
            "st": np.array([-1], _I64),
        },
    ),
    "pad_reflect": (
        [_node("Pad", ["x", "p"], mode="reflect")],
        {"p": np.array([0, 0, 1, 2, 0, 0, 2, 1], _I64)},
    ),
    "pad_edge": ([_node("Pad", ["x", "p"], mode="edge")], {"p": np.array([0, 0, 1, 0, 0, 0, 0, 1], _I64)}),
    "gather_channels": ([_node("Gather", ["x", "i"], axis=1)], {"i": np.array([3, -4, 1], _I64)}),
    "transpose_matmul": (
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 3, 1]), _node("MatMul", ["t", "m"])],
        {"m": np.ones((4, 5)) * 0.3},
    ),
    "split_concat": (
        [helper.make_node("Split", ["x"], ["a", "b"], axis=1), _node("Concat", ["b", "a"], axis=1)],
        {},
    ),
    "flatten_unsqueeze_squeeze": (
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("Unsqueeze", ["f", "ax"], ["u"]),
            _node("Squeeze", ["u", "ax"]),
        ],
        {"ax": np.array([-1], _I64)},
    ),
    "expand_where": (
        [
            helper.make_node("Expand", ["c", "shape"], ["e"]),
            helper.make_node("Greater", ["x", "e"], ["g"]),
            _node("Where", ["g", "x", "e"]),
        ],
        {"c": np.full((1, 4, 1, 1), 0.5), "shape": np.array([1, 4, 6, 6], _I64)},
    ),
    "div_sub_pow_sqrt": (
        [
            helper.make_node("Mul", ["x", "x"], ["sq"]),
            helper.make_node("Add", ["sq", "one"], ["p"]),
            helper.make_node("Sqrt", ["p"], ["r"]),
            helper.make_node("Div", ["x", "r"], ["d"]),
            _node("Pow", ["d", "two"]),
        ],
        {"one": np.float32(1), "two": np.float32(2)},
    ),
}


@pytest.mark.parametrize("case", OPS, ids=list(OPS))
def test_evaluator_ops_match_onnxruntime(case: str) -> None:
    """Each op the evaluator implements against onnxruntime, on a batch of three (exported batch 1)."""
    rng = np.random.default_rng(5)
    nodes, inits = OPS[case]
    weights = {"w": rng.standard_normal((6, 4, 3, 3)), "wg": rng.standard_normal((6, 2, 3, 3))}
    used = {k: v for k, v in {**weights, **inits}.items() if any(k in n.input for n in nodes)}
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], used)
    samples = [{"x": rng.standard_normal((1, 4, 6, 6)).astype(np.float32)} for _ in range(3)]
    assert onnx_torch.check_against_onnxruntime(onnx_torch.onnx_to_torch(model), model, samples) < 1e-5
