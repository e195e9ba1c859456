"""Registry of small PyTorch models that every converter change is measured against.

Each model is random-init under a fixed seed (BatchNorm statistics randomized too, so folding them is
actually exercised), eval mode, and small enough (< 1 MB, a few layers) that the whole zoo converts in a
few minutes on 2 cores. Together they cover what issue 2 names: attention, recurrent nets, channel
shuffle, depthwise / inverted-residual / squeeze-excite nets, residual nets, keyword spotting on MFCC,
U-Net, dilated temporal convs, dense autoencoders, parametric activations, ceil-mode pooling, and a model
with several inputs and outputs. The pretrained CIFAR ResNet-20 from ../shared is loaded separately
(`resnet20_shared`) because it needs files that may be absent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

SEED = 0


class ZooModel(NamedTuple):
    # A NamedTuple rather than a dataclass: `edgeport convert models.py:<name>` imports this file as a
    # module that is not in sys.modules, where @dataclass cannot resolve its annotations.
    name: str
    build: Callable[[], nn.Module]
    input_shapes: list[list[int]]
    # Inputs that feed spatial ops (conv/pool) and so come out channels-last; others keep their shape.
    image_inputs: tuple[int, ...] = ()
    # False when today's conversion keeps a TRANSPOSE (the model's own layout change needs one, or no
    # rewrite removes onnx2tf's yet; bench/convert_zoo.py counts them). Asserted where True.
    transpose_free: bool = True
    what: str = ""
    # True for the subset tests/test_zoo_convert.py converts on every CI run (its total time is kept
    # to a few minutes on 2 cores); the rest run with EDGEPORT_ZOO=all and in bench/convert_zoo.py.
    fast: bool = False

    def example_inputs(self, seed: int = SEED) -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(seed)
        return tuple(torch.randn(*shape, generator=gen) for shape in self.input_shapes)


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """Build under a fixed seed, in eval mode, with no parameter left at a constant default.

    BatchNorm statistics, LayerNorm affine terms and attention biases start as 0/1 in PyTorch; left
    that way they hide mistakes (a dropped bias or a swapped scale changes nothing), so they are
    randomized too.
    """

    def build() -> nn.Module:
        torch.manual_seed(SEED)
        model = factory()
        gen = torch.Generator().manual_seed(SEED + 1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.data.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.data.copy_(0.1 * torch.randn(n, generator=gen))
            elif isinstance(m, nn.LayerNorm):
                m.weight.data.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
                m.bias.data.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            elif isinstance(m, nn.MultiheadAttention) and m.in_proj_bias is not None:  # bias=False: none
                m.in_proj_bias.data.copy_(0.1 * torch.randn(m.in_proj_bias.shape, generator=gen))
                m.out_proj.bias.data.copy_(0.1 * torch.randn(m.out_proj.bias.shape, generator=gen))
        return model.eval()

    return build


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: nn.Module | None = None):
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


# --- attention -------------------------------------------------------------------------------------------


class AttentionBlock(nn.Module):
    """Pre-norm transformer encoder block around nn.MultiheadAttention (self-attention)."""

    def __init__(self, dim: int = 32, heads: int = 4, need_weights: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.need_weights = (
            need_weights  # True: the weights are computed (and dropped), as most users leave it
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=self.need_weights)[0]
        return x + self.mlp(self.norm2(x))


# --- recurrent -------------------------------------------------------------------------------------------


class GRUNet(nn.Module):
    def __init__(self, features: int = 10, hidden: int = 24):
        super().__init__()
        self.rnn = nn.GRU(features, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class LSTMNet(nn.Module):
    def __init__(self, features: int = 10, hidden: int = 24):
        super().__init__()
        self.rnn = nn.LSTM(features, hidden, num_layers=1, batch_first=True)
        self.head = nn.Linear(hidden, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


# --- channel shuffle -------------------------------------------------------------------------------------


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (stride 1): split, branch, concat, channel shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            _conv_bn(half, half, 1, act=nn.ReLU()),
            _conv_bn(half, half, 3, groups=half),
            _conv_bn(half, half, 1, act=nn.ReLU()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)


class ShuffleNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 24, 3, 2, act=nn.ReLU())
        self.units = nn.Sequential(ShuffleUnit(24), ShuffleUnit(24))
        self.head = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.units(self.stem(x))
        return self.head(x.mean((2, 3)))


# --- MobileNetV2 / V3 ------------------------------------------------------------------------------------


class InvertedResidual(nn.Module):
    def __init__(
        self, cin: int, cout: int, stride: int, expand: int, k: int = 3, se: bool = False, act=nn.ReLU6
    ):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, act=act()))
        layers.append(_conv_bn(hidden, hidden, k, stride, groups=hidden, act=act()))
        if se:
            layers.append(SqueezeExcite(hidden))
        layers.append(_conv_bn(hidden, cout, 1))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduce: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduce, 1)
        self.fc2 = nn.Conv2d(channels // reduce, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))
        return x * s


class MobileNetV2Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 3, 2, act=nn.ReLU6()),
            InvertedResidual(16, 16, 1, 1),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            InvertedResidual(24, 32, 2, 4),
            _conv_bn(32, 64, 1, act=nn.ReLU6()),
        )
        self.classifier = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class MobileNetV3Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(3, 16, 3, 2, act=nn.Hardswish()),
            InvertedResidual(16, 16, 2, 1, se=True, act=nn.ReLU),
            InvertedResidual(16, 24, 2, 3, act=nn.ReLU),
            InvertedResidual(24, 24, 1, 3, k=5, se=True, act=nn.Hardswish),
            _conv_bn(24, 48, 1, act=nn.Hardswish()),
        )
        self.classifier = nn.Sequential(nn.Linear(48, 64), nn.Hardswish(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --- ResNet (basic blocks, projection shortcuts) ---------------------------------------------------------


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = _conv_bn(cin, cout, 3, stride, act=nn.ReLU())
        self.conv2 = _conv_bn(cout, cout, 3)
        self.down = _conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.down(x))


class ResNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, act=nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.pool(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- DS-CNN keyword spotting -----------------------------------------------------------------------------


class DSCNN(nn.Module):
    """MLPerf-Tiny-style DS-CNN on a 49x10 MFCC map (1 channel), 12 keywords."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, (10, 4), (2, 2), (5, 1), bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks = []
        for _ in range(3):
            blocks += [
                _conv_bn(width, width, 3, groups=width, act=nn.ReLU()),
                _conv_bn(width, width, 1, act=nn.ReLU()),
            ]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        x = F.avg_pool2d(x, x.shape[2:])
        return self.fc(torch.flatten(x, 1))


