"""The firmware project: copy the templates in firmware/ into OUTDIR/firmware, filled in for the board."""

from __future__ import annotations

from pathlib import Path

from edgeport.targets.boards import Board

FIRMWARE_ROOT = Path(__file__).resolve().parents[2] / "firmware"


def write_project(stage: Path, board: Board, name: str, model_name: str) -> Path:
    target = stage / "firmware"
    target.mkdir()
    return target
