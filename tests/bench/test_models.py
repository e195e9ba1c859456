"""MODEL arguments: a .tflite, a convert output (its variants), a package output (its model found three
ways), and each bad input as one EdgeportError."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from edgeport.bench.models import (
    default_variant,
    model_from_c_array,
    resolve_model,
    resolve_models,
    split_variant,
    unique_names,
)
from edgeport.errors import EdgeportError
from edgeport.manifest import Artifact, Manifest, sha256_of
from tests.targets.synth import big_fc_model


def tflite(path: Path, in_features: int = 16) -> Path:
    path.write_bytes(big_fc_model(in_features, 8))
    return path


def convert_dir(root: Path, precisions=("float32", "float16", "int8")) -> Path:
    """A directory laid out as `edgeport convert` writes it (only what bench reads)."""
    root.mkdir()
    manifest = Manifest()
    for i, precision in enumerate(precisions):
        path = tflite(root / f"model_{precision}.tflite", 16 + i)
        manifest.artifacts.append(
            Artifact(path=path.name, kind="tflite", precision=precision, sha256=sha256_of(path), size_bytes=1)
        )
    manifest.write(root)
    return root


def test_a_tflite_file(tmp_path):
    path = tflite(tmp_path / "m.tflite")
    model = resolve_model(str(path))
    assert model.tflite == path and model.convert_dir is None and model.package_dir is None
    assert model.info.name == "m.tflite" and model.info.path == str(path)
    assert model.info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert model.info.size_bytes == path.stat().st_size


def test_a_convert_dir_gives_its_quantized_variant_unless_one_is_named(tmp_path):
    root = convert_dir(tmp_path / "kws")
    model = resolve_model(str(root))
    assert model.tflite == root / "model_int8.tflite" and model.convert_dir == root
    assert model.info.name == "kws:int8"
    named = resolve_model(f"{root}:float32")
    assert named.tflite == root / "model_float32.tflite" and named.info.name == "kws:float32"
    float_only = resolve_model(str(convert_dir(tmp_path / "f", ("float32", "float16"))))
    assert float_only.info.name == "f:float32"


def test_variant_choice_and_split():
    assert default_variant(["float32", "float16", "w4a8"]) == "w4a8"
    assert default_variant(["float16", "float32"]) == "float32"
    assert default_variant([]) is None


def test_split_variant_only_where_the_head_is_a_directory(tmp_path):
    assert split_variant(f"{tmp_path}:int8") == (tmp_path, "int8")
    assert split_variant(str(tmp_path)) == (tmp_path, None)
    assert split_variant("missing:int8") == (Path("missing:int8"), None)
    odd = tmp_path / "a:b.tflite"
    odd.write_bytes(b"x")
    assert split_variant(str(odd)) == (odd, None)  # a path that exists is taken whole


def test_same_names_are_told_apart_by_path(tmp_path):
    assert unique_names(["m", "m", "n"], ["a/m", "b/m", "n"]) == ["a/m", "b/m", "n"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    models = resolve_models([tflite(tmp_path / "a" / "m.tflite"), tflite(tmp_path / "b" / "m.tflite")])
    assert [m.info.name for m in models] == [
        str(tmp_path / "a" / "m.tflite"),
        str(tmp_path / "b" / "m.tflite"),
    ]


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory):
    """A real cortex-m package of a tiny model, and the model it packaged."""
    from edgeport.targets.cortex_m import package

    root = tmp_path_factory.mktemp("bench_pkg")
    source = tflite(root / "tiny.tflite")
    package(source, root / "pkg", board="mps2-an386")
    return root / "pkg", source


def test_a_package_dir_finds_the_model_it_packaged(package_dir):
    pkg, source = package_dir
    model = resolve_model(str(pkg))
    assert model.package_dir == pkg and model.tflite == source
    assert model.info.sha256 == sha256_of(source) and model.info.name == "pkg (tiny.tflite)"


def test_a_package_whose_source_is_gone_is_read_from_its_c_array(package_dir, tmp_path):
    pkg, source = package_dir
    moved = tmp_path / "pkg"
    shutil.copytree(pkg, moved)
    manifest = Manifest.read(moved)
    manifest.run.paths["source"] = str(tmp_path / "gone.tflite")
    manifest.write(moved)
    model = resolve_model(str(moved))
    assert model.tflite.read_bytes() == source.read_bytes() and model.package_dir == moved


def test_model_from_c_array_checks_the_hash():
    data = b"\x01\x02\xff"
    text = b"const unsigned char g[] = {\n  0x01, 0x02, 0xff,\n};\n"
    assert model_from_c_array(text, hashlib.sha256(data).hexdigest()) == data
    assert model_from_c_array(text, "0" * 64) is None


def written(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing.tflite", "does not exist"),
        (lambda p: p, "is neither a convert nor a package output"),
        (lambda p: written(p / "x.tflite", b"hello world"), "not a TFLite flatbuffer"),
        (lambda p: written(p / "e.tflite", b""), "is empty"),
    ],
)
def test_bad_models_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(EdgeportError, match=message) as err:
        resolve_model(str(make(tmp_path)))
    assert "\n" not in str(err.value)


def test_a_missing_variant_names_the_ones_there(tmp_path):
    root = convert_dir(tmp_path / "kws", ("float32",))
    with pytest.raises(EdgeportError, match=r"has no int8 model \(it has float32\)"):
        resolve_model(f"{root}:int8")
    (root / "model_float32.tflite").unlink()
    with pytest.raises(EdgeportError, match="listed in .* but missing"):
        resolve_model(str(root))
    (root / "edgeport.json").write_text("{not json")
    with pytest.raises(EdgeportError, match="not a valid edgeport manifest"):
        resolve_model(str(root))
