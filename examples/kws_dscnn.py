"""Bundled example: a DS-CNN keyword-spotting network (Zhang et al. 2017, as in MLPerf Tiny) on
49x10 MFCC features, 12 classes. Random-initialised (seeded): the example shows the tool chain,
not accuracy.

    edgeport convert examples/kws_dscnn.py:build --input-shape 1,1,49,10 -o out/kws
"""

import torch
from torch import nn


def _separable(channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
        nn.Conv2d(channels, channels, 1, bias=False),
        nn.BatchNorm2d(channels),
        nn.ReLU(),
    ]


class DSCNN(nn.Module):
    def __init__(self, channels: int = 64, blocks: int = 4, classes: int = 12) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(1, channels, (10, 4), stride=2, padding=(5, 1), bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        ]
        for _ in range(blocks):
            layers += _separable(channels)
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, classes)

    def forward(self, mfcc: torch.Tensor) -> torch.Tensor:
        x = self.features(mfcc)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def build() -> nn.Module:
    torch.manual_seed(0)
    model = DSCNN()
    # Non-trivial batch-norm statistics, as a trained network would have.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()
