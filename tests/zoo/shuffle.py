"""Grouped convolutions, channel shuffle in its common spellings, and chunk / split into equal and
unequal parts: the ShuffleNet family's building blocks as users write them.

Channel counts are multiples of the group counts, spatial sizes odd or non-square where they can be.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from tests.zoo.models import ZooModel, _conv_bn, _seeded
except ImportError:  # imported by `edgeport convert tests/zoo/shuffle.py:<name>` (tests/zoo on sys.path)
    from models import ZooModel, _conv_bn, _seeded  # type: ignore[no-redef]


def _shuffle_view(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def _shuffle_permute(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


def _shuffle_chunk_stack(x: torch.Tensor, groups: int) -> torch.Tensor:
    # Interleave the groups: channel a*groups + b is channel a of group b.
    return torch.stack(x.chunk(groups, dim=1), dim=2).flatten(1, 2)


def _shuffle_strided_cat(x: torch.Tensor, groups: int) -> torch.Tensor:
    # The same permutation as shuffle_view, written as strided channel slices concatenated.
    per_group = x.shape[1] // groups
    return torch.cat([x[:, i::per_group] for i in range(per_group)], dim=1)


def _shuffle_einops(x: torch.Tensor, groups: int) -> torch.Tensor:
    # einops.rearrange(x, "b (g c) h w -> b (c g) h w", g=groups) exports as this flatten/unflatten.
    n, c, h, w = x.shape
    x = x.unflatten(1, (groups, c // groups)).swapaxes(1, 2)
    return x.flatten(1, 2)


_SHUFFLES = {
    "view": _shuffle_view,
    "permute": _shuffle_permute,
    "chunk_stack": _shuffle_chunk_stack,
    "strided_cat": _shuffle_strided_cat,
    "einops": _shuffle_einops,
}


class ShuffleV1Block(nn.Module):
    """ShuffleNet (v1) unit: grouped 1x1 conv, shuffle, depthwise 3x3, grouped 1x1 conv, residual."""

    def __init__(self, channels: int = 24, groups: int = 3, shuffle: str = "view"):
        super().__init__()
        mid = channels // 2
        self.groups, self.shuffle = groups, _SHUFFLES[shuffle]
        self.gconv1 = _conv_bn(channels, mid, 1, groups=groups, act=nn.ReLU())
        self.dw = _conv_bn(mid, mid, 3, groups=mid)
        self.gconv2 = _conv_bn(mid, channels, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.shuffle(self.gconv1(x), self.groups)
        return F.relu(x + self.gconv2(self.dw(y)))


class ShuffleV1Net(nn.Module):
    def __init__(self, groups: int = 3, shuffle: str = "view"):
        super().__init__()
        self.stem = _conv_bn(3, 24, 3, 2, act=nn.ReLU())
        self.blocks = nn.Sequential(ShuffleV1Block(24, groups, shuffle), ShuffleV1Block(24, groups, shuffle))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


class ShuffleV2Down(nn.Module):
    """ShuffleNetV2 stride-2 unit: two branches, concat, shuffle (no chunk)."""

    def __init__(self, cin: int = 16, cout: int = 32):
        super().__init__()
        half = cout // 2
        self.left = nn.Sequential(_conv_bn(cin, cin, 3, 2, groups=cin), _conv_bn(cin, half, 1, act=nn.ReLU()))
        self.right = nn.Sequential(
            _conv_bn(cin, half, 1, act=nn.ReLU()),
            _conv_bn(half, half, 3, 2, groups=half),
            _conv_bn(half, half, 1, act=nn.ReLU()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _shuffle_view(torch.cat([self.left(x), self.right(x)], dim=1), 2)


class GroupedConvs(nn.Module):
    """Grouped convs of several group counts in a row: 1x1 and 3x3, groups 2, 3, 4 and channels."""

    def __init__(self, kernel: int, groups: tuple[int, ...]):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 24, 3, padding=1)]
        for g in groups:
            layers += [nn.Conv2d(24, 24, kernel, padding=kernel // 2, groups=g), nn.ReLU()]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class GroupedConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv1d(6, 12, 3, padding=1, groups=3)
        self.b = nn.Conv1d(12, 12, 1, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(F.relu(self.a(x)))


class ChunkSplit(nn.Module):
    """chunk into equal parts and split into unequal ones, each part through its own layer."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, padding=1)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for c in (8, 8, 8, 4, 12, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        equal = [conv(p) for conv, p in zip(self.convs[:3], x.chunk(3, dim=1), strict=True)]
        unequal = [conv(p) for conv, p in zip(self.convs[3:], x.split([4, 12, 8], dim=1), strict=True)]
        return torch.cat(equal, dim=1) + torch.cat(unequal, dim=1)


