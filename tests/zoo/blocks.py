"""Zoo family: small whole networks as deployed on phones and microcontrollers. EfficientNet MBConv
(SiLU, squeeze-excite with sigmoid), a MobileNetV3 stage at 5x5 with h-swish, a GhostNet module, an
SE-ResNet block, a YOLO-like detector head (three strides, upsample + concat neck, sigmoid, boxes of all
scales concatenated), a U-Net with transposed-conv decoders and skip concats, a convolutional
autoencoder and an FCN-style segmenter that resizes back to the input size."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from tests.zoo.models import ZooModel, _conv_bn, _seeded, zoo_getattr
else:  # loaded by path (`edgeport convert tests/zoo/blocks.py:<name>`): this folder is on sys.path
    from models import ZooModel, _conv_bn, _seeded, zoo_getattr


class SE(nn.Module):
    """Squeeze-excite as EfficientNet writes it: mean, two 1x1 convs with SiLU, a sigmoid gate."""

    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeezed, 1)
        self.expand = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.silu(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int, act=nn.SiLU):
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            _conv_bn(cin, hidden, 1, act=act()),
            _conv_bn(hidden, hidden, k, stride, groups=hidden, act=act()),
            SE(hidden, max(1, cin // 4)),
            _conv_bn(hidden, cout, 1),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class EfficientNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.SiLU())
        self.blocks = nn.Sequential(MBConv(16, 16, 3, 1, 1), MBConv(16, 24, 3, 2, 4), MBConv(24, 24, 5, 1, 4))
        self.head = nn.Sequential(_conv_bn(24, 64, 1, act=nn.SiLU()))
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class MobileNetV3Stage(nn.Module):
    """Two MobileNetV3-Large-style blocks at kernel 5: h-swish, SE with hard-sigmoid, stride 2 then 1."""

    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.Hardswish())
        self.b1 = MBConv(16, 24, 5, 2, 3, act=nn.Hardswish)
        self.b2 = MBConv(24, 24, 5, 1, 3, act=nn.Hardswish)
        self.out = nn.Conv2d(24, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.b2(self.b1(self.stem(x))))


class GhostModule(nn.Module):
    """GhostNet: half the channels from a 1x1 conv, the other half from a cheap depthwise conv on them."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        half = cout // 2
        self.primary = _conv_bn(cin, half, 1, act=nn.ReLU())
        self.cheap = _conv_bn(half, half, 3, groups=half, act=nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.primary(x)
        return torch.cat([p, self.cheap(p)], dim=1)


class GhostNetTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = _conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.g1 = GhostModule(16, 32)
        self.down = _conv_bn(32, 32, 3, 2, groups=32)
        self.g2 = GhostModule(32, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = self.g2(self.down(self.g1(x)))
        return self.fc(y.mean((2, 3)) + x.mean((2, 3)))


class SEResNetBlock(nn.Module):
    """ResNet basic block with squeeze-excite (Linear layers on the pooled vector) before the add."""

    def __init__(self, channels: int = 16):
        super().__init__()
        self.conv1 = _conv_bn(channels, channels, 3, act=nn.ReLU())
        self.conv2 = _conv_bn(channels, channels, 3)
        self.fc1 = nn.Linear(channels, channels // 4)
        self.fc2 = nn.Linear(channels // 4, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(y.mean((2, 3))))))
        return F.relu(x + y * s[:, :, None, None])


class YoloTiny(nn.Module):
    """A YOLO-like detector: backbone at strides 8/16/32, a top-down neck (nearest upsample + concat),
    one 1x1 head per scale predicting (x, y, w, h, objectness, classes) for 2 anchors; the grids are
    decoded with sigmoid and concatenated into one [batch, boxes, 5 + classes] tensor."""

    def __init__(self, classes: int = 3, anchors: int = 2):
        super().__init__()
        self.no = 5 + classes
        self.anchors = anchors
        self.s8 = nn.Sequential(
            _conv_bn(3, 8, 3, 2, act=nn.SiLU()), _conv_bn(8, 16, 3, 2, act=nn.SiLU()), _conv_bn(16, 16, 3, 2)
        )
        self.s16 = _conv_bn(16, 32, 3, 2, act=nn.SiLU())
        self.s32 = _conv_bn(32, 32, 3, 2, act=nn.SiLU())
        self.lat16 = _conv_bn(64, 32, 1, act=nn.SiLU())
        self.lat8 = _conv_bn(48, 16, 1, act=nn.SiLU())
        self.heads = nn.ModuleList(nn.Conv2d(c, anchors * self.no, 1) for c in (16, 32, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p8 = self.s8(x)
        p16 = self.s16(p8)
        p32 = self.s32(p16)
        n16 = self.lat16(torch.cat([F.interpolate(p32, scale_factor=2.0, mode="nearest"), p16], 1))
        n8 = self.lat8(torch.cat([F.interpolate(n16, scale_factor=2.0, mode="nearest"), p8], 1))
        boxes = []
        for head, feat in zip(self.heads, (n8, n16, p32), strict=True):
            y = head(feat)
            b, _, h, w = y.shape
            y = y.view(b, self.anchors, self.no, h, w).permute(0, 1, 3, 4, 2)
            boxes.append(torch.sigmoid(y).reshape(b, -1, self.no))
        return torch.cat(boxes, 1)


class UNetDeconv(nn.Module):
    """A 3-level U-Net on a non-square single-channel input: strided encoders, ConvTranspose2d decoders,
    skip concats, a sigmoid mask out."""

    def __init__(self):
        super().__init__()
        self.e1 = _conv_bn(1, 8, 3, act=nn.ReLU())
        self.e2 = _conv_bn(8, 16, 3, 2, act=nn.ReLU())
        self.e3 = _conv_bn(16, 32, 3, 2, act=nn.ReLU())
        self.u2 = nn.ConvTranspose2d(32, 16, 3, 2, 1, output_padding=1)
        self.d2 = _conv_bn(32, 16, 3, act=nn.ReLU())
        self.u1 = nn.ConvTranspose2d(16, 8, 2, 2)
        self.d1 = _conv_bn(16, 8, 3, act=nn.ReLU())
        self.out = nn.Conv2d(8, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(e1)
        e3 = self.e3(e2)
        d2 = self.d2(torch.cat([self.u2(e3), e2], 1))
        d1 = self.d1(torch.cat([e1, self.u1(d2)], 1))
        return torch.sigmoid(self.out(d1))


class ConvAutoencoder(nn.Module):
    """Denoising autoencoder: strided conv encoder, a Linear bottleneck, ConvTranspose decoder."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU())
        self.code = nn.Linear(16 * 4 * 4, 16)
        self.expand = nn.Linear(16, 16 * 4 * 4)
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 3, 2, 1, output_padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(8, 1, 3, 2, 1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.relu(self.code(self.enc(x).flatten(1)))
        return self.dec(self.expand(z).view(-1, 16, 4, 4))


class FCNSegmenter(nn.Module):
    """Stride-4 features, a dilated context conv, class logits resized back to the input size."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(3, 16, 3, 2, act=nn.ReLU()),
            _conv_bn(16, 24, 3, 2, act=nn.ReLU()),
            nn.Conv2d(24, 24, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.cls = nn.Conv2d(24, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cls(self.body(x))
        return F.interpolate(y, size=x.shape[2:], mode="bilinear", align_corners=False)


ZOO: list[ZooModel] = [
    ZooModel("efficientnet_tiny", _seeded(EfficientNetTiny), [[1, 3, 48, 48]], (0,), what="MBConv, SiLU, SE"),
    ZooModel(
        "mobilenet_v3_k5",
        _seeded(MobileNetV3Stage),
        [[1, 3, 40, 40]],
        (0,),
        what="5x5 MBConv, h-swish, SE",
    ),
    ZooModel("ghostnet_tiny", _seeded(GhostNetTiny), [[1, 3, 32, 32]], (0,), what="Ghost modules (concat)"),
    ZooModel(
        "se_resnet_block",
        _seeded(SEResNetBlock),
        [[1, 16, 12, 12]],
        (0,),
        what="SE via Linear",
        transpose_free=False,
    ),
    ZooModel(
        "yolo_tiny_head",
        _seeded(YoloTiny),
        [[1, 3, 64, 64]],
        (0,),
        transpose_free=False,
        what="3 strides, upsample + concat, sigmoid, boxes",
    ),
    ZooModel(
        "unet_deconv",
        _seeded(UNetDeconv),
        [[1, 1, 32, 48]],
        (0,),
        what="ConvTranspose, skip concat",
    ),
    ZooModel(
        "conv_autoencoder",
        _seeded(ConvAutoencoder),
        [[1, 1, 16, 16]],
        (0,),
        what="conv + dense AE",
        transpose_free=False,
    ),
    ZooModel("fcn_segmenter", _seeded(FCNSegmenter), [[1, 3, 40, 56]], (0,), what="resize to input size"),
]

__getattr__ = zoo_getattr(ZOO)
