"""The model zoo: small, seeded, random-init PyTorch models covering the common edge architectures."""

from tests.zoo.models import ZOO, ZooModel, by_name, resnet20_shared

__all__ = ["ZOO", "ZooModel", "by_name", "resnet20_shared"]
