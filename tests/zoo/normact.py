"""Zoo family: normalizations and activations. LayerNorm (over channels of an image, over a sequence's
features), GroupNorm, InstanceNorm (1-D and 2-D), a BatchNorm that no conv precedes; SiLU, Hardswish,
Hardsigmoid, Mish, GELU (erf and tanh), LeakyReLU, per-channel PReLU, ELU, Softplus, ReLU6 / clamp /
Hardtanh, Sigmoid / Tanh / Softsign, softmax over channels."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from tests.zoo.models import ZooModel, _seeded, zoo_getattr
else:  # loaded by path (`edgeport convert tests/zoo/normact.py:<name>`): this folder is on sys.path
    from models import ZooModel, _seeded, zoo_getattr


def _randomize_affine(model: nn.Module) -> nn.Module:
    """_seeded leaves GroupNorm/InstanceNorm affine terms at 1/0, where a dropped term changes nothing."""
    gen = torch.Generator().manual_seed(5)
    for m in model.modules():
        if isinstance(m, nn.GroupNorm | nn.InstanceNorm1d | nn.InstanceNorm2d) and m.weight is not None:
            m.weight.data.copy_(1.0 + 0.3 * torch.randn(m.weight.shape, generator=gen))
            m.bias.data.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
    return model


class NormNet(nn.Module):
    """conv -> norm -> activation, twice, then a 1x1 conv (how norms sit in small decoders/generators)."""

    def __init__(self, norm: Callable[[int], nn.Module], dims: int = 2, act: type[nn.Module] = nn.ReLU):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.body = nn.Sequential(
            conv(3, 16, 3, padding=1), norm(16), act(), conv(16, 16, 3, padding=1), norm(16), act()
        )
        self.out = conv(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class ChannelsLastLayerNorm(nn.Module):
    """ConvNeXt-style: depthwise 7x7, then LayerNorm over channels by permuting to NHWC and back, then
    a pointwise MLP written as Linear layers on the channels-last tensor."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 2, 2)
        self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, 2 * dim)
        self.pw2 = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        h = self.dw(x).permute(0, 2, 3, 1)
        h = self.pw2(F.gelu(self.pw1(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


class SequenceLayerNorm(nn.Module):
    """Token MLP on [batch, tokens, features] with LayerNorm (no attention)."""

    def __init__(self, dim: int = 24):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.norm2 = nn.LayerNorm(2 * dim)
        self.fc2 = nn.Linear(2 * dim, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.norm2(self.fc1(self.norm1(x)))))


class LooseBatchNorm(nn.Module):
    """BatchNorm after a residual add and after an input: nothing to fold it into."""

    def __init__(self):
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.skip = nn.Conv2d(3, 8, 1)
        self.bn_sum = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_in(x)
        return F.relu(self.bn_sum(self.conv(x) + self.skip(x)))


class ActivationStack(nn.Module):
    """One conv per activation, in sequence: each activation sees the previous one's range."""

    def __init__(self, *acts: nn.Module, width: int = 8):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
        for act in acts:
            layers += [act, nn.Conv2d(width, width, 3, padding=1)]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ClampNet(nn.Module):
    """ReLU6, torch.clamp with asymmetric bounds, clamp_min, Hardtanh, Softsign: bounded activations."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.c1(x))
        x = torch.clamp(self.c2(x), -0.5, 2.0)
        x = F.hardtanh(self.c3(x).clamp_min(-1.5), -1.0, 1.0)
        return F.softsign(x) + torch.clamp(x, max=0.3)


class SegmentationSoftmax(nn.Module):
    """Per-pixel class probabilities: softmax and log-softmax over the channel axis."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.conv(x)
        return F.softmax(logits, dim=1), F.log_softmax(logits, dim=1)


def _norm(norm: Callable[[int], nn.Module], dims: int = 2, act: type[nn.Module] = nn.ReLU):
    return _seeded(lambda: _randomize_affine(NormNet(norm, dims, act)))


def _acts(*acts: Callable[[], nn.Module]):
    return _seeded(lambda: ActivationStack(*(a() for a in acts)))


IMG = [[1, 3, 12, 10]]

ZOO: list[ZooModel] = [
    ZooModel(
        "groupnorm", _norm(lambda c: nn.GroupNorm(4, c)), IMG, (0,), what="GroupNorm(4 groups)", fast=True
    ),
    ZooModel(
        "groupnorm_1group",
        _norm(lambda c: nn.GroupNorm(1, c), act=nn.SiLU),
        IMG,
        (0,),
        what="GroupNorm(1)",
        transpose_free=False,
    ),
    ZooModel(
        "instancenorm2d",
        _norm(lambda c: nn.InstanceNorm2d(c, affine=True)),
        IMG,
        (0,),
        what="InstanceNorm2d affine",
    ),
    ZooModel(
        "instancenorm1d",
        _norm(lambda c: nn.InstanceNorm1d(c, affine=True), dims=1, act=nn.LeakyReLU),
        [[1, 3, 30]],
        (0,),
        what="InstanceNorm1d affine",
    ),
    ZooModel(
        "layernorm_nhwc",
        _seeded(ChannelsLastLayerNorm),
        [[1, 3, 16, 16]],
        (0,),
        what="ConvNeXt block: permute, LayerNorm, Linear",
        transpose_free=False,
    ),
    ZooModel("layernorm_seq", _seeded(SequenceLayerNorm), [[1, 10, 24]], what="LayerNorm on [B, T, F]"),
    ZooModel(
        "batchnorm_unfused",
        _seeded(LooseBatchNorm),
        IMG,
        (0,),
        what="BatchNorm with no conv before",
        transpose_free=False,
    ),
    ZooModel(
        "act_silu_hswish",
        _acts(nn.SiLU, nn.Hardswish, nn.Hardsigmoid),
        IMG,
        (0,),
        what="SiLU, Hardswish, Hardsigmoid",
    ),
    ZooModel("act_mish", _acts(nn.Mish, nn.Mish), IMG, (0,), what="Mish", fast=True),
    ZooModel("act_gelu_erf", _acts(nn.GELU, nn.GELU), IMG, (0,), what="GELU (erf)"),
    ZooModel(
        "act_gelu_tanh",
        _acts(lambda: nn.GELU("tanh"), lambda: nn.GELU("tanh")),
        IMG,
        (0,),
        what="GELU (tanh)",
    ),
    ZooModel(
        "act_leaky_prelu",
        _acts(lambda: nn.LeakyReLU(0.2), lambda: nn.PReLU(8, 0.1)),
        IMG,
        (0,),
        what="LeakyReLU, per-channel PReLU",
    ),
    ZooModel(
        "act_elu_softplus",
        _acts(lambda: nn.ELU(0.5), lambda: nn.Softplus(2.0), nn.CELU),
        IMG,
        (0,),
        what="ELU, Softplus(beta 2), CELU",
    ),
    ZooModel(
        "act_sigmoid_tanh",
        _acts(nn.Sigmoid, nn.Tanh, nn.SELU, nn.LogSigmoid),
        IMG,
        (0,),
        what="Sigmoid, Tanh, SELU, LogSigmoid",
    ),
    ZooModel(
        "act_clamp",
        _seeded(ClampNet),
        IMG,
        (0,),
        what="ReLU6, clamp, Hardtanh, Softsign",
        transpose_free=False,
    ),
    ZooModel(
        "softmax_channels",
        _seeded(SegmentationSoftmax),
        IMG,
        (0,),
        what="softmax / log-softmax over C",
    ),
]

__getattr__ = zoo_getattr(ZOO)
