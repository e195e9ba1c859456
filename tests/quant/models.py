"""Small PyTorch models for the BN-folding acceptance tests and benchmark (random, seeded weights).

Each builder returns an eval-mode module whose BNs have non-trivial statistics, so a wrong fold
shows up numerically.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _randomize_bns(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
            c = m.num_features
            m.weight.data = torch.rand(c, generator=gen) * 1.5 + 0.5  # positive: may pass ReLUs
            m.bias.data = torch.randn(c, generator=gen) * 0.5
            m.running_mean.data = torch.randn(c, generator=gen) * 0.5
            m.running_var.data = torch.rand(c, generator=gen) + 0.5
    return model.eval()


class BnEverywhere(nn.Module):
    """BNs at the input, after a conv, after a residual add and after a concat (issue 3 acceptance)."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.bn_add = nn.BatchNorm2d(16)
        self.conv3a = nn.Conv2d(16, 8, 3, padding=1)
        self.conv3b = nn.Conv2d(16, 8, 1)
        self.bn_cat = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(self.bn_in(x))))
        x = F.relu(self.bn_add(self.conv2(x) + x))
        x = F.relu(self.bn_cat(torch.cat([self.conv3a(x), self.conv3b(x)], dim=1)))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def bn_everywhere() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(BnEverywhere())


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) if self.use_res else self.body(x)


class MobileNetV2Small(nn.Module):
    """MobileNetV2 layout (Sandler et al. 2018) at width 0.35 for 32x32 inputs."""

    CONFIG = ((1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 3, 2), (6, 24, 2, 1), (6, 32, 2, 2))

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6()]
        cin = 16
        for expand, cout, repeats, stride in self.CONFIG:
            for i in range(repeats):
                layers.append(_InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
                cin = cout
        layers += [nn.Conv2d(cin, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def mobilenet_v2_small() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(MobileNetV2Small())


class PostActivationBn(nn.Module):
    """BNs after the activation (conv -> ReLU -> BN), a layout exporters never fold."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 16, 3, padding=1)
        self.b1 = nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 32, 1)
        self.b2 = nn.BatchNorm2d(32)
        self.c3 = nn.Conv2d(32, 32, 3, padding=1)
        self.b3 = nn.BatchNorm1d(32)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.b1(F.relu(self.c1(x)))  # forward into the unpadded 1x1 conv
        x = F.max_pool2d(self.b2(F.relu(self.c2(x))), 2)  # before a padded conv: stays, as one op
        x = F.relu(self.c3(x))
        return self.fc(self.b3(F.adaptive_avg_pool2d(x, 1).flatten(1)))  # forward into the Linear


def post_activation_bn() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(PostActivationBn())
