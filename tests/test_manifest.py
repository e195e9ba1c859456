"""edgeport.json: everything but the `run` block depends only on the inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from edgeport.manifest import Manifest


def test_seconds_and_local_paths_move_to_the_run_block(tmp_path: Path) -> None:
    manifest = Manifest(command="convert")
    manifest.sections["quantization"] = {
        "mode": "int8",
        "calibration": {
            "method": "data",
            "data": "cal.npy",
            "local_path": "/home/me/cal.npy",
            "seconds": 4.2,
        },
        "seconds": 12.5,
    }
    manifest.write(tmp_path)
    written = json.loads((tmp_path / "edgeport.json").read_text())
    assert written["sections"]["quantization"] == {
        "mode": "int8",
        "calibration": {"method": "data", "data": "cal.npy"},
    }
    assert written["run"]["seconds"] == {"quantization": 12.5, "quantization.calibration": 4.2}
    assert written["run"]["paths"] == {"quantization.calibration": "/home/me/cal.npy"}
    # The in-memory report keeps what the stage measured; the file reads back with the run block.
    assert manifest.sections["quantization"]["seconds"] == 12.5
    assert Manifest.read(tmp_path).run.seconds["quantization"] == 12.5


def test_source_is_recorded_by_name_and_hash_not_by_where_it_lives(tmp_path: Path) -> None:
    documents = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        model = tmp_path / folder / "net.py"
        model.write_text("NET = 1\n")
        manifest = Manifest(command="convert")
        manifest.set_source(model, "python", f"{model}:build")
        manifest.sections["quantization"] = {"seconds": float(len(documents))}
        documents.append(manifest)
    first, second = documents
    assert first.source.model_dump() == {
        "file": "net.py",
        "kind": "python",
        "sha256": first.source.sha256,
        "callable": "build",
    }
    assert first.reproducible() == second.reproducible()
    assert first.document()["run"] != second.document()["run"]
    assert first.run.paths["source"] == str(tmp_path / "a" / "net.py")


def test_two_identical_runs_write_the_same_manifest_apart_from_run(tmp_path: Path) -> None:
    """The issue's case: wall-clock seconds of the quantization section, and the absolute source path.

    Separate processes, as a user runs them (inside one process Keras numbers its layers on, so a
    second conversion's .tflite names its tensors differently).
    """
    root = Path(__file__).resolve().parents[1]
    runs = []
    for name, spec, cwd in (
        ("a", str(root / "tests/fixtures/tiny_models.py"), tmp_path),
        ("b", "tests/fixtures/tiny_models.py", root),
    ):
        out = tmp_path / name / "out"
        args = [f"{spec}:SequenceHead", "-o", str(out), "--input-shape", "1,5,16", "--quantize", "int8"]
        done = subprocess.run(
            [sys.executable, "-m", "edgeport", "convert", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        runs.append(json.loads((out / "edgeport.json").read_text()))
    first, second = ({k: v for k, v in run.items() if k != "run"} for run in runs)
    assert json.dumps(first) == json.dumps(second)
    assert (
        runs[0]["run"]["seconds"]["quantization"] > 0 and "seconds" not in first["sections"]["quantization"]
    )
    assert runs[0]["run"]["paths"]["source"] == str(root / "tests/fixtures/tiny_models.py")
    assert str(tmp_path) not in json.dumps(first) and str(root) not in json.dumps(first)


def test_the_command_line_as_typed_goes_to_run() -> None:
    manifest = Manifest()
    manifest.set_command("edgeport package /home/me/out/model_int8.tflite --board nucleo-f746zg -o /tmp/pkg")
    assert manifest.command == "package"
    assert (
        manifest.run.command.startswith("edgeport package /home/me/out/")
        and "/home" not in manifest.reproducible()
    )


def test_two_conversions_in_one_process_write_the_same_files(tmp_path: Path) -> None:
    """The Python API (benchmarks convert many models in one process): the second .tflite must not
    carry Keras' per-process layer numbering in its tensor names."""
    from edgeport.pipeline import ConvertOptions, convert_model

    manifests = []
    for name in ("a", "b"):
        options = ConvertOptions(
            source="tests/fixtures/tiny_models.py:SequenceHead",
            outdir=tmp_path / name,
            input_shapes=[[1, 5, 16]],
        )
        manifests.append(convert_model(options).manifest)
    assert [a.sha256 for a in manifests[0].artifacts] == [a.sha256 for a in manifests[1].artifacts]
    assert manifests[0].reproducible() == manifests[1].reproducible()


def test_source_and_passes_are_typed_and_written_as_before(tmp_path: Path) -> None:
    """The typed `source` and `passes` entries write the keys in the order they had as dicts, and a pass's
    own report keys pass through as written."""
    from edgeport.manifest import PassEntry, SourceInfo

    entries = [
        {"name": "fold_batch_norms", "pass": "bn", "found": 2, "folded": 2, "left": 0, "warnings": ["w"]},
        {"name": "onnxsim", "skipped": True},
        {"name": "onnx2tf_rewrites", "applied": ["a"], "onnx2tf_options": {"x": 1}},
    ]
    source = {"file": "net.py", "kind": "python", "sha256": "ab", "callable": "build", "warnings": ["k"]}
    manifest = Manifest(source=source, passes=entries)
    assert isinstance(manifest.source, SourceInfo) and manifest.source.callable == "build"
    assert all(isinstance(p, PassEntry) for p in manifest.passes)
    assert manifest.passes[0].report()["warnings"] == ["w"] and manifest.passes[1].skipped
    data = json.loads(manifest.reproducible())
    assert list(data["source"].items()) == list(source.items())
    assert [list(p.items()) for p in data["passes"]] == [list(e.items()) for e in entries]
    manifest.write(tmp_path)
    again = Manifest.read(tmp_path)
    assert again.reproducible() == manifest.reproducible()
    assert Manifest().source.is_empty() and json.loads(Manifest().reproducible())["source"] == {}
