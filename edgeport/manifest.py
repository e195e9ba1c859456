"""`edgeport.json`: every artifact with its hash and I/O description, plus the proof that it is right.

Each stage adds its own section (conversion verification, compression reports, target packaging);
sections are plain pydantic models so the file is self-describing and validated when read back.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from edgeport import __version__

MANIFEST_NAME = "edgeport.json"

Layout = Literal["NHWC", "NCHW", "NWC", "NCW", "other"]


class Quantization(BaseModel):
    scale: list[float]
    zero_point: list[int]
    axis: int = 0


class TensorInfo(BaseModel):
    name: str
    source_name: str | None = None  # the PyTorch/ONNX name, when the artifact renamed the tensor
    shape: list[int]
    dtype: str
    layout: Layout = "other"
    quantization: Quantization | None = None


class Artifact(BaseModel):
    path: str
    kind: Literal["onnx", "tflite", "c_header", "c_source", "firmware_project", "other"]
    precision: str = ""
    sha256: str
    size_bytes: int
    inputs: list[TensorInfo] = Field(default_factory=list)
    outputs: list[TensorInfo] = Field(default_factory=list)
    op_counts: dict[str, int] = Field(default_factory=dict)


class StageError(BaseModel):
    """Error of one output of one stage against the PyTorch (or ONNX, for ONNX sources) reference."""

    stage: str
    output: str
    max_abs_error: float
    max_rel_error: float


class Verification(BaseModel):
    reference: str
    num_samples: int
    seed: int
    tolerance_rel: float
    passed: bool
    errors: list[StageError] = Field(default_factory=list)


class Manifest(BaseModel):
    edgeport_version: str = __version__
    command: str = ""
    source: dict[str, Any] = Field(default_factory=dict)
    layout: Layout = "other"
    artifacts: list[Artifact] = Field(default_factory=list)
    verification: Verification | None = None
    passes: list[dict[str, Any]] = Field(default_factory=list)
    sections: dict[str, Any] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)

    def artifact(self, path: str) -> Artifact:
        for art in self.artifacts:
            if art.path == path:
                return art
        raise KeyError(path)

    def write(self, outdir: Path) -> Path:
        target = Path(outdir) / MANIFEST_NAME
        target.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        return target

    @classmethod
    def read(cls, outdir: Path) -> Manifest:
        return cls.model_validate_json((Path(outdir) / MANIFEST_NAME).read_text())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tool_versions(*names: str) -> dict[str, str]:
    """Installed versions of the given distributions, for reproducibility."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"edgeport": __version__}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found
