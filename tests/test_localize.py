"""Pinning a conversion error on the ONNX node that causes it."""

from __future__ import annotations

import io

import onnx
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgeport.converters import onnx_prepare
from edgeport.converters.localize import first_diverging_node, prefix_diverges
from edgeport.tensors import TensorSpec, random_inputs


class OptionAShortcut(nn.Module):
    """A residual block with ResNet 'option A' down-sampling (every second pixel plus zero channels)
    as its shortcut: plain onnx2tf translates it wrongly, which is why the shortcut rewrite exists."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv_in = nn.Conv2d(3, 8, 3, padding=1)
        self.conv_down = nn.Conv2d(8, 16, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv_in(x))
        shortcut = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 4, 4))
        return torch.relu(self.conv_down(x) + shortcut)


def _onnx() -> onnx.ModelProto:
    buffer = io.BytesIO()
    torch.onnx.export(
        OptionAShortcut(),
        (torch.randn(1, 3, 16, 16),),
        buffer,
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
    )
    model = onnx_prepare.fix_input_shapes(onnx.load_from_string(buffer.getvalue()), [])
    return onnx_prepare.simplify(model)[0]


def test_bisection_names_the_node_that_breaks_without_rewrites() -> None:
    model = _onnx()
    specs = [TensorSpec("x", [1, 3, 16, 16])]
    samples = random_inputs(specs, 2, 0)
    args = (samples, specs, ["x"], {}, 1e-4)
    # Plain onnx2tf mistranslates this graph (the reason the shortcut rewrite exists) ...
    assert prefix_diverges(model, "y", *args)
    node = first_diverging_node(model, *args, diverging_output="y")
    assert node is not None
    # The answer is a boundary: the named node's prefix diverges, the prefix just before it does not.
    names = [n.name or n.output[0] for n in model.graph.node]
    index = names.index(node.split(" (")[0])
    assert index > 0
    assert prefix_diverges(model, model.graph.node[index].output[0], *args)
    assert not prefix_diverges(model, model.graph.node[index - 1].output[0], *args)


def test_convert_names_output_and_node_when_tflite_diverges(tmp_path) -> None:
    import edgeport.pipeline as pipeline
    from edgeport.converters.rewrites import REWRITES
    from edgeport.errors import EdgeportError

    # Without the rewrites the shortcut is mistranslated: convert must fail, say where, write nothing.
    options = pipeline.ConvertOptions(
        source=f"{__file__}:OptionAShortcut",
        outdir=tmp_path / "out",
        input_shapes=[[1, 3, 16, 16]],
        skip_passes=[name for name, _ in REWRITES],
    )
    with pytest.raises(EdgeportError) as failure:
        pipeline.convert_model(options)
    message = failure.value.one_line()
    assert "tflite_float32 model diverges from pytorch at output 'output'" in message
    assert "first diverging ONNX node" in message
    assert list(tmp_path.iterdir()) == []
