"""A small CNN quantized by onnxruntime's quantize_static in QDQ format, and hand-built QDQ graphs:
shared by the tests of pruning a QDQ source (test_prune_onnx_qdq) and of converting one
(tests/test_convert_qdq.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import helper

from edgeport.converters.torch_to_onnx import export_onnx
from tests.onnx_graphs import make_model

SHAPE = [1, 3, 8, 8]


class SmallNet(nn.Module):
    """A stem, a residual block (its Add's output spans zero before the Relu), a strided convolution
    and a linear head. Seeded."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.head = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = torch.relu(x + self.conv2(torch.relu(self.conv1(x))))
        return self.head(torch.relu(self.down(x)).mean((2, 3)))


class GeluNet(nn.Module):
    """Linear -> exact GELU -> Linear on a [1, 8] input (1 + erf(x / sqrt 2) is never negative, so its
    calibrated range starts at zero with no Relu folded in). Seeded."""

    SHAPE = [1, 8]

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.gelu, self.b = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.gelu(self.a(x)))


def calibration_samples(count: int, seed: int, shape: list[int] = SHAPE) -> list[dict[str, np.ndarray]]:
    """`count` seeded N(0, 1) inputs; (8, 0) are the ones qdq_model calibrates on."""
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def qdq_model(path: Path, per_channel: bool = False, net: type[nn.Module] = SmallNet) -> Path:
    """`net` (SmallNet, or GeluNet with its SHAPE) exported and quantized by
    onnxruntime.quantization.quantize_static in QDQ format (int8 weights, uint8 activations), calibrated
    on 8 seeded random inputs; saved at `path`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(calibration_samples(8, 0, shape))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.samples, None)

    shape = getattr(net, "SHAPE", SHAPE)
    float_path = path.with_name("float.onnx")
    export_onnx(net().eval(), [torch.zeros(*shape)], float_path, ["x"])
    quantize_static(
        str(float_path),
        str(path),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=per_channel,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
    )
    return path


def quantized_activation(path: Path, per_channel: bool) -> Path:
    """x -> Conv(8) -> QuantizeLinear 'the_q' -> ..., read by a Cast (no pair), or by a DequantizeLinear
    per channel."""
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(8, 3, 3, 3)),
        "s": np.full(8 if per_channel else (), 0.1, np.float32),
        "zp": np.zeros(8 if per_channel else (), np.uint8),
    }
    after = (
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"], axis=1)
        if per_channel
        else helper.make_node("Cast", ["q"], ["y"], to=onnx.TensorProto.FLOAT)
    )
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s", "zp"], ["q"], name="the_q", axis=1),
        after,
    ]
    onnx.save(make_model(nodes, {"x": SHAPE}, ["y"], arrays), str(path))
    return path