class SequenceChunks(nn.Module):
    """chunk / split on the last axis of a [batch, time, features] tensor (a GLU-style gate)."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(10, 32)
        self.out = nn.Linear(16 + 6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.proj(x).chunk(2, dim=-1)
        gated = a * torch.sigmoid(b)
        head, tail = gated.split([6, 10], dim=-1)
        return self.out(torch.cat([gated, head], dim=-1)) + tail.mean(-1, keepdim=True)


ZOO: list[ZooModel] = [
    ZooModel(
        "shufflenet_v1_g3",
        _seeded(lambda: ShuffleV1Net(3, "view")),
        [[1, 3, 32, 32]],
        (0,),
        what="ShuffleNet v1 units, grouped 1x1 (g=3), view/transpose shuffle",
    ),
    ZooModel(
        "shufflenet_v1_g2_permute",
        _seeded(lambda: ShuffleV1Net(2, "permute")),
        [[1, 3, 32, 32]],
        (0,),
        what="grouped 1x1 (g=2), reshape/permute shuffle",
    ),
    ZooModel(
        "shufflenet_v1_g4_chunk",
        _seeded(lambda: ShuffleV1Net(4, "chunk_stack")),
        [[1, 3, 32, 32]],
        (0,),
        what="grouped 1x1 (g=4), chunk + stack shuffle",
    ),
    ZooModel(
        "shuffle_strided_cat",
        _seeded(lambda: ShuffleV1Block(24, 3, "strided_cat")),
        [[1, 24, 9, 11]],
        (0,),
        transpose_free=False,  # onnx2tf gives a 4-D Add output back NCHW: 1 at the end
        what="grouped 1x1 (g=3), strided slices + cat shuffle",
    ),
    ZooModel(
        "shuffle_einops",
        _seeded(lambda: ShuffleV1Block(24, 2, "einops")),
        [[1, 24, 9, 11]],
        (0,),
        transpose_free=False,  # onnx2tf gives a 4-D Add output back NCHW: 1 at the end
        what="grouped 1x1 (g=2), einops-style unflatten/swap/flatten",
    ),
    ZooModel(
        "shufflenet_v2_down", _seeded(ShuffleV2Down), [[1, 16, 15, 15]], (0,), what="ShuffleNetV2 stride 2"
    ),
    ZooModel(
        "grouped_1x1",
        _seeded(lambda: GroupedConvs(1, (2, 3, 4, 24))),
        [[1, 3, 13, 10]],
        (0,),
        what="1x1 convs, groups 2, 3, 4, 24",
    ),
    ZooModel(
        "grouped_3x3",
        _seeded(lambda: GroupedConvs(3, (2, 3, 4, 8))),
        [[1, 3, 13, 10]],
        (0,),
        what="3x3 convs, groups 2, 3, 4, 8",
    ),
    ZooModel("grouped_conv1d", _seeded(GroupedConv1d), [[1, 6, 21]], (0,), what="1-D grouped convs"),
    ZooModel(
        "chunk_split",
        _seeded(ChunkSplit),
        [[1, 3, 9, 9]],
        (0,),
        transpose_free=False,  # onnx2tf gives a 4-D Add output back NCHW: 1 at the end
        what="chunk (equal), split (unequal)",
    ),
    ZooModel(
        "sequence_chunks", _seeded(SequenceChunks), [[1, 12, 10]], what="chunk/split on the feature axis"
    ),
]


def __getattr__(name: str) -> Callable[[], nn.Module]:
    """`shuffle.py:<zoo name>` is a valid `edgeport convert` SOURCE."""
    for m in ZOO:
        if m.name == name:
            return m.build
    raise AttributeError(name)
