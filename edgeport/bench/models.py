"""MODEL arguments of `edgeport bench`, resolved to the .tflite each runner measures.

A MODEL is one of:
- a .tflite file;
- an `edgeport convert` output directory: its quantized variant if it has one, else float32; another
  variant is picked with `DIR:VARIANT` (`out/kws:float32 out/kws:int8` compares the two in one run);
- an `edgeport package` output directory: the model it packaged, with `package_dir` set so a runner
  that builds firmware (qemu, serial) builds that package. The package's target section records the
  model by name and sha256; its bytes are found next to the package, at the path it was packaged from,
  or in the package's own C array (model_data.cc), whichever matches the hash.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.bench.runner import BenchModel
from edgeport.bench.schema import ModelInfo
from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Manifest, sha256_of
from edgeport.tempdirs import make_tempdir, remove_tempdir
from edgeport.tflite_file import parse_tflite

FLOAT_PRECISIONS = ("float32", "float16")
MODEL_FIX = (
    "give a .tflite file, an `edgeport convert` output directory or an `edgeport package` output directory"
)
_HEX_BYTE = re.compile(rb"0x([0-9a-fA-F]{2})")
_extracted_dir: Path | None = None


def split_variant(spec: str) -> tuple[Path, str | None]:
    """`out/kws:int8` -> (out/kws, "int8") when out/kws is a directory; a path that exists as written
    (colons and all) is taken whole."""
    path = Path(spec)
    head, sep, variant = spec.rpartition(":")
    if path.exists() or not sep or not head or not Path(head).is_dir() or "/" in variant:
        return path, None
    return Path(head), variant


def default_variant(precisions: Sequence[str]) -> str | None:
    """The quantized variant if there is one (a convert writes at most one), else float32."""
    quantized = [p for p in precisions if p not in FLOAT_PRECISIONS]
    if quantized:
        return quantized[0]
    return "float32" if "float32" in precisions else (precisions[0] if precisions else None)


def unique_names(names: Sequence[str], paths: Sequence[str]) -> list[str]:
    """The table names, each model's path as given where two would otherwise read the same."""
    return [path if names.count(name) > 1 else name for name, path in zip(names, paths, strict=True)]


def resolve_models(specs: Sequence[str | Path | BenchModel]) -> list[BenchModel]:
    """Every MODEL argument resolved (see the module docstring; a BenchModel is kept as it is), named
    uniquely; the first bad one raises EdgeportError."""
    models = [spec if isinstance(spec, BenchModel) else resolve_model(str(spec)) for spec in specs]
    names = unique_names([m.info.name for m in models], [m.info.path for m in models])
    return [
        dataclasses.replace(m, info=m.info.model_copy(update={"name": name}))
        for m, name in zip(models, names, strict=True)
    ]


def resolve_model(spec: str) -> BenchModel:
    path, variant = split_variant(str(spec))
    if not path.exists():
        raise EdgeportError(f"model {spec} does not exist", "check the path; " + MODEL_FIX)
    if path.is_dir():
        return _from_directory(path, variant, str(spec))
    return _bench_model(path, path.name, str(spec))


def _bench_model(tflite: Path, name: str, given: str, **where: Path) -> BenchModel:
    parse_tflite(tflite.read_bytes(), tflite)  # not a .tflite: the one-line error names the file
    info = ModelInfo(name=name, path=given, sha256=sha256_of(tflite), size_bytes=tflite.stat().st_size)
    return BenchModel(info=info, tflite=tflite, **where)


def _from_directory(directory: Path, variant: str | None, given: str) -> BenchModel:
    if not (directory / MANIFEST_NAME).is_file():
        raise EdgeportError(
            f"{directory} is neither a convert nor a package output of edgeport (no {MANIFEST_NAME})",
            MODEL_FIX,
        )
    try:
        manifest = Manifest.read(directory)
    except Exception as exc:  # noqa: BLE001 - pydantic/JSON errors all mean the same to the user
        raise EdgeportError(
            f"{directory / MANIFEST_NAME} is not a valid edgeport manifest", MODEL_FIX
        ) from exc
    packaged = packaged_model(manifest)
    if packaged is not None and variant is None:
        tflite = _packaged_tflite(directory, manifest, packaged)
        return _bench_model(tflite, f"{directory.name} ({packaged['model']})", given, package_dir=directory)
    variants = {a.precision: directory / a.path for a in manifest.artifacts if a.kind == "tflite"}
    if not variants:
        raise EdgeportError(f"{directory} lists no .tflite model in its {MANIFEST_NAME}", MODEL_FIX)
    chosen = variant or default_variant(list(variants))
    if chosen not in variants:
        raise EdgeportError(
            f"{directory} has no {chosen} model (it has {', '.join(variants)})",
            f"write {directory}:VARIANT with one of those",
        )
    if not variants[chosen].is_file():
        raise EdgeportError(
            f"{variants[chosen]} is listed in {directory / MANIFEST_NAME} but missing",
            "rerun `edgeport convert` into that directory",
        )
    return _bench_model(variants[chosen], f"{directory.name}:{chosen}", given, convert_dir=directory)


def packaged_model(manifest: Manifest) -> dict[str, Any] | None:
    """The target section that records a packaged model (`model` and `model_sha256`), if any."""
    for section in manifest.sections.values():
        if isinstance(section, dict) and section.get("model") and section.get("model_sha256"):
            return section
    return None


def _packaged_tflite(directory: Path, manifest: Manifest, section: dict[str, Any]) -> Path:
    sha = section["model_sha256"]
    candidates = [directory / section["model"]]
    if manifest.run.paths.get("source"):
        candidates.append(Path(manifest.run.paths["source"]))
    for candidate in candidates:
        if candidate.is_file() and sha256_of(candidate) == sha:
            return candidate
    for art in manifest.artifacts:
        if art.kind == "c_source" and (directory / art.path).is_file():
            found = model_from_c_array((directory / art.path).read_bytes(), sha)
            if found is not None:
                return _keep(found, section["model"])
    raise EdgeportError(
        f"{directory} packages {section['model']}, but no copy of it (sha256 {sha[:12]}...) is to be found",
        "bench the .tflite itself, or package it again",
    )


def model_from_c_array(source: bytes, sha256: str) -> bytes | None:
    """The bytes of the `0xNN, ...` array in a generated C source, if they hash to `sha256`."""
    data = bytes.fromhex(b"".join(_HEX_BYTE.findall(source)).decode())
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _keep(data: bytes, name: str) -> Path:
    """`data` in a file that lives until this process exits (a model read out of a package's C array)."""
    global _extracted_dir
    if _extracted_dir is None:
        _extracted_dir = make_tempdir("bench")
        atexit.register(remove_tempdir, _extracted_dir)
    target = Path(tempfile.mkdtemp(dir=_extracted_dir)) / Path(name).name
    target.write_bytes(data)
    return target
