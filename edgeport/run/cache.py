"""Stage results cached by content: a stage's key hashes what its output depends on (the input files'
bytes, the options, the tool versions and edgeport's own code), so an unchanged stage is copied instead of
recomputed, and changing only a target re-packages without re-converting.

An entry is a directory `CACHE/<stage>/<key>/`, written under a temporary name and renamed into place,
so a killed run or two worker processes finishing the same key never leave a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import edgeport
from edgeport.manifest import tool_versions

# The distributions whose version changes what a stage writes.
TOOLS = (
    "torch",
    "onnx",
    "onnxruntime",
    "onnxsim",
    "onnx2tf",
    "tensorflow",
    "ai-edge-litert",
    "tflite-micro",
    "numpy",
)
# edgeport's own packages (converters, quant, targets live beside edgeport/ in a source checkout).
CODE_PACKAGES = ("edgeport", "edgeport.converters", "edgeport.quant", "edgeport.targets", "edgeport.firmware")


def digest(value: Any) -> str:
    """sha256 of a JSON-able value, keys sorted: the same value always gives the same key."""
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (relative names and bytes, sorted)."""
    path = Path(path)
    sha = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        sha.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        sha.update(hashlib.sha256(file.read_bytes()).digest())
    return sha.hexdigest()


def code_digest() -> str:
    """sha256 of edgeport's source files: an edited edgeport (same version number) misses the cache."""
    import importlib

    sha = hashlib.sha256()
    for name in CODE_PACKAGES:
        try:
            root = Path(importlib.import_module(name).__file__ or "").parent
        except ImportError:
            continue
        for file in sorted(root.rglob("*")):
            if (
                file.is_file()
                and file.suffix in (".py", ".cc", ".h", ".c", ".ld", ".txt", ".mk", "")
                and ("__pycache__" not in file.parts)
            ):
                sha.update(f"{name}/{file.relative_to(root).as_posix()}".encode())
                sha.update(hashlib.sha256(file.read_bytes()).digest())
    return sha.hexdigest()


def tools_digest() -> dict[str, str]:
    """What every stage's key includes: the tools' versions and edgeport's code."""
    return {**tool_versions(*TOOLS), "edgeport-code": code_digest(), "version": edgeport.__version__}


class StageCache:
    """Cached stage outputs under `root` (None: caching off; lookups miss, nothing is stored)."""

    def __init__(self, root: Path | None, read: bool = True) -> None:
        self.root = Path(root) if root is not None else None
        self.read = read  # False (--no-cache): recompute every stage, still refreshing the entries

    def entry(self, stage: str, key: str) -> Path | None:
        return self.root / stage / key if self.root is not None else None

    def fetch(self, stage: str, key: str, into: Path) -> bool:
        """Copy the cached output of (stage, key) to `into`; False when there is none (or reading is off)."""
        entry = self.entry(stage, key)
        if not self.read or entry is None or not entry.is_dir():
            return False
        shutil.copytree(entry, into, symlinks=True)
        return True

    def store(self, stage: str, key: str, output: Path) -> None:
        """Keep a copy of `output` as (stage, key), atomically; an entry already there is replaced."""
        entry = self.entry(stage, key)
        if entry is None:
            return
        entry.parent.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=entry.parent))
        try:
            shutil.copytree(output, temp / "out", symlinks=True)
            old = entry.with_name(f".{key}.old-{os.getpid()}")
            if entry.exists():
                entry.rename(old)
            try:
                (temp / "out").rename(entry)
            except OSError:  # another worker stored the same key first: theirs is as good
                pass
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(temp, ignore_errors=True)
