"""The model zoo: small, seeded, random-init PyTorch models covering the common edge architectures.

The zoo is a set of family files, `tests/zoo/<family>.py`, each with `ZOO: list[ZooModel]` and a module
`__getattr__` so that `edgeport convert tests/zoo/<family>.py:<name>` builds the model. Every such file
present in this folder (any `*.py` not starting with `_`) is a family; `ENTRIES` gathers them all, each
model with its family and file. `models.py` (ZooModel, `_seeded`, the first zoo) is the family "core".
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import NamedTuple

from tests.zoo.models import ZooModel, by_name, resnet20_shared

ZOO_DIR = Path(__file__).resolve().parent
CORE_FILE = "models"


class ZooEntry(NamedTuple):
    family: str
    file: Path
    model: ZooModel

    @property
    def id(self) -> str:
        """Unique across families (two families may both have a `gru`)."""
        return f"{self.family}/{self.model.name}"

    @property
    def source(self) -> str:
        """The `edgeport convert` SOURCE that builds this model."""
        return f"{self.file}:{self.model.name}"


def family_name(file: Path) -> str:
    return "core" if file.stem == CORE_FILE else file.stem


def family_files(folder: Path = ZOO_DIR) -> list[Path]:
    """The family files present, core first, then by name (files other engineers add are picked up)."""
    files = sorted(p for p in folder.glob("*.py") if not p.name.startswith("_"))
    return sorted(files, key=lambda p: p.stem != CORE_FILE)


def gather(folder: Path = ZOO_DIR) -> list[ZooEntry]:
    """Every family file's ZOO, in file order; an import error in a family file is raised, not skipped."""
    entries: list[ZooEntry] = []
    for file in family_files(folder):
        module = importlib.import_module(f"tests.zoo.{file.stem}")
        entries += [ZooEntry(family_name(file), file, m) for m in module.ZOO]
    ids = [e.id for e in entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"zoo models defined twice in one family: {duplicates}")
    return entries


ENTRIES: list[ZooEntry] = gather()
ZOO: list[ZooModel] = [e.model for e in ENTRIES]


def zoo_model(name: str) -> ZooModel:
    """The zoo model of that name, from any family (models.by_name looks in the core family only)."""
    return next(m for m in ZOO if m.name == name)


__all__ = ["ENTRIES", "ZOO", "ZooEntry", "ZooModel", "by_name", "gather", "resnet20_shared", "zoo_model"]
