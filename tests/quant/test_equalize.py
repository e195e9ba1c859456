"""Cross-layer equalization and high-bias absorption: exact in float, ranges actually equalized."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgeport.quant.bn_fold import fold_batch_norms
from edgeport.quant.equalize import _in_ranges, _out_ranges, absorb_high_bias, equalize_cross_layer
from tests.quant.helpers import make_model, max_rel_error

n = helper.make_node


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def node_weight(model: onnx.ModelProto, name: str) -> tuple[onnx.NodeProto, np.ndarray]:
    inits = weights(model)
    node = next(x for x in model.graph.node if x.name == name)
    return node, inits[node.input[1]]


def spread(r: np.ndarray) -> float:
    return float(r.max() / r.min())


def uneven(r: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Weights whose output channels span four orders of magnitude, as after BN folding."""
    return r.standard_normal(shape) * 10.0 ** r.uniform(-2, 2, (shape[0],) + (1,) * (len(shape) - 1))


def conv_relu_conv(group2: int = 1, act: str = "Relu") -> onnx.ModelProto:
    r = np.random.default_rng(2)
    inits = {
        "w1": uneven(r, (8, 3, 3, 3)),
        "b1": r.standard_normal(8),
        "w2": r.standard_normal((6 if group2 == 1 else 8, 8 // group2, 3, 3)),
        "b2": r.standard_normal(6 if group2 == 1 else 8),
    }
    nodes = [n("Conv", ["x", "w1", "b1"], ["t"], name="c1", pads=[1, 1, 1, 1])]
    if act == "Clip":
        inits.update(lo=np.array(0.0), hi=np.array(6.0))
        nodes.append(n("Clip", ["t", "lo", "hi"], ["r"], name="act"))
    else:
        nodes.append(n(act, ["t"], ["r"], name="act"))
    nodes.append(n("Conv", ["r", "w2", "b2"], ["y"], name="c2", pads=[1, 1, 1, 1], group=group2))
    return make_model(nodes, {"x": [2, 3, 8, 8]}, ["y"], inits)


@pytest.mark.parametrize("group2", [1, 8])  # dense and depthwise second layer
@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "MaxPool"])
def test_equalization_is_exact_and_equalizes_ranges(group2: int, act: str) -> None:
    model = conv_relu_conv(group2, act if act != "MaxPool" else "Relu")
    if act == "MaxPool":
        model.graph.node[1].op_type = "MaxPool"
        model.graph.node[1].attribute.extend([helper.make_attribute("kernel_shape", [2, 2])])
    node1, w1 = node_weight(model, "c1")
    out, report = equalize_cross_layer(model)
    assert len(report.pairs) == 1 and not report.skipped
    assert max_rel_error(model, out) < 1e-5
    node1, w1_after = node_weight(out, "c1")
    node2, w2_after = node_weight(out, "c2")
    r1, r2 = _out_ranges(node1, w1_after), _in_ranges(node2, w2_after)
    np.testing.assert_allclose(r1, r2, rtol=1e-4)  # both layers see the same per-channel range
    # one pair: ranges become sqrt(r1 * r2), so a 1000x spread falls to about its square root
    assert spread(_out_ranges(node1, w1)) > 10 * spread(r1)


