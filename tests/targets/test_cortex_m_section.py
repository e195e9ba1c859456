"""The typed `cortex_m` manifest section: what the packager writes reads back as fields."""

from __future__ import annotations

import json

import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Manifest
from edgeport.targets.cortex_m.section import SECTION, CortexMSection
from tests.conftest import shared_path


@pytest.fixture
def hello_package(tmp_path):
    from edgeport.targets.cortex_m import package

    return package(
        shared_path("models", "tflite", "tflm_hello_world_int8.tflite"), tmp_path / "pkg", board="nano33ble"
    )


def test_the_written_section_reads_back_as_the_package_result(hello_package):
    section = CortexMSection.of(Manifest.read(hello_package.outdir), "pkg")
    assert (section.board, section.name, section.section) == ("nano33ble", "g_model", ".rodata")
    assert (section.model_bytes, section.crc32) == (hello_package.model_bytes, f"0x{hello_package.crc32:08x}")
    assert (
        section.ops == hello_package.ops and section.arena.kTensorArenaSize == hello_package.arena.arena_size
    )
    assert section.fit.checked and section.fit.fits_ram == hello_package.fit.fits_ram
    assert section.decode is None
    raw = json.loads((hello_package.outdir / MANIFEST_NAME).read_text())["sections"][SECTION]
    assert "decode" not in raw and list(raw)[:3] == ["model", "model_sha256", "model_bytes"]


def test_a_missing_or_foreign_section_is_one_error(hello_package, run_cli):
    with pytest.raises(EdgeportError, match="has no Cortex-M package"):
        CortexMSection.of(Manifest(), "somewhere")
    manifest = Manifest.read(hello_package.outdir)
    del manifest.sections[SECTION]["arena"]
    manifest.write(hello_package.outdir)
    with pytest.raises(EdgeportError, match="is not one this edgeport reads"):
        CortexMSection.of(Manifest.read(hello_package.outdir), "pkg")
    code, _, err = run_cli("flash", hello_package.outdir, "--board", "nano33ble", "--dry-run")
    assert code == 1 and "is not one this edgeport reads" in err and err.strip().count("\n") == 0
