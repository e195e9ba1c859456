"""If with two plain branches -> both branches inlined and Where(cond, then, else).

onnx2tf turns an If into tf.cond, and the TFLite converter lowers that to both branches and a
SELECT, which TFLite Micro has no kernel for (int8 or float): openwakeword's wake-word classifiers
gate a verifier network this way and were refused for int8. The converted model computed both
branches already; inlined, with the condition reshaped to a scalar, the Where picks the same values
exactly (a scalar condition becomes SELECT_V2, which TFLite Micro runs). Branches that hold nested
subgraphs, or whose outputs differ in type or static shape, are left alone.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, node_rewrite

NAME = "if_to_where"

log = logging.getLogger(__name__)


def _declared(value: onnx.ValueInfoProto) -> tuple[int, list[int]] | None:
    """(element type, static shape) a branch declares for an output, or None when not fully known."""
    tensor = value.type.tensor_type
    if not value.type.HasField("tensor_type") or not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in tensor.shape.dim]
    return (tensor.elem_type, dims) if all(d > 0 for d in dims) else None


def branches_agree(then_branch: onnx.GraphProto, else_branch: onnx.GraphProto) -> str:
    """Why the two branches cannot be inlined under a Where ("" when they can)."""
    for branch in (then_branch, else_branch):
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for n in branch.node
            for a in n.attribute
        ):
            return "a branch holds a nested subgraph"
    if len(then_branch.output) != len(else_branch.output):
        return "the branches have different numbers of outputs"
    for a, b in zip(then_branch.output, else_branch.output, strict=True):
        if _declared(a) is None or _declared(a) != _declared(b):
            return "the branch outputs differ in type or static shape, or do not declare them"
    return ""


def _inline(view: OnnxGraph, branch: onnx.GraphProto, hint: str) -> tuple[list[onnx.NodeProto], list[str]]:
    """The branch's nodes with every name it defines made fresh in the outer graph; its outputs."""
    renamed = {t.name: view.fresh(f"{hint}_{t.name}") for t in branch.initializer}
    for node in branch.node:
        renamed.update({o: view.fresh(f"{hint}_{o}") for o in node.output if o})
    for tensor in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = renamed[tensor.name]
        view.graph.initializer.append(copy)
    nodes = []
    for node in branch.node:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copy.name = view.fresh(f"{hint}_{node.name or node.op_type}")
        copy.input[:] = [renamed.get(i, i) for i in node.input]
        copy.output[:] = [renamed.get(o, o) for o in node.output]
        nodes.append(copy)
    return nodes, [renamed.get(o.name, o.name) for o in branch.output]


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
        return False
    branches = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
    if set(branches) != {"then_branch", "else_branch"}:
        return False
    why = branches_agree(branches["then_branch"], branches["else_branch"])
    if why:
        log.info("%s: %s left alone: %s", NAME, node.name, why)
        return False
    hint = node.name or "if"
    then_nodes, then_outs = _inline(view, branches["then_branch"], f"{hint}_then")
    else_nodes, else_outs = _inline(view, branches["else_branch"], f"{hint}_else")
    scalar = view.fresh(f"{hint}_cond")
    shape = view.add_initializer(np.zeros(0, np.int64), f"{hint}_scalar_shape")
    nodes = [
        *then_nodes,
        *else_nodes,
        helper.make_node("Reshape", [node.input[0], shape], [scalar], name=view.fresh(f"{hint}_cond")),
        *(
            helper.make_node("Where", [scalar, a, b], [out], name=view.fresh(f"{hint}_where"))
            for a, b, out in zip(then_outs, else_outs, node.output, strict=True)
        ),
    ]
    view.replace([node], nodes)
    return True


rewrite = node_rewrite(_match)
