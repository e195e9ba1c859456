"""Pinning a conversion error on the ONNX node that causes it."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper
from torch import nn

from edgeport.converters import localize, onnx_prepare
from edgeport.converters.localize import first_diverging_node, prefix_diverges
from edgeport.converters.onnx_to_tflite import KerasResult, onnx_to_keras
from edgeport.errors import EdgeportError
from edgeport.tensors import TensorSpec, random_inputs


class OptionAShortcut(nn.Module):
    """A residual block with ResNet 'option A' down-sampling (every second pixel plus zero channels)
    as its shortcut."""

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


def _mistranslating_relu(*args: Any, **kwargs: Any) -> KerasResult:
    """onnx2tf with a known fault injected: every Relu becomes LeakyRelu(0.5), so the first Relu is
    where the conversion diverges, whatever onnx2tf's own bugs are at the time."""
    path, workdir = Path(args[0]), Path(args[1])
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Relu":
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.5))
    faulty = workdir / f"faulty_{path.name}"
    onnx.save(model, str(faulty))
    return onnx_to_keras(faulty, *args[1:], **kwargs)


@pytest.fixture
def faulty_relu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localize, "onnx_to_keras", _mistranslating_relu)


def test_bisection_names_the_node_that_breaks(faulty_relu: None) -> None:
    model = _onnx()
    specs = [TensorSpec("x", [1, 3, 16, 16])]
    samples = random_inputs(specs, 2, 0)
    args = (samples, specs, ["x"], {}, 1e-4)
    assert prefix_diverges(model, "y", *args)
    node = first_diverging_node(model, *args, diverging_output="y")
    assert node is not None and node.endswith("(Relu)")
    # The answer is a boundary: the named node's prefix diverges, the prefix just before it does not.
    names = [n.name or n.output[0] for n in model.graph.node]
    index = names.index(node.split(" (")[0])
    assert index > 0
    assert prefix_diverges(model, model.graph.node[index].output[0], *args)
    assert not prefix_diverges(model, model.graph.node[index - 1].output[0], *args)


def test_convert_names_output_and_node_when_tflite_diverges(tmp_path, monkeypatch, faulty_relu) -> None:
    import edgeport.pipeline.stages as stages
    from edgeport.pipeline import ConvertOptions, convert_model

    monkeypatch.setattr(stages, "onnx_to_keras", _mistranslating_relu)
    out = tmp_path / "out"
    options = ConvertOptions(source=f"{__file__}:OptionAShortcut", outdir=out, input_shapes=[[1, 3, 16, 16]])
    with pytest.raises(EdgeportError) as failure:
        convert_model(options)
    message = failure.value.one_line()
    assert "tflite_float32 model diverges from pytorch at output 'output'" in message
    assert "first diverging ONNX node" in message and "(Relu)" in message
    assert list(tmp_path.iterdir()) == []
