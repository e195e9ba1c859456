"""Zoo family: pooling and tensor plumbing. Global pooling variants (mean, max, both concatenated,
GeM), adaptive pooling to sizes other than 1, max / avg pooling with padding and ceil_mode, concat
along channels and along space, residual adds with broadcasting, Flatten + Linear heads over a feature
map, einsum, several inputs and outputs, non-square and odd sizes."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from tests.zoo.models import ZooModel, _seeded, zoo_getattr
else:  # loaded by path (`edgeport convert tests/zoo/tensorops.py:<name>`): this folder is on sys.path
    from models import ZooModel, _seeded, zoo_getattr


class GlobalPools(nn.Module):
    """Every common spelling of global pooling, concatenated into one embedding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(40, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.conv(x))
        gem = f.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1.0 / 3)
        pools = [
            f.mean((2, 3)),
            f.amax((2, 3)),
            F.adaptive_max_pool2d(f, 1).flatten(1),
            F.avg_pool2d(f, f.shape[2:]).flatten(1),
            gem,
        ]
        return self.fc(torch.cat(pools, dim=1))


class AdaptivePools(nn.Module):
    """Adaptive average / max pooling to sizes other than 1 (divisible and not), then a Flatten head."""

    def __init__(self, size: tuple[int, int], kind: str = "avg"):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(size) if kind == "avg" else nn.AdaptiveMaxPool2d(size)
        self.fc = nn.Linear(8 * size[0] * size[1], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(F.relu(self.conv(x))), 1))


class PaddedPools(nn.Module):
    """Max / avg pooling with explicit padding (avg both counting the pad and not) and ceil_mode."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.max_pad = nn.MaxPool2d(3, 2, padding=1)
        self.avg_pad = nn.AvgPool2d(3, 2, padding=1, count_include_pad=True)
        self.avg_nopad = nn.AvgPool2d(3, 2, padding=1, count_include_pad=False)
        self.max_ceil = nn.MaxPool2d(3, 2, padding=1, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.conv(x)
        a = self.max_pad(f) + self.avg_pad(f) - self.avg_nopad(f)
        return a, self.max_ceil(f)


class RectPools(nn.Module):
    """Non-square kernels and strides on a non-square odd input."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, (3, 1), padding=(1, 0))
        self.p1 = nn.MaxPool2d((2, 3), (2, 3), ceil_mode=True)
        self.p2 = nn.AvgPool2d((3, 2), (1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.p2(self.p1(F.relu(self.conv(x))))


class SpatialConcat(nn.Module):
    """Concat along height, along width (two views tiled) and along channels."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.tall = nn.Conv2d(4, 2, 3, padding=1)
        self.wide = nn.Conv2d(8, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = self.a(x), self.b(x)
        tall = self.tall(torch.cat([a, b], dim=2))
        wide = self.wide(torch.cat([torch.cat([b, a], dim=3), torch.cat([a, a], dim=3)], dim=1))
        return tall, wide


class BroadcastResidual(nn.Module):
    """Residual adds and products whose operands broadcast: per-channel, per-row, per-pixel, scalar."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.channel_bias = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.row_scale = nn.Parameter(torch.rand(1, 1, 12, 1) + 0.5)
        self.pixel_gain = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        f = f + self.channel_bias
        f = f * self.row_scale
        f = f * torch.sigmoid(self.pixel_gain(f))
        return 0.5 * f + x.mean(1, keepdim=True) - 1.0


class FlattenHead(nn.Module):
    """LeNet-style: conv/pool, then Flatten of the [C, H, W] map into Linear (the flatten order is
    channels-first, so a channels-last translation must reorder before it)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3), nn.ReLU(), nn.MaxPool2d(2)
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(8 * 5 * 3, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EinsumNet(nn.Module):
    """einsum spellings ONNX can express: a 1x1 conv, batched matmul, a bilinear form, a weighted sum."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(6, 8) * 0.3)
        self.bilinear = nn.Parameter(torch.randn(6, 6) * 0.3)
        self.mix = nn.Parameter(torch.randn(10, 10) * 0.3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = torch.einsum("btc,oc->bto", x, self.w)  # a Linear without bias
        mixed = torch.einsum("st,btc->bsc", self.mix, tokens)  # token mixing
        score = torch.einsum("bsc,cd,bd->bs", mixed, self.bilinear, y)
        pooled = torch.einsum("bs,bsc->bc", torch.softmax(score, -1), mixed)
        return score, pooled


class ThreeInThreeOut(nn.Module):
    """An image, a sequence and a vector in; a class vector, a map and a sequence out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, 2, 1)
        self.seq = nn.Conv1d(4, 8, 3, padding=1)
        self.vec = nn.Linear(5, 8)
        self.head = nn.Linear(24, 3)
        self.seg = nn.Conv2d(8, 2, 1)

    def forward(self, img: torch.Tensor, seq: torch.Tensor, vec: torch.Tensor):
        f = F.relu(self.conv(img))
        s = F.relu(self.seq(seq))
        v = F.relu(self.vec(vec))
        logits = self.head(torch.cat([f.mean((2, 3)), s.mean(2), v], dim=1))
        return logits, self.seg(f) + v[:, :2, None, None], s * v[:, :, None]


class OddSizes(nn.Module):
    """A strided conv stack on a 31x17 input: every stride leaves a remainder."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.ReLU(),
            nn.Conv2d(8, 8, (5, 3), 2, (2, 1)),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, (2, 1)),
            nn.ReLU(),
        )
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x).mean((2, 3)))


