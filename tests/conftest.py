"""Shared fixtures: paths to ../shared (skip cleanly when absent) and a CLI runner."""

from __future__ import annotations

import os
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
