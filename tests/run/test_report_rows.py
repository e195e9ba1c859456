"""A package carrying one model per variant (Android) is described in the report by the variant's model."""

from __future__ import annotations

from pathlib import Path

from edgeport.manifest import Artifact, Manifest
from edgeport.run.report import package_facts


def _android_like_package(tmp_path: Path) -> Path:
    manifest = Manifest()
    for name, precision, size in (
        ("model_float32.tflite", "float32", 900),
        ("model_float16.tflite", "float16", 500),
        ("model_int8.tflite", "int8", 300),
    ):
        manifest.artifacts.append(
            Artifact(path=name, kind="tflite", precision=precision, sha256="0" * 64, size_bytes=size)
        )
    manifest.write(tmp_path)
    return tmp_path


def test_the_row_of_a_variant_names_that_variants_model(tmp_path: Path) -> None:
    package = _android_like_package(tmp_path)
    assert package_facts(package, "int8") == {"model": "model_int8.tflite", "size_bytes": 300}
    assert package_facts(package, "float32") == {"model": "model_float32.tflite", "size_bytes": 900}


def test_a_precision_the_package_lacks_falls_back_to_its_first_model(tmp_path: Path) -> None:
    package = _android_like_package(tmp_path)
    assert package_facts(package, "w4a8")["model"] == "model_float32.tflite"
