"""MACs and parameters counted on the PyTorch module and on the exported ONNX graph agree on the zoo
models whose products are all modules (Conv, transposed Conv, Linear, nn.MultiheadAttention); a
product computed without a module (F.scaled_dot_product_attention) is seen on the exported graph only."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from edgeport.quant.prune.count import count_params, module_macs, onnx_counts
from edgeport.quant.prune.export import exported_graph
from tests.quant.prune_models import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import ZOO

# Residual + 1x1 projections, depthwise, ConvTranspose + concat, channel shuffle (a Reshape whose
# shape is computed), a resize between convolutions (shapes only onnxruntime finds), a 1-D causal pad,
# nn.MultiheadAttention inside a ViT and an encoder layer.
AGREE = (
    "resnet_basic",
    "mobilenet_v2",
    "unet",
    "shufflenet",
    "up_bilinear_x1_5",
    "causal_conv1d",
    "vit_tiny",
    "encoder_post_norm",
)


def _zoo(name: str):  # noqa: ANN202 - a ZooModel
    return next(m for m in ZOO if m.name == name)


def _counts(model: nn.Module, inputs: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    torch_counts = (sum(module_macs(model, inputs).values()), count_params(model))
    graph = exported_graph(model, inputs, [f"input_{i}" for i in range(len(inputs))])
    return torch_counts, onnx_counts(graph)


@pytest.mark.parametrize("name", AGREE)
def test_module_and_exported_graph_counts_agree(name: str) -> None:
    zoo = _zoo(name)
    torch_counts, graph_counts = _counts(zoo.build(), zoo.example_inputs())
    assert torch_counts[0] > 0
    assert torch_counts == graph_counts


def test_functional_attention_is_counted_on_the_exported_graph_only() -> None:
    zoo = _zoo("sdpa")
    (torch_macs, torch_params), (graph_macs, graph_params) = _counts(zoo.build(), zoo.example_inputs())
    # [1, 13, 24], 4 heads: q.kT and attention.v, 13 x 13 x 24 each.
    assert graph_macs - torch_macs == 2 * 13 * 13 * 24
    assert graph_params == torch_params


def test_transposed_convolution_counts_each_input_element_once_per_kernel_tap() -> None:
    model = nn.ConvTranspose2d(4, 6, 3, stride=2).eval()
    macs = module_macs(model, [torch.zeros(1, 4, 5, 5)])
    assert sum(macs.values()) == 4 * 5 * 5 * 6 * 9
