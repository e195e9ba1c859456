"""Where each element of a tensor comes from, for regions made of ops that only move elements.

A chain of Reshape / Transpose / Split / Concat / Gather / Slice ... is a fixed map from the elements
of its input to the elements of its output. Running the chain on a tensor holding each element's own
flat index (int64, onnxruntime) reads that map off directly, whatever the ops and in whatever
spelling the exporter wrote them; the rewrites then check the map has the structure they need
(a head split, a channel permutation) instead of parsing the ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeport.onnx_graph import OnnxGraph
from edgeport.runtimes import onnxrt

# Ops that only move or select elements: input 0 is data (all inputs for Concat), the rest constants.
MOVE_OPS = {
    "Reshape",
    "Transpose",
    "Unsqueeze",
    "Squeeze",
    "Gather",
    "Split",
    "Slice",
    "Identity",
    "Flatten",
    "Concat",
}


def data_inputs(node: onnx.NodeProto) -> list[str]:
    return [i for i in node.input if i] if node.op_type == "Concat" else list(node.input[:1])


def params_constant(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    """True when every non-data input of `node` (shape, axes, indices, sizes) is a constant."""
    data = set(data_inputs(node))
    return all(view.const(i) is not None for i in node.input if i and i not in data)


def element_sources(view: OnnxGraph, nodes: Sequence[onnx.NodeProto], source: str, target: str) -> np.ndarray:
    """For each element of `target`, the flat index of the `source` element it is a copy of.

    `nodes` (in graph order) compute `target` from `source` and constants; a Mul or Div among them
    counts as the identity (a scalar scale the caller accounts for). Raises ValueError when they do
    not run on indices."""
    shape = view.static_shape(source)
    if shape is None:
        raise ValueError(f"{source} has no static shape")
    index = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    if not nodes:
        return index
    graph_nodes, inits, made = [], {}, {source}
    for node in nodes:
        if node.op_type in ("Mul", "Div"):
            data = (
                node.input[1]
                if node.op_type == "Mul" and view.const(node.input[0]) is not None
                else node.input[0]
            )
            node = helper.make_node("Identity", [data], [node.output[0]])
        graph_nodes.append(node)
        for name in node.input:
            if name and name not in made and name not in inits:
                value = view.const(name)
                if value is None:
                    raise ValueError(f"{name} is neither computed in the region nor constant")
                inits[name] = numpy_helper.from_array(value, name)
        made.update(node.output)
    graph = helper.make_graph(
        graph_nodes,
        "index_trace",
        [helper.make_tensor_value_info(source, TensorProto.INT64, shape)],
        [helper.make_tensor_value_info(target, TensorProto.INT64, None)],
        list(inits.values()),
    )
    model = helper.make_model(graph, opset_imports=list(view.model.opset_import))
    model.ir_version = 8
    try:
        session = onnxrt.session(model.SerializeToString())
        (out,) = session.run([target], {source: index})
    except Exception as exc:  # noqa: BLE001 - a region onnxruntime cannot run on indices is no map
        raise ValueError(f"the ops before {target} do not run on indices ({type(exc).__name__})") from exc
    return out
