"""Fixtures for the Cortex-M target tests: the shared real models, packaged once per session."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import SHARED_TFLITE, shared_path

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
