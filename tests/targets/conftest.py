"""Fixtures for the Cortex-M target tests: the shared real models, packaged once per session."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import SHARED, SHARED_TFLITE, shared_path

SHARED_MODELS = sorted(p.name for p in SHARED_TFLITE.glob("*.tflite")) if SHARED_TFLITE.is_dir() else []


@pytest.fixture(scope="session")
def packaged(tmp_path_factory):
    """name -> PackageResult for a shared model, packaged for mps2-an386 (cached per session)."""
    from edgeport.targets.cortex_m import package

    cache: dict[str, object] = {}

    def _get(model_name: str):
        if model_name not in cache:
            model = shared_path("models", "tflite", model_name)
            out = tmp_path_factory.mktemp("pkg") / Path(model_name).stem
            cache[model_name] = package(model, out, board="mps2-an386")
        return cache[model_name]

    return _get


def parse_c_array(text: str, name: str) -> bytes:
    """The bytes of `name[] = { 0x.., ... };` in generated C source."""
    match = re.search(re.escape(name) + r"\[\][^=]*=\s*\{(.*?)\};", text, re.S)
    assert match, f"array {name} not found"
    return bytes(int(tok, 16) for tok in re.findall(r"0x[0-9a-fA-F]{2}", match.group(1)))


def arm_gxx() -> str:
    gxx = shutil.which("arm-none-eabi-g++")
    if gxx is None:
        pytest.skip("arm-none-eabi-g++ not installed (apt-get install gcc-arm-none-eabi)")
    return gxx


@pytest.fixture(scope="session")
def tflm_root() -> str:
    """The TFLite Micro tree the firmware tests build against: EDGEPORT_TFLM_ROOT if set, else the offline
    bundle ../shared/tflm/*.tar.xz extracted once into the temp dir (EDGEPORT_TFLM_CACHE to move it) and
    kept there: TFLM's library, built on first use per architecture (minutes), stays in its gen/ for the
    later tests and runs. Skipped when neither exists, or without make, the cross compiler, QEMU, or the
    numpy and Pillow TFLM's Makefile imports while it parses."""
    missing = [
        t for t in ("make", "arm-none-eabi-gcc", "qemu-system-arm", "python3") if shutil.which(t) is None
    ]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install make gcc-arm-none-eabi qemu-system-arm)")
    probe = subprocess.run(["python3", "-c", "import numpy, PIL"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("TFLite Micro's Makefile runs python3 with numpy and Pillow: pip install numpy Pillow")
    root = os.environ.get("EDGEPORT_TFLM_ROOT")
    if root:
        return root
    bundles = sorted((SHARED / "tflm").glob("*.tar.xz"))
    if not bundles:
        pytest.skip(f"no TFLite Micro: {SHARED / 'tflm'} is absent and EDGEPORT_TFLM_ROOT is not set")
    from edgeport.targets.cortex_m.bench_qemu import tree_from_archive

    cache = os.environ.get("EDGEPORT_TFLM_CACHE")
    return str(tree_from_archive(bundles[-1], Path(cache) if cache else None))
