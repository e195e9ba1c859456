"""edgeport.packaging, what every target's package shares: model lookup, staged write, manifest merge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import Artifact, Manifest, Verification, sha256_of
from edgeport.packaging import merge_manifest, resolve_model, write_package

PREFERENCE = ("w4a8", "int8", "float32")


def _convert_output(root: Path, precisions: list[str], listed_only: tuple[str, ...] = ()) -> Path:
    root.mkdir()
    manifest = Manifest(source={"kind": "test"}, layout="NHWC")
    for precision in precisions:
        path = f"model_{precision}.tflite"
        if precision not in listed_only:
            (root / path).write_bytes(b"tfl3")
        manifest.artifacts.append(
            Artifact(path=path, kind="tflite", precision=precision, sha256="x", size_bytes=4)
        )
    manifest.write(root)
    return root


def test_resolve_model_takes_the_first_preferred_precision_present(tmp_path):
    out = _convert_output(tmp_path / "c", ["float32", "int8", "w4a8"], listed_only=("w4a8",))
    path, manifest = resolve_model(out, PREFERENCE)
    assert path == out / "model_int8.tflite" and manifest is not None and manifest.source.kind == "test"
    path, _ = resolve_model(out, ("float32",))
    assert path.name == "model_float32.tflite"
    single = out / "model_float32.tflite"
    assert resolve_model(single, PREFERENCE) == (single, None)


@pytest.mark.parametrize("case", ["no_manifest", "bad_manifest", "nothing_listed", "missing_file"])
def test_resolve_model_bad_input_is_one_error(tmp_path, case):
    model = tmp_path / "c"
    if case == "no_manifest":
        model.mkdir()
        expected = "is not an `edgeport convert` output \\(no edgeport.json\\)"
    elif case == "bad_manifest":
        model.mkdir()
        (model / "edgeport.json").write_text("{not json")
        expected = "not a valid edgeport manifest"
    elif case == "nothing_listed":
        _convert_output(model, ["float16"])
        expected = "has no w4a8, int8 or float32 .tflite listed"
    else:
        model = tmp_path / "absent.tflite"
        expected = "does not exist"
    with pytest.raises(EdgeportError, match=expected) as err:
        resolve_model(model, PREFERENCE)
    assert "\n" not in str(err.value)


def _owned_files(staging) -> None:
    (staging.root / "a.h").write_text("a")
    (staging.root / "sub").mkdir()
    (staging.root / "sub" / "b.c").write_text("b")
    staging.manifest.artifacts.append(Artifact(path="a.h", kind="c_header", sha256="s", size_bytes=1))
    staging.manifest.sections["t"] = {"k": 1}


def test_write_package_writes_files_and_the_merged_manifest(tmp_path):
    source = Manifest(source={"file": "m.py"}, layout="NHWC", passes=[{"name": "p"}])
    source.verification = Verification(reference="r", num_samples=1, seed=0, tolerance_rel=0.1, passed=True)
    out = tmp_path / "out"
    with write_package(
        out,
        force=False,
        owned=("a.h", "sub"),
        model_path=tmp_path / "m.tflite",
        source=source,
        command="edgeport package x",
        tools=("numpy",),
    ) as staging:
        _owned_files(staging)
        assert not out.exists()  # nothing visible until the end
    written = json.loads((out / "edgeport.json").read_text())
    assert written["command"] == "package" and written["run"]["command"] == "edgeport package x"
    assert written["source"] == {"file": "m.py"}
    assert written["layout"] == "NHWC" and written["passes"] == [{"name": "p"}]
    assert written["verification"]["passed"] is True
    assert [a["path"] for a in written["artifacts"]] == ["a.h"] and written["sections"] == {"t": {"k": 1}}
    assert set(written["tools"]) == {"edgeport", "numpy"}
    assert (out / "sub" / "b.c").read_text() == "b"


def test_write_package_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"):
        with write_package(
            out, force=False, owned=("a.h",), model_path=tmp_path / "m", source=None, command=""
        ):
            (out.parent / "marker").write_text("")
            raise RuntimeError("boom")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["marker"]  # no staging directory left


def test_write_package_over_an_edgeport_directory_keeps_the_rest(tmp_path):
    out = _convert_output(tmp_path / "c", ["int8"])
    (out / "a.h").write_text("stale")
    previous = Manifest.read(out)
    previous.artifacts.append(Artifact(path="a.h", kind="c_header", sha256="old", size_bytes=5))
    previous.write(out)
    with write_package(
        out,
        force=True,
        owned=("a.h", "sub"),
        model_path=out / "model_int8.tflite",
        source=Manifest.read(out),
        command="",
    ) as staging:
        _owned_files(staging)
    assert (out / "model_int8.tflite").read_bytes() == b"tfl3" and (out / "a.h").read_text() == "a"
    written = Manifest.read(out)
    assert [a.path for a in written.artifacts] == ["model_int8.tflite", "a.h"]
    assert written.artifact("a.h").sha256 == "s"  # the stale entry was replaced, not duplicated
    assert written.source.model_dump() == {"kind": "test"}


def test_merge_manifest_keeps_a_previous_manifest_over_the_source(tmp_path):
    previous = Manifest(command="old", source={"kind": "earlier"})
    previous.artifacts.append(Artifact(path="mine.h", kind="c_header", sha256="x", size_bytes=1))
    previous.artifacts.append(Artifact(path="theirs.onnx", kind="onnx", sha256="y", size_bytes=1))
    merged = merge_manifest(previous, Manifest(source={"kind": "convert"}), "", Path("m.tflite"), ["mine.h"])
    assert merged.source.model_dump() == {"kind": "earlier"} and merged.command == "old"
    assert [a.path for a in merged.artifacts] == ["theirs.onnx"]
    model = tmp_path / "m.tflite"
    model.write_bytes(b"tfl3")
    fresh = merge_manifest(None, None, "edgeport package m", model, [])
    assert fresh.source.model_dump() == {"file": "m.tflite", "kind": "tflite", "sha256": sha256_of(model)}
    assert fresh.run.paths["source"] == str(model) and fresh.command == "package"
    assert fresh.run.command == "edgeport package m"  # paths as typed stay out of the reproducible part
