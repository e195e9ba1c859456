"""A normal (non-editable) install ships every sub-package and the firmware templates."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAPPED = {"edgeport": "edgeport", "converters": "edgeport/converters", "quant": "edgeport/quant",
          "targets": "edgeport/targets", "firmware": "edgeport/firmware"}  # fmt: skip


def test_wheel_contains_every_module_and_template(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("edgeport-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for folder, target in MAPPED.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".md", ".pyc"):
                expected.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    missing = sorted(expected - shipped)
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
