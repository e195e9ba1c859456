"""Exact (erf) GELU: `x * 0.5 * (1 + erf(x / sqrt(2)))` -> one `Gelu` node (com.microsoft domain).

PyTorch exports nn.GELU() as Div -> Erf -> Add -> Mul -> Mul. TFLite has no builtin Erf, so onnx2tf's
translation needs the Flex op FlexErf, which no microcontroller or stock Android runtime has (onnx2tf
has a detector for this pattern, but in 1.29.24 it never fires: it looks for a `.numpy()` method on a
constant that it holds as a numpy array). A single Gelu node is translated by onnx2tf to
`tf.nn.gelu(approximate=False)`, which the TFLite converter turns into the builtin GELU op.

The ai.onnx Gelu op only exists from opset 20 and raising a whole model's opset changes the meaning of
other ops (Reduce*, Resize, ...), so the node uses the onnxruntime contrib domain, whose Gelu has the
same exact-erf definition; onnxruntime runs it, so the ONNX stage is still verified.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph

NAME = "erf_gelu_to_gelu"
DOMAIN = "com.microsoft"


def _is_scalar(value: np.ndarray | None, expected: float, rtol: float = 1e-6) -> bool:
    return (
        value is not None
        and value.size == 1
        and bool(np.isclose(float(value.reshape(-1)[0]), expected, rtol))
    )


def _other(node: onnx.NodeProto, name: str) -> str | None:
    """The input of a binary node that is not `name` (None when `name` is not one of them)."""
    if len(node.input) != 2 or name not in node.input:
        return None
    return node.input[1] if node.input[0] == name else node.input[0]


def _scaled_input(view: OnnxGraph, node: onnx.NodeProto | None) -> str | None:
    """x when `node` computes x / sqrt(2) (as Div by sqrt 2 or Mul by 1/sqrt 2)."""
    if node is None or len(node.input) != 2:
        return None
    if node.op_type == "Div" and _is_scalar(view.const(node.input[1]), math.sqrt(2.0)):
        return node.input[0]
    if node.op_type == "Mul":
        for i in (0, 1):
            if _is_scalar(view.const(node.input[i]), 1.0 / math.sqrt(2.0)):
                return node.input[1 - i]
    return None


def _match(view: OnnxGraph, erf: onnx.NodeProto) -> bool:
    if erf.op_type != "Erf":
        return False
    scale = view.producer(erf.input[0])
    x = _scaled_input(view, scale)
    if x is None or view.is_graph_output(scale.output[0]) or len(view.consumers(scale.output[0])) != 1:
        return False
    add = view.only_consumer(erf.output[0], "Add")
    if add is None or not _is_scalar(view.const(_other(add, erf.output[0])), 1.0):
        return False
    first = view.only_consumer(add.output[0], "Mul")
    if first is None:
        return False
    second_in = _other(first, add.output[0])
    second = view.only_consumer(first.output[0], "Mul")
    if second is None:
        return False
    last_in = _other(second, first.output[0])
    # Either (x * (1 + erf)) * 0.5 or ((1 + erf) * 0.5) * x.
    if not (
        (second_in == x and _is_scalar(view.const(last_in), 0.5))
        or (last_in == x and _is_scalar(view.const(second_in), 0.5))
    ):
        return False
    gelu = helper.make_node(
        "Gelu", [x], [second.output[0]], name=view.fresh(second.name or "gelu"), domain=DOMAIN
    )
    view.replace([scale, erf, add, first, second], [gelu])
    return True


def with_gelu_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every tensor's shape in value_info, inferred across its Gelu nodes.

    ONNX shape inference stops at an op without a schema (the contrib Gelu), and so does the onnxsim
    run inside onnx2tf. Downstream of a Gelu onnx2tf then sees no shapes, takes every tensor for
    channels-first and transposes 3-D constants into the wrong layout (a second attention block after
    an MLP failed on its head weights that way). Gelu keeps its input's shape and type, so its output is
    declared like its input and inference resumes from there; onnxsim keeps declared shapes.
    """
    inferred = model
    while True:
        inferred = onnx.shape_inference.infer_shapes(inferred, strict_mode=False)
        known = {v.name: v for v in [*inferred.graph.input, *inferred.graph.value_info]}
        declared = [
            (node.input[0], node.output[0])
            for node in inferred.graph.node
            if node.op_type == "Gelu" and node.input[0] in known and node.output[0] not in known
        ]
        if not declared:
            return inferred
        for source, target in declared:
            info = inferred.graph.value_info.add()
            info.CopyFrom(known[source])
            info.name = target


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    if not view.changed:
        return view.finish()
    view.use_opset(DOMAIN, 1)
    return with_gelu_shapes(view.finish())