# --- U-Net -----------------------------------------------------------------------------------------------


class UNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc1 = _conv_bn(3, 8, 3, act=nn.ReLU())
        self.enc2 = _conv_bn(8, 16, 3, 2, act=nn.ReLU())
        self.enc3 = _conv_bn(16, 32, 3, 2, act=nn.ReLU())
        self.up2 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.dec2 = _conv_bn(32, 16, 3, act=nn.ReLU())
        self.dec1 = _conv_bn(24, 8, 3, act=nn.ReLU())
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([self.up2(e3), e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up1, e1], dim=1))
        return self.out(d1)


# --- temporal convs --------------------------------------------------------------------------------------


class TCN(nn.Module):
    """Dilated causal-style 1-D convs over [batch, channels, time] (e.g. accelerometer windows)."""

    def __init__(self, cin: int = 6, width: int = 16):
        super().__init__()
        layers: list[nn.Module] = []
        c = cin
        for d in (1, 2, 4):
            layers += [nn.Conv1d(c, width, 3, padding=d, dilation=d), nn.BatchNorm1d(width), nn.ReLU()]
            c = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).mean(2))


# --- dense autoencoder -----------------------------------------------------------------------------------


class DenseAutoencoder(nn.Module):
    """MLPerf-Tiny anomaly-detection-style fully connected autoencoder (small)."""

    def __init__(self, dim: int = 128, hidden: int = 64, code: int = 8):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, code), nn.ReLU()
        )
        self.decoder = nn.Sequential(
            nn.Linear(code, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


# --- activations -----------------------------------------------------------------------------------------


class ActivationsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.a1 = nn.PReLU(16)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.a2 = nn.LeakyReLU(0.1)
        self.c3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.a3 = nn.ELU()
        self.fc = nn.Linear(16, 10)
        self.a4 = nn.PReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a3(self.c3(self.a2(self.c2(self.a1(self.c1(x))))))
        return self.a4(self.fc(x.mean((2, 3))))


# --- ceil-mode pooling -----------------------------------------------------------------------------------


class CeilPoolNet(nn.Module):
    """Spatial sizes chosen odd so ceil_mode changes the output shape (the case converters drop)."""

    def __init__(self):
        super().__init__()
        self.c1 = _conv_bn(3, 8, 3, act=nn.ReLU())
        self.p1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.c2 = _conv_bn(8, 16, 3, act=nn.ReLU())
        self.p2 = nn.AvgPool2d(3, 2, ceil_mode=True)
        self.c3 = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c3(self.p2(self.c2(self.p1(self.c1(x)))))


# --- several inputs and outputs --------------------------------------------------------------------------


class MultiIO(nn.Module):
    """An image and a feature vector in; class logits and a feature map out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(_conv_bn(3, 8, 3, act=nn.ReLU()), _conv_bn(8, 16, 3, 2, act=nn.ReLU()))
        self.meta = nn.Linear(6, 16)
        self.head = nn.Linear(32, 5)
        self.seg = nn.Conv2d(16, 3, 1)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.conv(image)
        pooled = f.mean((2, 3))
        logits = self.head(torch.cat([pooled, F.relu(self.meta(meta))], dim=1))
        return logits, self.seg(f)


_CORE: list[ZooModel] = [
    ZooModel("mha_block", _seeded(AttentionBlock), [[1, 16, 32]], what="nn.MultiheadAttention encoder block"),
    ZooModel("gru", _seeded(GRUNet), [[1, 20, 10]], what="GRU, batch_first"),
    ZooModel("lstm", _seeded(LSTMNet), [[1, 20, 10]], what="LSTM, batch_first"),
    ZooModel(
        "shufflenet", _seeded(ShuffleNetTiny), [[1, 3, 32, 32]], (0,), what="ShuffleNetV2 channel shuffle"
    ),
    ZooModel(
        "mobilenet_v2", _seeded(MobileNetV2Tiny), [[1, 3, 64, 64]], (0,), what="depthwise, inverted residual"
    ),
    ZooModel(
        "mobilenet_v3", _seeded(MobileNetV3Tiny), [[1, 3, 64, 64]], (0,), what="hardswish, squeeze-excite"
    ),
    ZooModel(
        "resnet_basic", _seeded(ResNetTiny), [[1, 3, 32, 32]], (0,), what="basic blocks, 1x1 projections"
    ),
    ZooModel("ds_cnn_kws", _seeded(DSCNN), [[1, 1, 49, 10]], (0,), what="keyword spotting on MFCC"),
    ZooModel(
        "unet", _seeded(UNetTiny), [[1, 3, 32, 32]], (0,), what="ConvTranspose, concat, bilinear resize"
    ),
    ZooModel("tcn_dilated", _seeded(TCN), [[1, 6, 64]], (0,), what="temporal 1-D convs with dilation"),
    ZooModel("dense_autoencoder", _seeded(DenseAutoencoder), [[1, 128]], what="fully connected autoencoder"),
    ZooModel("activations", _seeded(ActivationsNet), [[1, 3, 16, 16]], (0,), what="PReLU, LeakyReLU, ELU"),
    ZooModel("ceil_pool", _seeded(CeilPoolNet), [[1, 3, 15, 15]], (0,), what="ceil-mode max and avg pooling"),
    ZooModel("multi_io", _seeded(MultiIO), [[1, 3, 16, 16], [1, 6]], (0,), what="two inputs, two outputs"),
]
# The first zoo: every model of it runs in CI, as it did before the zoo had families.
ZOO: list[ZooModel] = [m._replace(fast=True) for m in _CORE]


def by_name(name: str) -> ZooModel:
    for m in ZOO:
        if m.name == name:
            return m
    if name == "resnet20":
        return resnet20_shared()
    raise KeyError(name)


def resnet20_shared(shared: Path | None = None) -> ZooModel:
    """The pretrained CIFAR ResNet-20 from ../shared; skips the calling test when ../shared is absent."""
    if shared is None:
        from tests.conftest import shared_path

        shared = shared_path("models", "resnet_cifar.py").parent
    models_dir = str(shared)

    def build() -> nn.Module:
        if models_dir not in sys.path:
            sys.path.insert(0, models_dir)
        import resnet_cifar

        return resnet_cifar.load("resnet20")

    return ZooModel(
        "resnet20", build, [[1, 3, 32, 32]], (0,), what="pretrained CIFAR ResNet-20 (option-A shortcuts)"
    )


def zoo_getattr(zoo: list[ZooModel]) -> Callable[[str], Callable[[], nn.Module]]:
    """A family file's module `__getattr__`: `<family>.py:<zoo name>` is a valid `edgeport convert`
    SOURCE (the callable builds the model)."""

    def getattr_(name: str) -> Callable[[], nn.Module]:
        for m in zoo:
            if m.name == name:
                return m.build
        raise AttributeError(name)

    return getattr_


__getattr__ = zoo_getattr(ZOO)
