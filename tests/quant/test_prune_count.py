"""MACs and parameters counted on the PyTorch module and on the exported ONNX graph agree on the zoo
models whose products are all modules (Conv, transposed Conv, Linear, nn.MultiheadAttention); a
product computed without a module (F.scaled_dot_product_attention) is seen on the exported graph only."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from edgeport.pipeline.torch_passes import prune_exporter
from edgeport.quant.prune.count import count_params, module_macs, onnx_counts
from tests.quant.prune_models import fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import zoo_model

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


def _counts(model: nn.Module, inputs: tuple) -> tuple[tuple[int, int], tuple[int, int]]:
    torch_counts = (sum(module_macs(model, inputs).values()), count_params(model))
    graph = prune_exporter().graph(model, inputs, [f"input_{i}" for i in range(len(inputs))])
    return torch_counts, onnx_counts(graph)


@pytest.mark.parametrize("name", AGREE)
def test_module_and_exported_graph_counts_agree(name: str) -> None:
    zoo = zoo_model(name)
    torch_counts, graph_counts = _counts(zoo.build(), zoo.example_inputs())
    assert torch_counts[0] > 0
    assert torch_counts == graph_counts


def test_functional_attention_is_counted_on_the_exported_graph_only() -> None:
    zoo = zoo_model("sdpa")
    (torch_macs, torch_params), (graph_macs, graph_params) = _counts(zoo.build(), zoo.example_inputs())
    # [1, 13, 24], 4 heads: q.kT and attention.v, 13 x 13 x 24 each.
    assert graph_macs - torch_macs == 2 * 13 * 13 * 24
    assert graph_params == torch_params


def test_transposed_convolution_counts_each_input_element_once_per_kernel_tap() -> None:
    model = nn.ConvTranspose2d(4, 6, 3, stride=2).eval()
    macs = module_macs(model, [torch.zeros(1, 4, 5, 5)])
    assert sum(macs.values()) == 4 * 5 * 5 * 6 * 9


class _Gram(nn.Module):
    """Two 1x1 convolutions beside a Gram matrix of the input's 16 channels (a product no module
    makes, more than half of the model's MACs)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(16, 8, 1)
        self.conv2 = nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8 + 16 * 16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.conv2(torch.relu(self.conv1(x)))).mean((2, 3))
        pixels = x.flatten(2)
        gram = (pixels @ pixels.transpose(1, 2)).flatten(1)
        return self.fc(torch.cat([f, gram], 1))


def test_ratio_is_of_the_exported_macs_when_a_product_has_no_module() -> None:
    from edgeport.quant.prune import prune_module
    from edgeport.tensors import TensorSpec

    torch.manual_seed(0)
    options = fast_options()
    specs = [TensorSpec("x", [1, 16, 8, 8])]
    section = prune_module(_Gram().eval(), specs, {}, options, exporter=prune_exporter()).section
    assert section.before.onnx_macs - section.before.macs == 16 * 16 * 64  # the Gram product
    # conv1 at 4 of 8 channels would remove 46 % of the module MACs but 21 % of the exported ones.
    assert section.removed() >= 0.3
    assert section.removed() == pytest.approx(1 - section.after.onnx_macs / section.before.onnx_macs)
