"""Zoo family: changing resolution. Pixel shuffle / unshuffle (depth-to-space, space-to-depth),
transposed convolutions (1-D and 2-D, strides, output_padding, groups, non-square kernels) and every
upsample mode (nearest, bilinear and bicubic with and without align_corners, linear 1-D; scale factors
and explicit sizes, nn.Upsample and F.interpolate)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

if __package__:
    from tests.zoo.models import ZooModel, _seeded, zoo_getattr
else:  # loaded by path (`edgeport convert tests/zoo/resample.py:<name>`): this folder is on sys.path
    from models import ZooModel, _seeded, zoo_getattr


class SuperResolution(nn.Module):
    """ESPCN-style: features at low resolution, then depth-to-space by `scale`."""

    def __init__(self, cin: int, scale: int, width: int = 16):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 5, padding=2), nn.Tanh(), nn.Conv2d(width, width, 3, padding=1), nn.Tanh()
        )
        self.to_pixels = nn.Conv2d(width, cin * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.to_pixels(self.body(x)))


class SpaceToDepth(nn.Module):
    """PixelUnshuffle as a cheap stem (space-to-depth), then convs at the lower resolution."""

    def __init__(self):
        super().__init__()
        self.unshuffle = nn.PixelUnshuffle(2)
        self.conv = nn.Sequential(nn.Conv2d(12, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(self.unshuffle(x)))


class ShuffleRoundTrip(nn.Module):
    """Unshuffle by 2, a 1x1 mix, shuffle back and add the input (a lossless-resampling residual)."""

    def __init__(self):
        super().__init__()
        self.mix = nn.Conv2d(16, 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.pixel_shuffle(self.mix(F.pixel_unshuffle(x, 2)), 2)


class Deconv(nn.Module):
    """A conv, then one transposed conv (the layer under test), then a 1x1 conv."""

    def __init__(self, deconv: nn.Module, cin: int = 8, dims: int = 2):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.pre = nn.Sequential(conv(3, cin, 3, padding=1), nn.ReLU())
        self.deconv = deconv
        self.post = conv(deconv.out_channels, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(F.relu(self.deconv(self.pre(x))))


class Resize(nn.Module):
    """conv -> F.interpolate(**kwargs) -> conv: the resize sits between two layers, as in a decoder."""

    def __init__(self, dims: int = 2, **kwargs):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.pre = conv(3, 8, 3, padding=1)
        self.post = conv(8, 4, 3, padding=1)
        self.kwargs = kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(F.interpolate(F.relu(self.pre(x)), **self.kwargs))


class UpsampleModule(nn.Module):
    """nn.Upsample (the module spelling) feeding a skip concat with a nearest-upsampled branch."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, 2, 1)
        self.up_bilinear = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.up_nearest = nn.UpsamplingNearest2d(scale_factor=2)
        self.out = nn.Conv2d(19, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = F.relu(self.down(x))
        return self.out(torch.cat([self.up_bilinear(d), self.up_nearest(d), x], dim=1))


def _deconv(*args, dims: int = 2, cin: int = 8, **kwargs) -> nn.Module:
    layer = (nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose1d)(cin, *args, **kwargs)
    return Deconv(layer, cin, dims)


def _resize(dims: int = 2, **kwargs):
    return _seeded(lambda: Resize(dims, **kwargs))


IMG = [[1, 3, 16, 16]]
IMG_ODD = [[1, 3, 9, 13]]

ZOO: list[ZooModel] = [
    ZooModel(
        "pixel_shuffle_x2", _seeded(lambda: SuperResolution(3, 2)), IMG, (0,), what="ESPCN x2", fast=True
    ),
    ZooModel(
        "pixel_shuffle_x3", _seeded(lambda: SuperResolution(1, 3)), [[1, 1, 12, 10]], (0,), what="ESPCN x3"
    ),
    ZooModel(
        "pixel_unshuffle",
        _seeded(SpaceToDepth),
        [[1, 3, 16, 24]],
        (0,),
        what="space-to-depth stem",
        fast=True,
    ),
    ZooModel(
        "pixel_roundtrip",
        _seeded(ShuffleRoundTrip),
        [[1, 4, 8, 8]],
        (0,),
        what="unshuffle/shuffle",
        transpose_free=False,
    ),
    ZooModel(
        "deconv2d_s2_outpad",
        _seeded(lambda: _deconv(8, 3, stride=2, padding=1, output_padding=1)),
        IMG,
        (0,),
        what="ConvTranspose2d k3 s2 output_padding 1",
        fast=True,
    ),
    ZooModel(
        "deconv2d_s2_k4",
        _seeded(lambda: _deconv(8, 4, stride=2, padding=1)),
        IMG_ODD,
        (0,),
        what="ConvTranspose2d k4 s2 p1, odd input",
    ),
    ZooModel(
        "deconv2d_groups",
        _seeded(lambda: _deconv(8, 4, stride=2, padding=1, groups=2)),
        IMG,
        (0,),
        what="ConvTranspose2d groups=2",
    ),
    ZooModel(
        "deconv2d_depthwise",
        _seeded(lambda: _deconv(8, 2, stride=2, groups=8, bias=False)),
        IMG,
        (0,),
        what="ConvTranspose2d depthwise (groups=channels)",
    ),
    ZooModel(
        "deconv2d_rect",
        _seeded(lambda: _deconv(6, (3, 5), stride=(2, 3), padding=(1, 2), output_padding=(1, 0))),
        IMG_ODD,
        (0,),
        what="ConvTranspose2d non-square kernel and strides",
    ),
    ZooModel(
        "deconv2d_dilated",
        _seeded(lambda: _deconv(8, 3, stride=1, padding=2, dilation=2)),
        IMG_ODD,
        (0,),
        what="ConvTranspose2d stride 1, dilation 2",
        fast=True,
    ),
    ZooModel(
        "deconv1d_s2",
        _seeded(lambda: _deconv(4, 4, dims=1, stride=2, padding=1)),
        [[1, 3, 25]],
        (0,),
        what="ConvTranspose1d k4 s2",
    ),
    ZooModel(
        "deconv1d_s4_outpad",
        _seeded(lambda: _deconv(6, 8, dims=1, stride=4, padding=2, output_padding=3)),
        [[1, 3, 16]],
        (0,),
        what="ConvTranspose1d s4 output_padding 3",
    ),
    ZooModel("up_nearest_x2", _resize(scale_factor=2, mode="nearest"), IMG_ODD, (0,), what="nearest x2"),
    ZooModel(
        "up_nearest_size", _resize(size=(13, 7), mode="nearest"), [[1, 3, 6, 5]], (0,), what="nearest to size"
    ),
    ZooModel(
        "up_nearest_exact",
        _resize(scale_factor=3, mode="nearest-exact"),
        IMG_ODD,
        (0,),
        what="nearest-exact",
        fast=True,
    ),
    ZooModel(
        "up_bilinear_ac_true",
        _resize(scale_factor=2, mode="bilinear", align_corners=True),
        IMG_ODD,
        (0,),
        what="bilinear align_corners=True",
    ),
    ZooModel(
        "up_bilinear_size",
        _resize(size=(20, 30), mode="bilinear", align_corners=False),
        IMG_ODD,
        (0,),
        what="bilinear to a size, align_corners=False",
    ),
    ZooModel(
        "up_bilinear_x1_5",
        _resize(scale_factor=1.5, mode="bilinear", align_corners=False),
        IMG,
        (0,),
        what="bilinear, fractional scale",
        fast=True,
    ),
    ZooModel(
        "up_bicubic",
        _resize(scale_factor=2, mode="bicubic", align_corners=False),
        IMG_ODD,
        (0,),
        what="bicubic align_corners=False",
        transpose_free=False,
    ),
    ZooModel(
        "up_bicubic_ac_true",
        _resize(size=(17, 11), mode="bicubic", align_corners=True),
        IMG_ODD,
        (0,),
        what="bicubic to a size, align_corners=True",
        transpose_free=False,
    ),
    ZooModel(
        "down_bilinear",
        _resize(scale_factor=0.5, mode="bilinear", align_corners=False),
        IMG,
        (0,),
        what="bilinear downscale",
    ),
    ZooModel(
        "up_linear_1d", _resize(1, scale_factor=2, mode="linear"), [[1, 3, 21]], (0,), what="1-D linear x2"
    ),
    ZooModel(
        "up_nearest_1d", _resize(1, size=40, mode="nearest"), [[1, 3, 15]], (0,), what="1-D nearest to size"
    ),
    ZooModel("upsample_modules", _seeded(UpsampleModule), IMG, (0,), what="nn.Upsample + skip concat"),
]

__getattr__ = zoo_getattr(ZOO)
