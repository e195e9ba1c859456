import numpy as np
from onnx import helper

from edgeport.converters.rewrites import grouped_conv, onnx2tf_options_for
from tests.onnx_graphs import make_model


def conv_graph(channels: int, out: int, groups: int, kernel=(3, 3)):
    weight = np.random.default_rng(0).standard_normal((out, channels // groups, *kernel))
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=groups, kernel_shape=list(kernel), name="c")
    return make_model([node], {"x": [1, channels, *[9] * len(kernel)]}, ["y"], {"w": weight})


def test_grouped_convs_of_any_group_count_ask_onnx2tf_to_split_them():
    for channels, out, groups, kernel in ((12, 24, 2, (1, 1)), (12, 12, 3, (3, 3)), (12, 8, 4, (3,))):
        model = conv_graph(channels, out, groups, kernel)
        assert grouped_conv.grouped_convs(model) == ["c"]
        assert onnx2tf_options_for(model)["disable_group_convolution"] is True


def test_depthwise_and_plain_convs_need_no_option():
    for model in (conv_graph(12, 12, 12), conv_graph(12, 36, 12), conv_graph(12, 24, 1)):
        assert grouped_conv.grouped_convs(model) == []
        assert "disable_group_convolution" not in onnx2tf_options_for(model)
