"""Packaging a LUT-compressed model (TFLM_DECODE operators) for Cortex-M, and refusing the legacy scheme.

The DECODE kernel is part of TFLite Micro's default build, so the package needs no build flag: the
resolver registers AddDecode(), the arena is measured on the compressed model itself (the decoded
weights live in the arena), and the self-test output is the uncompressed model's, bit for bit.
"""

from __future__ import annotations

import json

import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.quant.cluster import cluster_weights
from edgeport.quant.lut_compression import compress_lut, read_lut_weights
from edgeport.targets.cortex_m.compressed import LEGACY_METADATA
from edgeport.targets.cortex_m.flash import build_and_run_qemu
from edgeport.tflite_file import edit_tflite, serialize_tflite
from tests.quant.cluster_models import synth_int8_cnn

BOARD = "mps2-an386"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("lut")
    clustered = cluster_weights(synth_int8_cnn(), 4).model
    paths = {"clustered": root / "clustered.tflite", "compressed": root / "compressed.tflite"}
    paths["clustered"].write_bytes(clustered)
    paths["compressed"].write_bytes(compress_lut(clustered))
    return paths


@pytest.fixture(scope="module")
def packages(models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from edgeport.targets.cortex_m import package

    root = tmp_path_factory.mktemp("lut_pkg")
    return {kind: package(path, root / kind, board=BOARD) for kind, path in models.items()}


def test_compressed_package_registers_decode_and_matches_the_uncompressed_model(packages, models) -> None:
    plain, packed = packages["clustered"], packages["compressed"]
    assert "TFLM_DECODE" in packed.ops and "TFLM_DECODE" not in plain.ops
    ops_h = (packed.outdir / "model_ops.h").read_text()
    assert "resolver.AddDecode()" in ops_h and "no USE_TFLM_COMPRESSION define is needed" in ops_h
    assert packed.model_bytes < plain.model_bytes
    # Same seeded test input (same input tensor), same output: the self-test vectors agree bit for bit.
    for a, b in zip(plain.arena.inputs, packed.arena.inputs, strict=True):
        assert (a == b).all()
    for a, b in zip(plain.arena.outputs, packed.arena.outputs, strict=True):
        assert (a == b).all()


def test_arena_and_manifest_account_for_the_decoded_weights(packages, models) -> None:
    plain, packed = packages["clustered"], packages["compressed"]
    decoded = read_lut_weights(models["compressed"].read_bytes())
    section = json.loads((packed.outdir / MANIFEST_NAME).read_text())["sections"]["cortex_m"]
    assert section["decode"]["decoded_tensors"] == len(decoded)
    assert section["decode"]["decoded_bytes"] == sum(v.size for v in decoded.values())
    assert "decode" not in json.loads((plain.outdir / MANIFEST_NAME).read_text())["sections"]["cortex_m"]
    # The decoded weights take arena space the uncompressed model does not need (it reads them from
    # flash); at most all of them at once.
    assert plain.arena.measured_bytes < packed.arena.measured_bytes
    assert (
        packed.arena.measured_bytes <= plain.arena.measured_bytes + section["decode"]["decoded_bytes"] + 1024
    )


def _with_legacy_metadata(model: bytes) -> bytes:
    raw = edit_tflite(model)
    buffer = schema.BufferT()
    buffer.data = [0] * 16
    raw.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = LEGACY_METADATA.encode(), len(raw.buffers) - 1
    raw.metadata = [*(raw.metadata or []), entry]
    return serialize_tflite(raw)


def test_legacy_compression_metadata_is_refused_with_the_reason(tmp_path) -> None:
    from edgeport.targets.cortex_m import package

    model = tmp_path / "legacy.tflite"
    model.write_bytes(_with_legacy_metadata(synth_int8_cnn()))
    with pytest.raises(EdgeportError, match="USE_TFLM_COMPRESSION") as caught:
        package(model, tmp_path / "out", board=BOARD)
    assert LEGACY_METADATA in str(caught.value) and "DECODE" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_compressed_firmware_passes_in_qemu(packages, tflm_root: str) -> None:
    """Against the tflm_root tree (conftest.py): TFLM's DECODE kernel on Cortex-M4."""
    result = packages["compressed"]
    run = build_and_run_qemu(result.outdir / "firmware", result.board, tflm_root)
    assert "PASS" in run.stdout and run.exit_status == 0, run.stdout + run.stderr
