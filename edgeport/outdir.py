"""Write an output directory all at once: build in a temporary sibling, move into place at the end.

A failure anywhere leaves OUTDIR as it was (absent, or untouched), never half-written.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeport.errors import EdgeportError


def check_outdir(outdir: Path, force: bool) -> None:
    """Refuse a non-empty OUTDIR unless --force; refuse a path that is a file."""
    if outdir.exists() and not outdir.is_dir():
        raise EdgeportError(f"output path {outdir} is a file", "give a directory path with -o")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise EdgeportError(
            f"output directory {outdir} exists and is not empty",
            "choose another -o directory or pass --force to replace it",
        )


@contextmanager
def staged_outdir(outdir: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `outdir`, on failure it is deleted."""
    outdir = Path(outdir)
    check_outdir(outdir, force)
    outdir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.", dir=outdir.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    backup = None
    if outdir.exists():
        backup = outdir.with_name(f".{outdir.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        outdir.rename(backup)
    staging.rename(outdir)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
