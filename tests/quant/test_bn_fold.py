"""BN folding rules, each on a hand-built graph checked with onnxruntime before vs after."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from onnx import helper

from edgeport.quant.bn_fold import fold_batch_norms, has_padding
from tests.quant.helpers import bn_node, bn_params, make_model, max_rel_error, op_count

n = helper.make_node
TOL = 1e-5


def rng() -> np.random.Generator:
    return np.random.default_rng(1)


def conv(name: str, x: str, y: str, w: str, b: str | None = None, **kw):
    return n("Conv", [x, w] + ([b] if b else []), [y], name=name, **kw)


def fold(model):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean model must not warn
        return fold_batch_norms(model)


def assert_folded(model, report, bns: int = 1) -> None:
    after_bns = op_count(model, "BatchNormalization")
    assert after_bns == 0 and len(report.folded) == bns and not report.left, report.to_dict()


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("group", [1, 2, 8])  # dense, grouped, depthwise
def test_bn_after_conv_folds_into_it(bias: bool, group: int) -> None:
    r = rng()
    inits = {"w": r.standard_normal((8, 8 // group, 3, 3)), **bn_params("bn", 8, r, positive=False)}
    if bias:
        inits["cb"] = r.standard_normal(8)
    nodes = [
        conv("c", "x", "t", "w", "cb" if bias else None, group=group, pads=[1, 1, 1, 1]),
        bn_node("bn", "t", "y"),
    ]
    model = make_model(nodes, {"x": [2, 8, 6, 6]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert report.folded[0]["into"] == ["c"] and report.folded[0]["direction"] == "backward"
    assert op_count(out, "Conv") == 1 and len(out.graph.node) == 1
    assert [o.name for o in out.graph.output] == ["y"]
    assert max_rel_error(model, out) < TOL


@pytest.mark.parametrize("group", [1, 2])
def test_bn_after_conv_transpose(group: int) -> None:
    r = rng()
    inits = {
        "w": r.standard_normal((4, 6 // group, 3, 3)),
        "cb": r.standard_normal(6),
        **bn_params("bn", 6, r, False),
    }
    nodes = [
        n("ConvTranspose", ["x", "w", "cb"], ["t"], group=group, strides=[2, 2]),
        bn_node("bn", "t", "y"),
    ]
    model = make_model(nodes, {"x": [1, 4, 5, 5]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert max_rel_error(model, out) < TOL


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c,beta", [(False, 1.0), (True, 1.0), (True, 0.5)])
def test_bn_after_gemm(trans_b: int, with_c: bool, beta: float) -> None:
    r = rng()
    inits = {"w": r.standard_normal((7, 5) if trans_b else (5, 7)), **bn_params("bn", 7, r, False)}
    ins = ["x", "w"]
    if with_c:
        inits["c"] = r.standard_normal(7)
        ins.append("c")
    nodes = [n("Gemm", ins, ["t"], transB=trans_b, beta=beta, alpha=1.5), bn_node("bn", "t", "y")]
    model = make_model(nodes, {"x": [3, 5]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert max_rel_error(model, out) < TOL


def test_bn_after_matmul_becomes_gemm_with_bias() -> None:
    r = rng()
    inits = {"w": r.standard_normal((5, 7)), **bn_params("bn", 7, r, False)}
    model = make_model([n("MatMul", ["x", "w"], ["t"]), bn_node("bn", "t", "y")], {"x": [3, 5]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert [node.op_type for node in out.graph.node] == ["Gemm"]
    assert max_rel_error(model, out) < TOL


def test_mul_add_pair_after_batched_matmul_folds_into_weight_and_bias() -> None:
    r = rng()
    inits = {
        "w": r.standard_normal((8, 6)),
        "bias": r.standard_normal(6),
        "s": r.uniform(-2, 2, 6),
        "o": r.standard_normal(6),
    }
    nodes = [
        n("MatMul", ["x", "w"], ["mm"]),
        n("Add", ["mm", "bias"], ["t"]),
        n("Mul", ["t", "s"], ["u"]),
        n("Add", ["u", "o"], ["y"]),
    ]
    model = make_model(nodes, {"x": [2, 5, 8]}, ["y"], inits)
    out, report = fold(model)
    assert report.found[0]["kind"] == "Mul+Add" and len(report.folded) == 1
    assert [node.op_type for node in out.graph.node] == ["MatMul", "Add"]
    assert max_rel_error(model, out) < TOL


def test_bn_after_concat_splits_into_each_input() -> None:
    r = rng()
    inits = {
        "w1": r.standard_normal((3, 4, 3, 3)),
        "w2": r.standard_normal((5, 4, 1, 1)),
        **bn_params("bn", 8, r, False),
    }
    nodes = [
        conv("c1", "x", "a", "w1", pads=[1, 1, 1, 1]),
        conv("c2", "x", "b", "w2"),
        n("Concat", ["a", "b"], ["cat"], axis=1),
        bn_node("bn", "cat", "y"),
    ]
    model = make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert report.folded[0]["into"] == ["c1", "c2"] and report.folded[0]["through"] == ["Concat"]
    assert max_rel_error(model, out) < TOL


def test_bn_after_residual_add_folds_into_both_branches_and_compensates_shared_tensor() -> None:
    # t = relu(conv0(x)); y = BN(conv1(t) + t). t also feeds conv1, which gets the inverse scale.
    r = rng()
    inits = {
        "w0": r.standard_normal((6, 3, 3, 3)),
        "w1": r.standard_normal((6, 6, 3, 3)),
        **bn_params("bn", 6, r),
    }
    nodes = [
        conv("c0", "x", "p", "w0", pads=[1, 1, 1, 1]),
        n("Relu", ["p"], ["t"]),
        conv("c1", "t", "u", "w1", pads=[1, 1, 1, 1]),
        n("Add", ["u", "t"], ["s"]),
        bn_node("bn", "s", "y"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert set(report.folded[0]["into"]) == {"c0", "c1"} and "Relu" in report.folded[0]["through"]
    assert [node.op_type for node in out.graph.node] == ["Conv", "Relu", "Conv", "Add"]
    assert max_rel_error(model, out) < TOL


def test_negative_scale_never_passes_a_relu() -> None:
    r = rng()
    inits = {"w0": r.standard_normal((6, 3, 3, 3)), "w1": r.standard_normal((6, 6, 3, 3))}
    inits.update(bn_params("bn", 6, r, g=[1, -1, 1, 1, 1, 1]))
    nodes = [
        conv("c0", "x", "p", "w0", pads=[1, 1, 1, 1]),
        n("Relu", ["p"], ["t"]),
        conv("c1", "t", "u", "w1", pads=[1, 1, 1, 1]),
        n("Add", ["u", "t"], ["s"]),
        bn_node("bn", "s", "y"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    (left,) = report.left
    assert "non-positive scale" in left["reason"] and left["now"] == "depthwise 1x1 Conv"
    assert op_count(out, "BatchNormalization") == 0 and op_count(out, "Conv") == 3
    assert max_rel_error(model, out) < TOL


def test_positive_scale_through_relu_and_shift_through_maxpool() -> None:
    r = rng()
    inits = {
        "w": r.standard_normal((4, 3, 3, 3)),
        **bn_params("bn1", 4, r, b=0.0, m=0.0),
        **bn_params("bn2", 4, r),
    }
    nodes = [
        conv("c", "x", "t", "w", pads=[1, 1, 1, 1]),
        n("Relu", ["t"], ["r"]),
        bn_node("bn1", "r", "s"),  # pure scale: passes the ReLU
        n("MaxPool", ["s"], ["m"], kernel_shape=[2, 2], strides=[2, 2]),
        bn_node("bn2", "m", "y"),  # scale and shift: pass the max-pool, then stop at the ReLU
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    assert [f["name"] for f in report.folded] == ["bn1"]
    (left,) = report.left
    assert left["name"] == "bn2" and "shift does not commute with Relu" in left["reason"]
    assert max_rel_error(model, out) < TOL


def test_bn_after_relu_folds_forward_into_unpadded_conv() -> None:
    r = rng()
    inits = {
        "w0": r.standard_normal((4, 3, 3, 3)),
        "w1": r.standard_normal((5, 4, 1, 1)),
        **bn_params("bn", 4, r),
    }
    nodes = [
        conv("c0", "x", "t", "w0", pads=[1, 1, 1, 1]),
        n("Relu", ["t"], ["r"]),
        bn_node("bn", "r", "b"),
        conv("c1", "b", "y", "w1"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert report.folded[0]["direction"] == "forward" and report.folded[0]["into"] == ["c1"]
    assert max_rel_error(model, out) < TOL


def test_bn_before_padded_conv_is_not_folded_forward() -> None:
    # BN at the graph input, then a zero-padded conv: folding forward would be wrong at the borders.
    r = rng()
    inits = {"w": r.standard_normal((5, 3, 3, 3)), **bn_params("bn", 3, r)}
    nodes = [bn_node("bn", "x", "b"), conv("c", "b", "y", "w", pads=[1, 1, 1, 1])]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    (left,) = report.left
    assert "zero-pads" in left["reason"] and left["now"] == "depthwise 1x1 Conv"
    assert [node.op_type for node in out.graph.node] == ["Conv", "Conv"]
    assert max_rel_error(model, out) < TOL


@pytest.mark.parametrize(
    ("kw", "padded"),
    [
        ({}, False),
        ({"auto_pad": "NOTSET"}, False),
        ({"auto_pad": "VALID"}, False),
        ({"pads": [0, 0, 0, 0]}, False),
        ({"auto_pad": "SAME_UPPER"}, True),
        ({"auto_pad": "SAME_LOWER"}, True),
        ({"pads": [0, 1, 0, 0]}, True),
    ],
)
def test_has_padding_reads_auto_pad_and_pads(kw: dict, padded: bool) -> None:
    assert has_padding(conv("c", "x", "y", "w", **kw)) is padded


@pytest.mark.parametrize("pads", [[0, 0, 0, 0], None])
def test_input_bn_folds_forward_into_unpadded_conv(pads) -> None:
    r = rng()
    inits = {"w": r.standard_normal((4, 3, 3, 3)), **bn_params("bn", 3, r, False)}
    nodes = [bn_node("bn", "x", "b"), conv("c", "b", "y", "w", **({"pads": pads} if pads else {}))]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert max_rel_error(model, out) < TOL


def test_bn_before_classifier_folds_forward_through_flatten() -> None:
    r = rng()
    inits = {
        "w0": r.standard_normal((6, 3, 3, 3)),
        "fc": r.standard_normal((10, 6)),
        "fb": r.standard_normal(10),
    }
    inits.update(bn_params("bn", 6, r, False))
    nodes = [
        conv("c0", "x", "t", "w0"),
        n("Relu", ["t"], ["r"]),
        n("GlobalAveragePool", ["r"], ["p"]),
        bn_node("bn", "p", "b"),
        n("Flatten", ["b"], ["f"]),
        n("Gemm", ["f", "fc", "fb"], ["y"], transB=1),
    ]
    model = make_model(nodes, {"x": [2, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert report.folded[0]["direction"] == "forward" and report.folded[0]["into"] == ["Gemm_5"]
    assert max_rel_error(model, out) < TOL


@pytest.mark.parametrize("uniform", [True, False])
def test_relu6_passes_only_a_uniform_scale(uniform: bool) -> None:
    r = rng()
    gamma = np.full(4, 1.7) if uniform else r.uniform(0.5, 2, 4)
    inits = {"w": r.standard_normal((4, 3, 3, 3)), "lo": np.array(0.0), "hi": np.array(6.0)}
    inits.update(bn_params("bn", 4, r, g=gamma, b=0.0, m=0.0, v=1.0))
    nodes = [
        conv("c", "x", "t", "w", pads=[1, 1, 1, 1]),
        n("Clip", ["t", "lo", "hi"], ["r"]),
        bn_node("bn", "r", "y"),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], inits)
    out, report = fold(model)
    if uniform:
        assert_folded(out, report)
    else:
        assert "per-channel bounds" in report.left[0]["reason"]
    assert max_rel_error(model, out) < TOL


def test_rank2_standalone_bn_becomes_mul_add() -> None:
    r = rng()
    inits = bn_params("bn", 5, r)
    model = make_model([bn_node("bn", "x", "b"), n("Relu", ["b"], ["y"])], {"x": [3, 5]}, ["y"], inits)
    out, report = fold(model)
    assert report.left[0]["now"] == "Mul+Add"
    assert [node.op_type for node in out.graph.node] == ["Mul", "Add", "Relu"]
    assert max_rel_error(model, out) < TOL


def test_bn_output_that_is_a_graph_output_and_also_read_inside() -> None:
    r = rng()
    inits = {"w": r.standard_normal((4, 3, 1, 1)), **bn_params("bn", 4, r, False)}
    nodes = [conv("c", "x", "t", "w"), bn_node("bn", "t", "y"), n("Relu", ["y"], ["z"])]
    model = make_model(nodes, {"x": [1, 3, 4, 4]}, ["y", "z"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert [o.name for o in out.graph.output] == ["y", "z"]
    assert max_rel_error(model, out) < TOL


@pytest.mark.parametrize(
    "override,problem",
    [
        ({"v": -1.0}, "var + epsilon <= 0"),
        ({"v": 0.0, "eps": 0.0}, "var + epsilon <= 0"),
        ({"v": -1e-5, "eps": 1e-5}, "var + epsilon <= 0"),
        ({"g": 1e30, "v": 1e-30, "eps": 0.0}, "overflows float32"),
        ({"g": np.nan}, "NaN or inf"),
        ({"m": np.inf}, "NaN or inf"),
    ],
)
def test_degenerate_statistics_warn_and_stay(override: dict, problem: str) -> None:
    r = rng()
    eps = override.pop("eps", 1e-5)
    inits = {"w": r.standard_normal((4, 3, 1, 1)), **bn_params("bn", 4, r, **override)}
    model = make_model(
        [conv("c", "x", "t", "w"), bn_node("bn", "t", "y", eps=eps)], {"x": [1, 3, 4, 4]}, ["y"], inits
    )
    with pytest.warns(UserWarning, match="left unfolded"):
        out, report = fold_batch_norms(model)
    assert op_count(out, "BatchNormalization") == 1 and not report.folded
    assert problem in report.left[0]["reason"] and report.warnings
    for init in out.graph.initializer:  # no NaN introduced into the conv
        if init.name == "w":
            from onnx import numpy_helper

            assert np.all(np.isfinite(numpy_helper.to_array(init)))


def test_report_is_json_and_input_model_is_untouched() -> None:
    r = rng()
    inits = {"w": r.standard_normal((4, 3, 1, 1)), **bn_params("bn", 4, r)}
    model = make_model([conv("c", "x", "t", "w"), bn_node("bn", "t", "y")], {"x": [1, 3, 4, 4]}, ["y"], inits)
    before = model.SerializeToString()
    out, report = fold(model)
    assert model.SerializeToString() == before
    data = json.loads(json.dumps(report.to_dict()))
    assert data["found"] == 1 and data["folded"] == 1 and data["left"] == 0
    assert set(report.activation_stats) == {"y"}


@pytest.mark.parametrize("op", ["Add", "Sub"])
def test_residual_fold_is_refused_when_a_shared_reader_cannot_compensate(op: str) -> None:
    # t feeds the residual and a Sigmoid: changing t would change the Sigmoid's output.
    r = rng()
    inits = {
        "w0": r.standard_normal((4, 3, 1, 1)),
        "w1": r.standard_normal((4, 4, 1, 1)),
        **bn_params("bn", 4, r),
    }
    nodes = [
        conv("c0", "x", "t", "w0"),
        conv("c1", "t", "u", "w1"),
        n(op, ["u", "t"], ["s"]),
        bn_node("bn", "s", "y"),
        n("Sigmoid", ["t"], ["z"]),
    ]
    model = make_model(nodes, {"x": [1, 3, 4, 4]}, ["y", "z"], inits)
    out, report = fold(model)
    (left,) = report.left
    assert "other reader" in left["reason"] and "Sigmoid" in left["reason"]
    assert max_rel_error(model, out) < TOL


def test_sub_residual_folds_into_both_branches() -> None:
    r = rng()
    inits = {
        "w0": r.standard_normal((4, 3, 1, 1)),
        "w1": r.standard_normal((4, 4, 3, 3)),
        **bn_params("bn", 4, r, False),
    }
    nodes = [
        conv("c0", "x", "t", "w0"),
        conv("c1", "t", "u", "w1", pads=[1, 1, 1, 1]),
        n("Sub", ["u", "t"], ["s"]),
        bn_node("bn", "s", "y"),
    ]
    model = make_model(nodes, {"x": [1, 3, 6, 6]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert max_rel_error(model, out) < TOL


def test_bn_parameters_shared_through_identity_nodes_still_fold() -> None:
    """torch's exporter shares identical initializers through Identity nodes (an untrained model's
    BNs all have weight 1, bias 0, mean 0, var 1): those parameters are constants too."""
    r = rng()
    inits = {"w": r.standard_normal((8, 8, 3, 3)), "ones": np.ones(8), "zeros": np.zeros(8)}
    nodes = [
        conv("c", "x", "t", "w", None, pads=[1, 1, 1, 1]),
        n("Identity", ["ones"], ["bn_g"]),
        n("Identity", ["zeros"], ["bn_b"]),
        n("Identity", ["zeros"], ["bn_m"]),
        n("Identity", ["ones"], ["bn_v"]),
        bn_node("bn", "t", "y"),
    ]
    model = make_model(nodes, {"x": [2, 8, 6, 6]}, ["y"], inits)
    out, report = fold(model)
    assert_folded(out, report)
    assert op_count(out, "BatchNormalization") == 0
    assert max_rel_error(model, out) < TOL