IMG = [[1, 3, 12, 10]]

ZOO: list[ZooModel] = [
    ZooModel(
        "global_pools", _seeded(GlobalPools), IMG, (0,), what="mean, amax, adaptive max, GeM", fast=True
    ),
    ZooModel(
        "adaptive_avg_3x3",
        _seeded(lambda: AdaptivePools((3, 3))),
        [[1, 3, 12, 12]],
        (0,),
        what="AdaptiveAvgPool2d((3, 3)), divisible",
        fast=True,
    ),
    ZooModel(
        "adaptive_avg_uneven",
        _seeded(lambda: AdaptivePools((2, 3))),
        [[1, 3, 7, 10]],
        (0,),
        what="AdaptiveAvgPool2d((2, 3)) of 7x10",
        fast=True,
    ),
    ZooModel(
        "adaptive_max_2x2",
        _seeded(lambda: AdaptivePools((2, 2), "max")),
        [[1, 3, 8, 8]],
        (0,),
        what="AdaptiveMaxPool2d((2, 2))",
    ),
    ZooModel(
        "pool_padding", _seeded(PaddedPools), [[1, 3, 13, 11]], (0,), what="padded max/avg, ceil", fast=True
    ),
    ZooModel("pool_rect", _seeded(RectPools), [[1, 3, 15, 20]], (0,), what="non-square pool kernels"),
    ZooModel("concat_spatial", _seeded(SpatialConcat), IMG, (0,), what="concat along H, W and C"),
    ZooModel(
        "residual_broadcast",
        _seeded(BroadcastResidual),
        IMG,
        (0,),
        what="broadcasting add/mul",
        transpose_free=False,
    ),
    ZooModel(
        "flatten_linear",
        _seeded(FlattenHead),
        [[1, 1, 28, 20]],
        (0,),
        what="Flatten of C,H,W + Linear",
        fast=True,
    ),
    ZooModel(
        "einsum", _seeded(EinsumNet), [[1, 10, 8], [1, 6]], what="einsum: linear, mixing, bilinear", fast=True
    ),
    ZooModel(
        "three_in_three_out",
        _seeded(ThreeInThreeOut),
        [[1, 3, 12, 12], [1, 4, 9], [1, 5]],
        (0, 1),
        what="image + sequence + vector in, three out",
        transpose_free=False,
    ),
    ZooModel("odd_sizes", _seeded(OddSizes), [[1, 3, 31, 17]], (0,), what="strides on a 31x17 input"),
]

__getattr__ = zoo_getattr(ZOO)
