"""Naming a TFLite tensor after the user's layer: on the Keras layers and ONNX nodes of a real
conversion (tests/zoo/models.py:resnet_basic with onnx2tf 1.29, captured from `edgeport convert`)."""

from __future__ import annotations

import onnx
from onnx import helper

from edgeport.converters.layer_names import layer_sources, module_path, safe_node_names, tensor_source

NODES = [
    ("/stem/stem.0/Conv", "Conv"),
    ("/stem/stem.2/Relu", "Relu"),
    ("/pool/MaxPool", "MaxPool"),
    ("/layers/layers.0/conv1/conv1.0/Conv", "Conv"),
    ("/layers/layers.0/conv1/conv1.2/Relu", "Relu"),
    ("/layers/layers.0/conv2/conv2.0/Conv", "Conv"),
    ("/layers/layers.0/Add", "Add"),
    ("/layers/layers.0/Relu", "Relu"),
    ("/layers/layers.1/conv1/conv1.0/Conv", "Conv"),
    ("/layers/layers.1/conv1/conv1.2/Relu", "Relu"),
    ("/layers/layers.1/conv2/conv2.0/Conv", "Conv"),
    ("/layers/layers.1/down/down.0/Conv", "Conv"),
    ("/layers/layers.1/Add", "Add"),
    ("/layers/layers.1/Relu", "Relu"),
]
# The Keras layers in topological order, with the ONNX node name onnx2tf called each with (if any).
LAYERS: list[tuple[str, str | None]] = [
    ("tf.nn.convolution", None),
    ("tf.math.add", None),
    ("tf.nn.relu", "/stem/stem.2/Relu"),
    ("tf.compat.v1.pad", None),
    ("tf.nn.max_pool2d", None),
    ("tf.compat.v1.transpose", "transpose"),
    ("tf.nn.convolution_3", None),
    ("tf.math.add_3", None),
    ("tf.nn.relu_1", "/layers/layers.0/conv1/conv1.2/Relu"),
    ("tf.compat.v1.transpose_1", "transpose"),
    ("tf.nn.convolution_6", None),
    ("tf.math.add_6", None),
    ("tf.compat.v1.transpose_3", "transpose"),
    ("tf.compat.v1.transpose_4", "transpose"),
    ("tf.math.add_8", "/layers/layers.0/Add"),
    ("tf.nn.relu_2", "/layers/layers.0/Relu"),
    ("tf.compat.v1.pad_1", None),
    ("tf.compat.v1.transpose_5", "transpose"),
    ("tf.nn.convolution_14", None),
    ("tf.math.add_16", None),
    ("tf.nn.relu_3", "/layers/layers.1/conv1/conv1.2/Relu"),
    ("tf.compat.v1.transpose_6", "transpose"),
    ("tf.nn.convolution_15", None),
    ("tf.nn.convolution_18", None),
    ("tf.math.add_17", None),
    ("tf.math.add_20", None),
    ("tf.compat.v1.transpose_8", None),
    ("tf.compat.v1.transpose_9", None),
    ("tf.math.add_23", "/layers/layers.1/Add"),
    ("tf.nn.relu_4", "/layers/layers.1/Relu"),
]
NAMES = [n for n, _ in NODES]
SOURCES = layer_sources(LAYERS, NAMES, [t for _, t in NODES])


def test_fused_tensors_are_named_after_the_onnx_node_they_output() -> None:
    # Conv + bias + Relu fused: the Relu's output.
    fused = (
        "model_15/tf.nn.relu_1/Relu;model_15/tf.math.add_3/Add;"
        "model_15/tf.nn.convolution_3/convolution;Const_19"
    )
    assert tensor_source(fused, SOURCES, NAMES) == "/layers/layers.0/conv1/conv1.2/Relu"
    conv = "model_15/tf.math.add_6/Add;model_15/tf.nn.convolution_6/convolution;Const_17"
    assert tensor_source(conv, SOURCES, NAMES) == "/layers/layers.0/conv2/conv2.0/Conv"


def test_unnamed_layers_between_several_nodes_match_by_kind_and_order() -> None:
    # A block with a projection shortcut: two convolutions between the same named layers.
    first = "model_15/tf.math.add_17/Add;model_15/tf.nn.convolution_15/convolution;Const_10"
    assert tensor_source(first, SOURCES, NAMES) == "/layers/layers.1/conv2/conv2.0/Conv"
    assert SOURCES["tf.nn.convolution_18"] == "/layers/layers.1/down/down.0/Conv"
    assert SOURCES["tf.nn.max_pool2d"] == "/pool/MaxPool"
    # Layers that could belong to either node stay unnamed rather than guessed.
    assert "tf.math.add_17" not in SOURCES and "tf.compat.v1.pad" not in SOURCES
    assert tensor_source("model_15/tf.compat.v1.pad/PadV2", SOURCES, NAMES) is None
    # One node between the named layers around it: every unnamed layer there is that node's.
    assert SOURCES["tf.compat.v1.pad_1"] == "/layers/layers.1/conv1/conv1.0/Conv"
    assert SOURCES["tf.math.add"] == "/stem/stem.0/Conv"


def test_layers_called_with_a_name_that_is_no_onnx_node_are_unnamed() -> None:
    assert "tf.compat.v1.transpose" not in SOURCES
    assert set(SOURCES.values()) <= set(NAMES)


def test_module_path_of_torch_exported_nodes() -> None:
    assert module_path("/layer1/layer1.0/conv1/Conv") == "layer1.0.conv1"
    assert module_path("/layers/layers.0/conv2/conv2.0/Conv") == "layers.0.conv2.0"
    assert module_path("/model/layers.0/self_attn/q_proj/MatMul") == "model.layers.0.self_attn.q_proj"
    assert module_path("/features/features.5/Relu") == "features.5"
    assert module_path("/Add") is None  # the top-level module's own op
    assert module_path("conv1_output") is None  # not the torch exporter's form


def test_names_onnx2tf_saw_map_back_to_the_source_names() -> None:
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="Softmax@0"),
        helper.make_node("Relu", ["a"], ["y"], name="/b/Relu"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    assert safe_node_names(helper.make_model(graph)) == {"Softmax_0": "Softmax@0", "/b/Relu": "/b/Relu"}
