"""`edgeport.json`: every artifact with its hash and I/O description, plus the proof that it is right.

Each stage adds its own section (conversion verification, compression reports, target packaging);
sections are plain pydantic models so the file is self-describing and validated when read back.

Everything except the `run` block depends only on the inputs and the tool versions, so two runs of
the same command on the same inputs write byte-identical manifests apart from `run`: wall-clock
seconds and the paths of this machine go there (a stage's `seconds` keys are moved there on write).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from edgeport import __version__
from edgeport.errors import EdgeportError

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
    """Error of one output of one stage against the PyTorch (or ONNX, for ONNX sources) reference.

    `problem` says why the output could not be compared at all (shapes differ, NaN or inf on either
    side); the errors are then NaN, and the stage has failed. `scale_floor`, when set, is what
    max_rel_error is relative to instead of max|ref|, which was below it (edgeport/agreement.py).
    """

    stage: str
    output: str
    max_abs_error: float
    max_rel_error: float
    problem: str | None = None
    scale_floor: float | None = None


class Verification(BaseModel):
    reference: str
    num_samples: int
    seed: int
    tolerance_rel: float
    passed: bool
    errors: list[StageError] = Field(default_factory=list)
    inputs: list[str] = Field(default_factory=list)  # how the samples were drawn (verification_samples)


# Keys of a stage's report that describe this run rather than the inputs, and the `run` field they
# move to: wall-clock time, and a path on this machine (a stage reports a file by name otherwise).
RUN_KEYS = {"seconds": "seconds", "local_path": "paths"}


class RunInfo(BaseModel):
    """What differs between two identical runs: wall-clock seconds per stage ("quantization",
    "quantization.calibration"), and the paths as given on this machine."""

    seconds: dict[str, float] = Field(default_factory=dict)
    paths: dict[str, str] = Field(default_factory=dict)
    command: str = ""  # the command line as typed (its paths are this machine's)
    # Measurements that differ between runs by nature, by the section that took them (android: host LiteRT
    # latency per variant), with the sha256 of the files that show them (listed in `artifacts` with
    # no sha256 and size 0).
    measured: dict[str, Any] = Field(default_factory=dict)


class Record(BaseModel):
    """Part of a typed manifest section. Fields named in OPTIONAL are left out of the JSON when None:
    a part a run did not have (int4 weights in an int8 run) writes no key, and reads back as None."""

    OPTIONAL: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        return self.arranged({k: v for k, v in data.items() if not (k in self.OPTIONAL and v is None)})

    def arranged(self, data: dict[str, Any]) -> dict[str, Any]:
        """The serialized fields as written (a subclass may inline or reorder)."""
        return data


class SourceInfo(Record):
    """What was converted, by file name and content hash (where it lives on this machine goes to `run`)."""

    OPTIONAL = ("file", "kind", "sha256", "callable", "warnings")

    file: str | None = None
    kind: str | None = None  # converters/sources.py's kind: "python", "onnx", "tflite", ...
    sha256: str | None = None  # when the source is one file
    callable: str | None = None  # the entry point of a `file.py:callable` source
    warnings: list[str] | None = None  # what loading it warned about (checkpoint keys ignored)

    def is_empty(self) -> bool:
        return not self.model_dump()


class PassEntry(Record):
    """One entry of `passes`: the pass's `name`, `skipped` when it was, and otherwise the pass's own report
    (the fields of its PassReport, edgeport/pipeline/passes.py), kept as written."""

    model_config = ConfigDict(extra="allow")
    OPTIONAL = ("skipped",)

    name: str
    skipped: bool | None = None

    def report(self) -> dict[str, Any]:
        """The pass's own keys (what it found and did), as written."""
        return dict(self.model_extra or {})


