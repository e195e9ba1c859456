"""Zoo family: 1-D signals (audio, sensors). Conv1d with dilations, strides and every padding mode
(zeros, reflect, replicate, circular, causal left-padding), 2-D convs with reflect / replicate
padding, 1-D pooling, a depthwise-separable 1-D net and a keyword spotter on raw audio."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from tests.zoo.models import ZooModel, _seeded, zoo_getattr
else:  # loaded by path (`edgeport convert tests/zoo/temporal.py:<name>`): this folder is on sys.path
    from models import ZooModel, _seeded, zoo_getattr


class PaddedConvs(nn.Module):
    """Two convs with `padding_mode` (the ONNX Pad it exports to is what converters get wrong)."""

    def __init__(self, mode: str, dims: int = 1, dilation: int = 1):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        pad = 2 * dilation
        self.c1 = conv(3, 8, 5, padding=pad, dilation=dilation, padding_mode=mode)
        self.c2 = conv(8, 8, 3, padding=1, padding_mode=mode)
        self.out = conv(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.c2(F.relu(self.c1(x)))))


class DilatedSame(nn.Module):
    """WaveNet-style stack: padding="same", dilations 1..8, gated tanh * sigmoid, residual sums."""

    def __init__(self, width: int = 8):
        super().__init__()
        self.inp = nn.Conv1d(2, width, 1)
        self.filters = nn.ModuleList(
            nn.Conv1d(width, width, 3, padding="same", dilation=d) for d in (1, 2, 4, 8)
        )
        self.gates = nn.ModuleList(
            nn.Conv1d(width, width, 3, padding="same", dilation=d) for d in (1, 2, 4, 8)
        )
        self.out = nn.Conv1d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for f, g in zip(self.filters, self.gates, strict=True):
            h = h + torch.tanh(f(h)) * torch.sigmoid(g(h))
        return self.out(h)


class CausalConv(nn.Module):
    """Causal convs: explicit left padding with F.pad, then an unpadded dilated conv."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(4, 8, 3, dilation=1)
        self.c2 = nn.Conv1d(8, 8, 3, dilation=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.c1(F.pad(x, (2, 0))))
        return self.c2(F.pad(x, (6, 0)))


class StridedValid(nn.Module):
    """Strided unpadded 1-D convs on an odd length, max / avg pooling with ceil_mode and padding."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 8, 7, stride=2)
        self.p1 = nn.MaxPool1d(3, 2, ceil_mode=True)
        self.c2 = nn.Conv1d(8, 8, 4, stride=3)
        self.p2 = nn.AvgPool1d(3, 2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p2(F.relu(self.c2(self.p1(F.relu(self.c1(x))))))


class DSCNN1d(nn.Module):
    """Depthwise-separable 1-D convs over MFCC frames [batch, coefficients, frames] (TinyML KWS)."""

    def __init__(self, coeffs: int = 10, width: int = 24):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(coeffs, width, 5, padding=2), nn.BatchNorm1d(width), nn.ReLU()]
        for _ in range(2):
            layers += [
                nn.Conv1d(width, width, 3, padding=1, groups=width),
                nn.BatchNorm1d(width),
                nn.ReLU(),
                nn.Conv1d(width, width, 1),
                nn.BatchNorm1d(width),
                nn.ReLU(),
            ]
        self.body = nn.Sequential(*layers)
        self.fc = nn.Linear(width, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.adaptive_avg_pool1d(self.body(x), 1).flatten(1))


class RawAudioKWS(nn.Module):
    """M5-style keyword spotter on raw 8 kHz audio (0.5 s): a wide strided first conv, conv/BN/pool
    stages, global average pooling, log-softmax over 10 keywords."""

    def __init__(self, width: int = 16):
        super().__init__()

        def stage(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
            return [nn.Conv1d(cin, cout, k, stride), nn.BatchNorm1d(cout), nn.ReLU(), nn.MaxPool1d(4)]

        self.body = nn.Sequential(
            *stage(1, width, 80, 16), *stage(width, width, 3), *stage(width, 2 * width, 3)
        )
        self.fc = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body(x)
        return F.log_softmax(self.fc(x.mean(-1)), dim=-1)


class SensorHAR(nn.Module):
    """Human-activity recognition on a [batch, time, axes] accelerometer window: the time-major input
    is permuted to channels-first inside the model, as such models are usually written."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(3, 16, 5), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(16, 16, 5), nn.ReLU()
        )
        self.fc = nn.Linear(16, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x.permute(0, 2, 1))
        return F.softmax(self.fc(x.amax(-1)), dim=-1)


SIG = [[1, 3, 31]]
IMG = [[1, 3, 12, 9]]

ZOO: list[ZooModel] = [
    ZooModel(
        "conv1d_reflect",
        _seeded(lambda: PaddedConvs("reflect")),
        SIG,
        (0,),
        what="Conv1d reflect pad",
        fast=True,
    ),
    ZooModel(
        "conv1d_replicate", _seeded(lambda: PaddedConvs("replicate", dilation=2)), SIG, (0,), what="replicate"
    ),
    ZooModel(
        "conv1d_circular",
        _seeded(lambda: PaddedConvs("circular")),
        SIG,
        (0,),
        what="circular pad",
        fast=True,
        transpose_free=False,
    ),
    ZooModel(
        "conv2d_reflect",
        _seeded(lambda: PaddedConvs("reflect", dims=2)),
        IMG,
        (0,),
        what="Conv2d reflect pad",
    ),
    ZooModel(
        "conv2d_replicate",
        _seeded(lambda: PaddedConvs("replicate", dims=2)),
        IMG,
        (0,),
        what="Conv2d replicate pad",
    ),
    ZooModel("wavenet_gated", _seeded(DilatedSame), [[1, 2, 40]], (0,), what='padding="same", dilation 1-8'),
    ZooModel(
        "causal_conv1d", _seeded(CausalConv), [[1, 4, 30]], (0,), what="F.pad left, dilated conv", fast=True
    ),
    ZooModel("conv1d_strided", _seeded(StridedValid), [[1, 3, 101]], (0,), what="stride, 1-D pools"),
    ZooModel("ds_cnn_1d", _seeded(DSCNN1d), [[1, 10, 49]], (0,), what="depthwise-separable 1-D KWS"),
    ZooModel("kws_raw_audio", _seeded(RawAudioKWS), [[1, 1, 4000]], (0,), what="M5 on raw audio", fast=True),
    ZooModel("har_time_major", _seeded(SensorHAR), [[1, 50, 3]], what="[B, T, axes] permuted in-model"),
]

__getattr__ = zoo_getattr(ZOO)
