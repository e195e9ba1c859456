"""Split into equal parts with explicit sizes -> the same Split without sizes (one TFLite SPLIT).

`torch.chunk` / `torch.split` export a Split with a constant `split` input even when the parts are
equal. onnx2tf turns every sized Split into one STRIDED_SLICE per output (to avoid Flex SplitV); a
Split without sizes it maps to `tf.split`, which is one builtin SPLIT. The ONNX meaning is the same:
with no sizes, Split cuts the axis into as many equal parts as it has outputs.
"""

from __future__ import annotations

import onnx

from edgeport.onnx_graph import OnnxGraph, attr, opset_version, set_attr

NAME = "equal_split_without_sizes"


def _match(view: OnnxGraph, node: onnx.NodeProto) -> bool:
    if node.op_type != "Split" or len(node.input) < 2 or not node.input[1] or len(node.output) < 2:
        return False
    sizes = view.const(node.input[1])
    shape = view.static_shape(node.input[0])
    if sizes is None or shape is None or len(set(sizes.reshape(-1).tolist())) != 1:
        return False
    axis = int(attr(node, "axis", 0)) % len(shape)
    if int(sizes.sum()) != shape[axis] or sizes.size != len(node.output):
        return False
    new = onnx.NodeProto()
    new.CopyFrom(node)
    del new.input[1:]
    if opset_version(view.model) >= 18:  # from opset 18 the part count is an attribute
        set_attr(new, "num_outputs", len(node.output))
    view.replace([node], [new])
    return True


def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
    view = OnnxGraph(model)
    if opset_version(view.model) < 13:  # `split` was an attribute before opset 13
        return view.finish()
    view.rewrite_each(_match)
    return view.finish()
