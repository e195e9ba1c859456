"""Shared fixtures: paths to ../shared (skip cleanly when absent), a CLI runner, and TFLite Micro trees
(a stand-in, and the real one the firmware and QEMU tests build against)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEPORT_SHARED", ROOT.parent / "shared"))
SHARED_TFLITE = SHARED / "models" / "tflite"

# Keep TensorFlow's C++ logging out of test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not available (../shared is absent on this machine)")
    return path


@pytest.fixture
def run_cli(capsys):
    """Run `edgeport ARGS...` in-process; returns (exit_code, stdout, stderr)."""
    from edgeport.cli import main

    def _run(*args: str) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return _run


@pytest.fixture
def stand_in_tflm(tmp_path: Path) -> Path:
    """A directory that passes for a TFLite Micro checkout: only the Makefile the tree check looks for, a
    comment inside. For runners and commands that need a tree to start but must stop (or be stopped)
    before anything is built against it."""
    from edgeport.targets.cortex_m.flash import TFLM_MAKEFILE

    root = tmp_path / "tflite-micro"
    (root / TFLM_MAKEFILE).parent.mkdir(parents=True)
    (root / TFLM_MAKEFILE).write_text("# stand-in\n")
    return root


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
    from bench.latency import offline_tflm_tree

    cache = os.environ.get("EDGEPORT_TFLM_CACHE")
    tree = offline_tflm_tree(Path(cache) if cache else None)
    if tree is None:
        pytest.skip(f"no TFLite Micro: {SHARED / 'tflm'} is absent and EDGEPORT_TFLM_ROOT is not set")
    return str(tree)
