"""int64 model inputs read only as Gather indices (token ids) become int32 inputs (ONNX allows both).

PyTorch exports an nn.Embedding's ids as an int64 input; onnx2tf keeps that type, and the .tflite's
GATHER then reads int64 positions, which TFLite Micro's GATHER refuses ("Positions of type 'INT64' are
not supported by gather"), so no embedding model could run on a microcontroller. An input qualifies only
when every node reading it uses it as a Gather's indices (or reads only its Shape): then the values are
indices into a table, which fit in int32, and nothing else sees the type change. The converted model's
input is int32 (feed it int32 ids); an input used any other way (arithmetic, a Cast, a graph output) is
left int64, with the reason in the pass report.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto

from edgeport.converters.rewrites.one_hot import one_hot_problem
from edgeport.onnx_graph import OnnxGraph
from edgeport.pipeline.passes import PassReport

NAME = "index_inputs_int32"
ABOUT = (
    "int64 model inputs used only as Gather indices (token ids) become int32 inputs (TFLite Micro's GATHER)"
)


class IndexInputsReport(PassReport):
    name: str = NAME
    converted: dict[str, str] = {}  # input name -> why it could become int32
    left: dict[str, str] = {}  # int64 input name -> why it stays int64

    def headline(self) -> str:
        return ", ".join(f"input {name} int64 -> int32" for name in self.converted)


def _why_not(view: OnnxGraph, name: str) -> str:
    """Why input `name` must stay int64: the first use other than as a Gather's indices or a Shape's
    input ("" when there is none)."""
    if view.is_graph_output(name):
        return "it is also a graph output"
    uses = view.consumers(name)
    if not uses:
        return "nothing reads it"
    for node in uses:
        positions = [i for i, read in enumerate(node.input) if read == name]
        if node.op_type == "Shape":  # reads the shape alone, and gives int64 whatever the input type
            continue
        # A OneHot's indices become a Gather's (converters/rewrites/one_hot.py), when it can rewrite it
        one_hot_indices = node.op_type == "OneHot" and positions == [0] and not one_hot_problem(view, node)
        if (node.op_type != "Gather" or positions != [1]) and not one_hot_indices:
            return f"node {node.name or node.op_type} ({node.op_type}) uses it as other than Gather indices"
    return ""


def convert_index_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, IndexInputsReport]:
    """The model with each qualifying int64 input made int32, and which inputs changed or stayed, why."""
    view = OnnxGraph(model)
    converted: dict[str, str] = {}
    left: dict[str, str] = {}
    for graph_input in view.graph.input:
        tensor_type = graph_input.type.tensor_type
        if view.is_initializer(graph_input.name) or tensor_type.elem_type != TensorProto.INT64:
            continue
        why_not = _why_not(view, graph_input.name)
        if why_not:
            left[graph_input.name] = why_not
            continue
        tensor_type.elem_type = TensorProto.INT32
        view.changed += 1
        converted[graph_input.name] = "read only as Gather indices (values must fit in int32)"
    return view.finish(), IndexInputsReport(converted=converted, left=left)
