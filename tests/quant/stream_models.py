"""Small seeded option-A ResNets (the CIFAR ResNets' zero-padded channel shortcut between stages) for
the residual-stream pruning tests; also a `convert` source (`stream_models.py:option_a_resnet`)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# The input of these models and of prune_models' (defined here: a `convert` source imports no test helper).
INPUT_SHAPE = [1, 3, 8, 8]


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.pad = (cout - cin) // 2 if stride != 1 or cin != cout else None

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad is None:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class OptionA(nn.Module):
    """Stem 3 -> 8, two blocks at 8, a stride-2 block to 16 with a padded shortcut, one more at 16."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(Block(8, 8, 1), Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2), Block(16, 16, 1))
        self.linear = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.linear(F.adaptive_avg_pool2d(x, 1).flatten(1))


class LambdaLayer(nn.Module):
    """akamaster/pytorch_resnet_cifar10's shortcut module: a lambda holding the pad."""

    def __init__(self, lambd: object) -> None:
        super().__init__()
        self.lambd = lambd

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lambd(x)


class LambdaBlock(nn.Module):
    """akamaster's BasicBlock, option A: the shortcut is a LambdaLayer, mode and value positional."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Sequential()
        if stride != 1 or cin != cout:
            p = cout // 4
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p), "constant", 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class LambdaResNet(OptionA):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(LambdaBlock(8, 8, 1), LambdaBlock(8, 8, 1))
        self.layer2 = nn.Sequential(LambdaBlock(8, 16, 2), LambdaBlock(16, 16, 1))


class UntraceableBlock(Block):
    """A block whose forward has a branch torch.fx cannot trace (always taken when run)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 0:
            return super().forward(x)
        return x


class Untraceable(OptionA):
    """The same network, its padded block untraceable."""

    def __init__(self) -> None:
        super().__init__()
        self.layer2[0] = UntraceableBlock(8, 16, 2)


class SpatialPad(nn.Module):
    """A pad on the spatial axes only (no channel pad): nothing for the stream rewrite to do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, 8, 3, bias=False)
        self.bn_a = nn.BatchNorm2d(8)
        self.conv_b = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.pad(F.relu(self.bn_a(self.conv_a(x))), (1, 1, 1, 1))
        b = F.relu(self.bn_b(self.conv_b(a)) + a)
        return self.fc(b.mean((2, 3)))


def _seeded(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights and BatchNorm statistics (a trained network's BatchNorms are not identities)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) / m.weight[0].numel() ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model.eval()


def option_a_resnet() -> nn.Module:
    return _seeded(OptionA())


def lambda_resnet() -> nn.Module:
    return _seeded(LambdaResNet())


def untraceable_option_a() -> nn.Module:
    return _seeded(Untraceable())


def spatial_pad() -> nn.Module:
    return _seeded(SpatialPad())
