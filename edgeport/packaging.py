"""What every target's `package` shares: find the model in a convert output, write OUTDIR all at once, merge
the manifest.

A target decides what to write; this module decides how: into a staging directory that replaces OUTDIR
only when everything is written (edgeport.outdir), with one edgeport.json that carries the conversion's
provenance, keeps what other commands wrote into the same directory, and lists the target's files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Artifact, Manifest, sha256_of, tool_versions
from edgeport.outdir import staged_outdir
from edgeport.tflite_file import TfliteModel


def _either(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def read_manifest(directory: Path, expected: str, fix: str) -> Manifest:
    """The manifest of an edgeport output directory; none, or one that does not parse, is a one-line error
    saying the directory is not `expected` (e.g. "an `edgeport convert` output") and how to make one."""
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise EdgeportError(f"{directory} is not {expected} (no {MANIFEST_NAME})", fix)
    try:
        return Manifest.read(directory)
    except Exception as exc:  # noqa: BLE001 - pydantic/JSON errors all mean the same to the user
        raise EdgeportError(f"{manifest_path} is not a valid edgeport manifest", fix) from exc


def resolve_model(model: Path, preference: Sequence[str]) -> tuple[Path, Manifest | None]:
    """A .tflite path as given, or from a `convert` output directory the .tflite of the first precision in
    `preference` that its manifest lists (with its manifest, whose provenance the package carries on)."""
    model = Path(model)
    if model.is_dir():
        manifest = read_manifest(
            model,
            "an `edgeport convert` output",
            "give a .tflite file or an `edgeport convert` output directory",
        )
        tflites = [a for a in manifest.artifacts if a.kind == "tflite"]
        for wanted in preference:
            for art in tflites:
                if art.precision == wanted and (model / art.path).is_file():
                    return model / art.path, manifest
        raise EdgeportError(
            f"{model} has no {_either(preference)} .tflite listed in {MANIFEST_NAME}",
            "run `edgeport convert` (and compression) into that directory first",
        )
    if not model.is_file():
        raise EdgeportError(f"model file {model} does not exist", "check the path")
    return model, None


def artifact(path: Path, root: Path, kind: str, model: TfliteModel | None = None) -> Artifact:
    """The manifest entry of a written file (hash, size; the model's I/O and ops when it embeds one)."""
    art = Artifact(path=path.relative_to(root).as_posix(), kind=kind, sha256=sha256_of(path), size_bytes=0)
    art.size_bytes = path.stat().st_size
    if model is not None:
        art.inputs, art.outputs, art.op_counts = model.inputs, model.outputs, model.op_counts
    return art


def merge_manifest(
    previous: Manifest | None, source: Manifest | None, command: str, model_path: Path, owned: Iterable[str]
) -> Manifest:
    """The manifest a package starts from: the one already in OUTDIR (updated in place with --force), else
    the convert output's provenance and verification; the target's own artifacts are dropped (re-listed
    by the target)."""
    manifest = previous or Manifest()
    if source is not None and previous is None:
        manifest.source, manifest.layout = source.source, source.layout
        manifest.verification, manifest.passes = source.verification, source.passes
    if command:
        manifest.set_command(command)
    if manifest.source.is_empty():  # a bare .tflite: recorded by name and hash, its path goes to `run`
        manifest.set_source(model_path, "tflite", str(model_path))
    owned = set(owned)
    # An owned folder owns every file listed under it.
    manifest.artifacts = [a for a in manifest.artifacts if a.path.split("/")[0] not in owned]
    return manifest


@dataclass
class Staging:
    """The directory a target writes its package into, and the manifest it adds its entries to."""

    root: Path
    manifest: Manifest


@contextmanager
def write_package(
    outdir: Path,
    *,
    force: bool,
    owned: Sequence[str],
    model_path: Path,
    source: Manifest | None,
    command: str,
    tools: Sequence[str] = (),
) -> Iterator[Staging]:
    """Stage a package for OUTDIR: yields the staging directory and the merged manifest; on a clean exit the
    manifest (with the versions of `tools`) is written and the staging directory replaces OUTDIR.

    `owned` names the files and folders the target writes at the top of OUTDIR; with --force over an edgeport
    directory (a convert output, an earlier package) everything else in it is kept."""
    outdir = Path(outdir)
    previous = Manifest.read(outdir) if force and (outdir / MANIFEST_NAME).is_file() else None
    with staged_outdir(outdir, force) as stage:
        if previous is not None:  # updating an edgeport directory: keep what other commands wrote there
            for entry in outdir.iterdir():
                if entry.name not in owned and entry.name != MANIFEST_NAME:
                    (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, stage / entry.name)
        staging = Staging(stage, merge_manifest(previous, source, command, model_path, owned))
        yield staging
        staging.manifest.tools = {**staging.manifest.tools, **tool_versions(*tools)}
        staging.manifest.write(stage)