def test_equalization_of_a_chain_converges_and_stays_exact() -> None:
    # conv -> relu -> depthwise -> relu -> conv: the middle layer has two neighbours
    r = np.random.default_rng(3)
    inits = {
        "w1": uneven(r, (8, 3, 3, 3)),
        "wd": uneven(r, (8, 1, 3, 3)),
        "bd": r.standard_normal(8),
        "w3": r.standard_normal((4, 8, 1, 1)),
    }
    nodes = [
        n("Conv", ["x", "w1"], ["a"], name="c1", pads=[1, 1, 1, 1]),
        n("Relu", ["a"], ["ar"]),
        n("Conv", ["ar", "wd", "bd"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
        n("Relu", ["d"], ["dr"]),
        n("Conv", ["dr", "w3"], ["y"], name="c3"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = equalize_cross_layer(model)
    assert len(report.pairs) == 2 and report.iterations > 1
    assert max_rel_error(model, out) < 1e-5


@pytest.mark.parametrize("trans_b", [0, 1])
def test_equalization_of_fully_connected_layers(trans_b: int) -> None:
    r = np.random.default_rng(4)
    w1 = uneven(r, (16, 5))  # [N, K] rows = output features
    inits = {"w1": w1 if trans_b else w1.T, "b1": r.standard_normal(16), "w2": r.standard_normal((16, 3))}
    nodes = [
        n("Gemm", ["x", "w1", "b1"], ["t"], name="g1", transB=trans_b),
        n("Relu", ["t"], ["r"]),
        n("MatMul", ["r", "w2"], ["y"], name="m2"),
    ]
    model = make_model(nodes, {"x": [4, 5]}, ["y"], inits)
    out, report = equalize_cross_layer(model)
    assert len(report.pairs) == 1
    assert max_rel_error(model, out) < 1e-5


def test_relu6_and_shared_tensors_are_left_alone() -> None:
    model = conv_relu_conv(act="Clip")
    out, report = equalize_cross_layer(model)
    assert not report.pairs and "per-channel" in report.skipped[0]["reason"]
    assert weights(out)["w1"].tobytes() == weights(model)["w1"].tobytes()
    # the ReLU output also read by a second layer: scaling it would change that reader
    model = conv_relu_conv()
    model.graph.node.append(n("Relu", ["t"], ["z"], name="other"))
    model.graph.output.append(helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, None))
    out, report = equalize_cross_layer(model)
    assert not report.pairs
    assert max_rel_error(model, out) == 0.0


def test_high_bias_absorption_is_exact_when_preactivations_stay_above_c() -> None:
    r = np.random.default_rng(5)
    inits = {
        "w1": r.standard_normal((6, 4)) * 0.01,  # |W1 x| < 0.3 for these inputs
        "b1": np.full(6, 5.0),
        "w2": r.standard_normal((3, 6)),
        "b2": r.standard_normal(3),
    }
    nodes = [
        n("Gemm", ["x", "w1", "b1"], ["t"], name="g1", transB=1),
        n("Relu", ["t"], ["h"]),
        n("Gemm", ["h", "w2", "b2"], ["y"], name="g2", transB=1),
    ]
    model = make_model(nodes, {"x": [8, 4]}, ["y"], inits)
    stats = {"t": {"mean": [5.0] * 6, "std": [0.1] * 6}}  # c = 4.7 < every pre-activation
    out, report = absorb_high_bias(model, stats)
    assert report.absorbed and report.absorbed[0]["channels"] == 6
    b1 = next(v for k, v in weights(out).items() if v.shape == (6,))
    np.testing.assert_allclose(b1, 0.3, atol=1e-6)  # 5.0 - 4.7 left in L1
    assert max_rel_error(model, out) < 1e-5


def test_high_bias_absorption_refuses_a_padded_second_layer() -> None:
    model = conv_relu_conv()
    stats = {"t": {"mean": [4.0] * 8, "std": [0.5] * 8}}
    out, report = absorb_high_bias(model, stats)
    assert not report.absorbed and "zero-pads" in report.skipped[0]["reason"]
    assert max_rel_error(model, out) == 0.0


def test_fold_then_equalize_then_absorb_on_resnet20() -> None:
    from tests.quant.test_bn_fold_models import _resnet20, export_module

    model = export_module(_resnet20(), [1, 3, 32, 32])
    folded, fold_report = fold_batch_norms(model)
    equalized, eq_report = equalize_cross_layer(folded, activation_stats=fold_report.activation_stats)
    assert len(eq_report.pairs) == 9  # conv1 -> relu -> conv2 inside each of the 9 blocks
    assert max_rel_error(model, equalized) < 1e-5
    # every conv pair in ResNet-20 is zero-padded 3x3: high-bias absorption must refuse them all
    absorbed, ab_report = absorb_high_bias(equalized, eq_report.activation_stats)
    assert not ab_report.absorbed and all("zero-pads" in s["reason"] for s in ab_report.skipped)
    assert max_rel_error(model, absorbed) < 1e-5