class Manifest(BaseModel):
    edgeport_version: str = __version__
    command: str = ""
    source: SourceInfo = Field(default_factory=SourceInfo)
    layout: Layout = "other"
    artifacts: list[Artifact] = Field(default_factory=list)
    verification: Verification | None = None
    passes: list[PassEntry] = Field(default_factory=list)
    sections: dict[str, Any] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    run: RunInfo = Field(default_factory=RunInfo)

    def set_source(self, path: Path, kind: str, spec: str) -> None:
        """Record the source by file name and content hash; where it lives on this machine goes to `run`."""
        path = Path(path)
        _, sep, entry = spec.rpartition(":") if ".py:" in spec else ("", "", "")
        self.source = SourceInfo(
            file=path.name,
            kind=kind,
            sha256=sha256_of(path) if path.is_file() else None,
            callable=entry if sep else None,
        )
        self.run.paths["source"] = str(path.resolve())
        self.run.paths["source_spec"] = spec

    def set_command(self, command_line: str) -> None:
        """Record which command wrote the manifest ("package"); the full command line goes to `run`."""
        words = command_line.split()
        self.command = words[1] if len(words) > 1 and words[0] == "edgeport" else command_line
        self.run.command = command_line

    def document(self) -> dict[str, Any]:
        """The JSON document as written: the sections' RUN_KEYS moved into `run`, keyed by where they were."""
        data = self.model_dump(mode="json")
        run = data["run"]
        data["sections"] = {
            name: _without_run_keys(section, name, run) for name, section in data["sections"].items()
        }
        for field_name in set(RUN_KEYS.values()):
            run[field_name] = dict(sorted(run[field_name].items()))
        return data

    def reproducible(self) -> str:
        """The manifest without its `run` block: identical for identical inputs and tool versions."""
        data = self.document()
        del data["run"]
        return json.dumps(data, indent=2) + "\n"

    def artifact(self, path: str) -> Artifact:
        for art in self.artifacts:
            if art.path == path:
                return art
        raise KeyError(path)

    def write(self, outdir: Path) -> Path:
        target = Path(outdir) / MANIFEST_NAME
        target.write_text(json.dumps(self.document(), indent=2) + "\n")
        return target

    @classmethod
    def read(cls, outdir: Path) -> Manifest:
        return cls.model_validate_json((Path(outdir) / MANIFEST_NAME).read_text())


S = TypeVar("S", bound="Section")


class Section(Record):
    """A typed section of edgeport.json (manifest.sections[NAME]): a stage writes it with `record`,
    readers get it back with `find` / `of` as fields instead of dictionary keys."""

    NAME: ClassVar[str]
    WRITTEN_BY: ClassVar[str]  # the command that writes it, for the error when it is missing

    def record(self, manifest: Manifest) -> None:
        manifest.sections[self.NAME] = self.model_dump(mode="json")

    @classmethod
    def find(cls: type[S], manifest: Manifest) -> S | None:
        """The section, None when the manifest has none; one this edgeport cannot read is an error."""
        data = manifest.sections.get(cls.NAME)
        if not data:
            return None
        try:
            return cls.model_validate(data)
        except Exception as exc:  # noqa: BLE001 - any mismatch means the same: an unknown layout
            raise EdgeportError(
                f"the {cls.NAME} section of edgeport.json is not one this edgeport reads",
                f"re-run `{cls.WRITTEN_BY}`",
            ) from exc

    @classmethod
    def of(cls: type[S], manifest: Manifest, where: str) -> S:
        """The section of the manifest in `where`; a missing one is a one-line error."""
        found = cls.find(manifest)
        if found is None:
            raise EdgeportError(f"{where} has no {cls.NAME} section", f"run `{cls.WRITTEN_BY}` into it")
        return found


def _without_run_keys(value: Any, where: str, run: dict[str, dict[str, Any]]) -> Any:
    """`value` with every RUN_KEYS entry removed (at any depth), each put into its `run` field under
    the dotted path of the dict that held it."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key in RUN_KEYS and not isinstance(item, dict | list):
                run[RUN_KEYS[key]][where] = item
            else:
                out[key] = _without_run_keys(item, f"{where}.{key}", run)
        return out
    if isinstance(value, list):
        return [_without_run_keys(item, f"{where}.{i}", run) for i, item in enumerate(value)]
    return value


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
