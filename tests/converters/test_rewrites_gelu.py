import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from edgeport.converters.rewrites import gelu
from tests.onnx_graphs import assert_same_outputs, make_model, ops, random_feeds, run


def gelu_graph(order="torch", sqrt2=math.sqrt(2.0), half=0.5, as_mul=False):
    consts = {"w": np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)}
    consts["one"] = np.array(1.0, np.float32)
    consts["half"] = np.array(half, np.float32)
    if as_mul:
        consts["k"] = np.array(1.0 / sqrt2, np.float32)
        scale = helper.make_node("Mul", ["h", "k"], ["s"])
    else:
        consts["k"] = np.array(sqrt2, np.float32)
        scale = helper.make_node("Div", ["h", "k"], ["s"])
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), scale, helper.make_node("Erf", ["s"], ["e"])]
    nodes.append(helper.make_node("Add", ["one", "e"], ["a"]))
    if order == "torch":  # (x * (1 + erf)) * 0.5, as torch.onnx exports nn.GELU()
        nodes += [helper.make_node("Mul", ["h", "a"], ["m"]), helper.make_node("Mul", ["m", "half"], ["y"])]
    else:  # ((1 + erf) * 0.5) * x
        nodes += [helper.make_node("Mul", ["a", "half"], ["m"]), helper.make_node("Mul", ["h", "m"], ["y"])]
    return make_model(nodes, {"x": [2, 6]}, ["y"], consts)


def test_erf_gelu_becomes_one_contrib_gelu():
    for before in (gelu_graph(), gelu_graph(order="scaled_first"), gelu_graph(as_mul=True)):
        after = gelu.rewrite(before)
        assert ops(after) == {"MatMul": 1, "Gelu": 1}
        assert any(o.domain == gelu.DOMAIN for o in after.opset_import)
        assert_same_outputs(before, after)


def test_gelu_matches_the_erf_formula():
    before = gelu_graph()
    feeds = random_feeds(before)
    h = feeds["x"] @ np.random.default_rng(0).standard_normal((6, 6)).astype(np.float32)
    expected = 0.5 * h * (1 + np.vectorize(math.erf)(h / math.sqrt(2.0)))
    np.testing.assert_allclose(run(gelu.rewrite(before), feeds)[0], expected, rtol=1e-5, atol=1e-6)


def test_other_erf_uses_are_left_alone():
    for graph in (gelu_graph(sqrt2=2.0), gelu_graph(half=0.25)):
        after = gelu.rewrite(graph)
        assert after.SerializeToString() == graph.SerializeToString()


def test_shapes_downstream_of_gelu_are_declared():
    # onnx2tf (and the onnxsim run inside it) only knows shapes ONNX inference finds; past a contrib
    # Gelu it finds none unless the rewrite declares them.
    before = gelu_graph()
    before.graph.node.append(helper.make_node("Relu", ["y"], ["z"]))
    before.graph.node.append(helper.make_node("Unsqueeze", ["z", "axes"], ["u"]))
    before.graph.initializer.append(numpy_helper.from_array(np.array([0], np.int64), "axes"))
    del before.graph.output[:]
    before.graph.output.append(helper.make_tensor_value_info("u", TensorProto.FLOAT, None))
    after = gelu.rewrite(before)
    shapes = {
        v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in [*after.graph.value_info, *after.graph.output]
    }
    assert shapes["y"] == [2, 6] and shapes["z"] == [2, 6] and shapes["u"] == [1, 2, 6]
    assert_same_outputs(before, after)
