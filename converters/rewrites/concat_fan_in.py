"""A Concat of more than 10 tensors -> a tree of Concats of at most 10.

TFLite Micro's CONCATENATION kernel takes at most 10 inputs (kMaxInputNum in concatenation.cc) and
refuses to prepare a model with more; LiteRT has no such limit, so the converted model runs there and
fails only on the microcontroller. Sequences are where such Concats come from: a recurrent layer
written out step by step (rnn_unroll) or a `torch.stack` / `torch.cat` over the steps of a hand-written
cell loop. Concatenating groups first and then the groups gives the same tensor.
"""

from __future__ import annotations

import onnx
from onnx import helper

from edgeport.onnx_graph import OnnxGraph, attr

NAME = "concat_fan_in"

MAX_INPUTS = 10


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Concat" or len(node.input) <= MAX_INPUTS:
        return False
    axis = int(attr(node, "axis"))
    new: list[onnx.NodeProto] = []
    inputs = list(node.input)
    while len(inputs) > MAX_INPUTS:
        groups = [inputs[i : i + MAX_INPUTS] for i in range(0, len(inputs), MAX_INPUTS)]
        inputs = []
        for group in groups:
            if len(group) == 1:
                inputs.append(group[0])
                continue
            out = view.fresh(f"{node.output[0]}_part")
            new.append(
                helper.make_node("Concat", group, [out], name=view.fresh(f"{node.name}_part"), axis=axis)
            )
            inputs.append(out)
    new.append(helper.make_node("Concat", inputs, list(node.output), name=node.name, axis=axis))
    view.replace([node], new)
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    view.rewrite_each(_match)
    return view.finish()
