"""Which layer of the user's model a TFLite tensor comes from.

The TFLite converter names a tensor after the Keras layers fused into it, joined with ';'
(`model_2/tf.nn.relu_1/Relu;model_2/tf.nn.convolution_1/convolution`): TensorFlow names, not the
user's. onnx2tf builds one or more Keras layers per ONNX node and hands the node's name to some of
them (kept in the layer's call arguments, after onnx_prepare.tf_safe_names made it a valid
TensorFlow name). A layer without a name is credited to the ONNX node lying, in graph order,
between the named layers around it when there is one such node, or, among several, to the node of
its kind in the same position (the second convolution is the second Conv); otherwise it stays
unnamed rather than guessed. The torch exporter names a node after the module that ran it
(`/layer1/layer1.0/conv1/Conv` is `layer1.0.conv1`), which gives the PyTorch module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import onnx

from edgeport.converters.onnx_prepare import tf_safe_names

# The TensorFlow op a Keras layer runs (its name without the `tf.nn.` path and `_3` suffix) -> the
# ONNX op types onnx2tf builds it for: how an unnamed layer finds its node among several candidates.
_ONNX_TYPES = {
    "convolution": {"Conv"},
    "depthwise_conv2d": {"Conv"},
    "conv2d_transpose": {"ConvTranspose"},
    "conv1d_transpose": {"ConvTranspose"},
    "max_pool2d": {"MaxPool"},
    "max_pool1d": {"MaxPool"},
    "avg_pool2d": {"AveragePool"},
    "avg_pool1d": {"AveragePool"},
    "matmul": {"MatMul", "Gemm"},
    "reduce_mean": {"ReduceMean", "GlobalAveragePool"},
    "relu": {"Relu"},
    "sigmoid": {"Sigmoid"},
    "tanh": {"Tanh"},
    "softmax": {"Softmax"},
}


def layer_kind(layer: str) -> str:
    """`tf.nn.convolution_15` -> `convolution`."""
    return re.sub(r"_\d+$", "", layer).rsplit(".", 1)[-1]


def layer_sources(
    layers: Sequence[tuple[str, str | None]], onnx_nodes: Sequence[str], op_types: Sequence[str]
) -> dict[str, str]:
    """Keras layer name -> ONNX node name, for layers given in topological order as (layer name,
    ONNX node name it was called with or None); `onnx_nodes` and their `op_types` in graph order.

    A layer without a name lies between the named layers around it, and so do some ONNX nodes: one
    node is its node; among several, the k-th layer of a kind (convolution) is the k-th node of the
    matching type (Conv) when the counts agree; otherwise the layer stays unnamed."""
    index = {name: i for i, name in enumerate(onnx_nodes)}
    anchors = [index.get(source) if source is not None else None for _, source in layers]
    marks = [-1 if a is None else a for a in anchors]
    sources: dict[str, str] = {}
    last, i = -1, 0  # last: the latest ONNX node a layer so far was named after
    while i < len(layers):
        anchor = anchors[i]
        if anchor is not None:
            sources[layers[i][0]] = onnx_nodes[anchor]
            last, i = max(last, anchor), i + 1
            continue
        # The run of unnamed layers up to the next layer named after a later node.
        end = i
        while end < len(layers) and marks[end] <= last:
            end += 1
        after = anchors[end] if end < len(layers) else len(onnx_nodes)
        run = [name for (name, _), a in zip(layers[i:end], anchors[i:end], strict=True) if a is None]
        sources.update(_match_run(run, list(range(last + 1, after)), onnx_nodes, op_types))
        i = end
    return sources


def _match_run(
    run: Sequence[str], candidates: Sequence[int], onnx_nodes: Sequence[str], op_types: Sequence[str]
) -> dict[str, str]:
    if len(candidates) == 1:
        return dict.fromkeys(run, onnx_nodes[candidates[0]])
    matched: dict[str, str] = {}
    for kind in {layer_kind(name) for name in run} & _ONNX_TYPES.keys():
        of_kind = [name for name in run if layer_kind(name) == kind]
        nodes = [c for c in candidates if op_types[c] in _ONNX_TYPES[kind]]
        if len(of_kind) == len(nodes):
            matched.update({name: onnx_nodes[c] for name, c in zip(of_kind, nodes, strict=True)})
    return matched


def tensor_source(tflite_name: str, sources: Mapping[str, str], onnx_nodes: Sequence[str]) -> str | None:
    """The ONNX node whose output a TFLite tensor is: of the nodes its fused parts come from, the
    last in graph order (Conv then Relu fused into one tensor is the Relu's output)."""
    order = {name: i for i, name in enumerate(onnx_nodes)}
    found = [
        sources[segment]
        for part in tflite_name.split(";")
        for segment in part.split("/")
        if segment in sources
    ]
    return max(found, key=lambda name: order.get(name, -1)) if found else None


def module_path(onnx_node: str) -> str | None:
    """The PyTorch module a torch-exported node ran in: `/layer1/layer1.0/conv1/Conv` -> `layer1.0.conv1`.

    A scope segment is a child's attribute name (`conv1`), or, under a container, the container's
    segment and the child's index (`layer1.0`, `conv2.0` under `conv2`); the last segment is the op.
    None for a node of the top-level module (`/Add`) or a name not in the exporter's form."""
    parts = onnx_node.split("/")
    if len(parts) < 3 or parts[0] != "" or not all(parts[1:]):
        return None
    path, previous = "", ""
    for segment in parts[1:-1]:
        if previous and segment.startswith(f"{previous}."):
            path += segment[len(previous) :]
        else:
            path = f"{path}.{segment}" if path else segment
        previous = segment
    return path


def keras_layers(model: Any) -> list[tuple[str, str | None]]:
    """(layer name, the `name` it was called with) of every layer, nested models flattened, in order."""
    found: list[tuple[str, str | None]] = []
    for layer in model.layers:
        if isinstance(getattr(layer, "layers", None), list):  # a nested model (the --keep-nchw wrapper)
            found += keras_layers(layer)
            continue
        if type(layer).__name__ == "InputLayer":
            continue
        named = [
            n.call_kwargs.get("name")
            for n in getattr(layer, "_inbound_nodes", [])
            if isinstance(getattr(n, "call_kwargs", None), dict)
        ]
        found.append((layer.name, next((n for n in named if isinstance(n, str)), None)))
    return found


def safe_node_names(model: onnx.ModelProto) -> dict[str, str]:
    """The name onnx2tf saw (onnx_prepare.tf_safe_names) -> the node's name in `model`."""
    safe = tf_safe_names(model)
    return {s.name: n.name for s, n in zip(safe.graph.node, model.graph.node, strict=True) if n.name}


def name_layers(
    entries: Iterable[dict[str, Any]],
    keras_model: Any,
    model: onnx.ModelProto,
    modules: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Each fidelity entry (`tflite_name`, ...) with `source_name` (the ONNX node) and, for a PyTorch
    source (`modules`: its named modules), `module` added where they can be told."""
    to_source = safe_node_names(model)
    layers = [
        (layer, to_source.get(name, name) if name else None) for layer, name in keras_layers(keras_model)
    ]
    nodes = [n.name for n in model.graph.node]
    sources = layer_sources(layers, nodes, [n.op_type for n in model.graph.node])
    named = []
    for entry in entries:
        source = tensor_source(entry["tflite_name"], sources, nodes)
        module = module_path(source) if source and modules is not None else None
        extra: dict[str, Any] = {"source_name": source} if source else {}
        if module is not None and modules is not None and module in modules:
            extra["module"] = module
        named.append({**extra, **entry})
    return named
