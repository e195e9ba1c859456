"""Small CNNs trained in the tests on a generated, separable task (seconds on a CPU).

Each class is a fixed random 3x12x12 template; a sample is its class template plus N(0, 1) noise.
Training (with BatchNorm in training mode) leaves the BNs with real running statistics, which is
what data-free calibration reads.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

SHAPE = (3, 12, 12)
CLASSES = 4
PIXEL_MEAN, PIXEL_STD = 128.0, 40.0  # the raw-pixel variant: uint8-range values


def make_task(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    templates = np.random.default_rng(1234).standard_normal((CLASSES, *SHAPE)).astype(np.float32)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    x = templates[labels] * 0.35 + rng.standard_normal((count, *SHAPE)).astype(np.float32)
    return x.astype(np.float32), labels


class SmallCnn(nn.Module):
    def __init__(self, act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            act(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            act(),
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))


class RawPixels(nn.Module):
    """The same network fed raw 0..255-range values, normalising inside the model."""

    def __init__(self, net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else SmallCnn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - PIXEL_MEAN) / PIXEL_STD)


def to_raw(x: np.ndarray) -> np.ndarray:
    return np.clip(x * PIXEL_STD + PIXEL_MEAN, 0, 255).round().astype(np.float32)


def train(model: nn.Module, steps: int = 150, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    x, y = make_task(4096, seed=seed + 1)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(xs), (64,), generator=gen)
        loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


class GeluCnn(SmallCnn):
    """GELU has an int8 TFLite kernel but no TFLite Micro kernel at all."""

    def __init__(self) -> None:
        super().__init__(act=nn.GELU)


class NoBatchNorm(nn.Module):
    """A feature-vector MLP: nothing for data-free calibration to read."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class DepthwiseCnn(nn.Module):
    """Conv, depthwise conv, pointwise conv and a dense head: every op that takes int4 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16, bias=False),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.Conv2d(16, 32, 1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
        )
        self.head = nn.Linear(32, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean((2, 3)))
