"""Working directories under the system temp dir that a run killed outright does not leave for good.

A run removes its own directories (at the end of their use, on Ctrl-C, and on SIGTERM / SIGHUP, which
edgeport/outdir.py turns into Ctrl-C); a run killed by SIGKILL, the OOM killer or a timeout cannot, and
a SavedModel export holds a copy of the model's weights. So every such directory is named
edgeport-<tag>-pid<pid>-<random> and holds an flock for as long as its owner lives, and the first
directory a process makes sweeps away those whose lock nobody holds.

The same lock marks OUTDIR's staging folders (edgeport/outdir.py): make_locked_dir and
remove_if_abandoned are the one rule for "the owner of a leftover directory is gone". Why a lock and
not "the pid is dead, or was started after the folder": the kernel drops the lock when the owner dies
however it dies, pid reuse and clock steps cannot fool it, and it holds across pid namespaces
(containers sharing one TMPDIR), where another container's live pid looks dead to us.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

_NAME = re.compile(r"edgeport-([a-z][a-z0-9-]*)-pid(\d+)-([a-z0-9_]+)")
# Until its lock is taken a directory carries this suffix, which the sweep ignores: a sweep between
# mkdtemp and flock would otherwise see a new, unlocked directory and remove it (the price: a run killed
# in that instant leaves an empty *.new directory).
_UNLOCKED = ".new"
_HELD: dict[str, int] = {}  # directory -> descriptor holding its lock
_LOCK = threading.Lock()
_swept: set[str] = set()  # parents swept by this process


def tempdir_owner(path: Path) -> int | None:
    """The process id in an edgeport temp directory's name, or None if `path` is not one."""
    match = _NAME.fullmatch(Path(path).name)
    return int(match.group(2)) if match else None


def make_tempdir(tag: str, parent: Path | None = None) -> Path:
    """A new directory edgeport-<tag>-pid<pid>-<random> under `parent` (default: the temp dir), locked
    until remove_tempdir or the process's end. The first call in a process sweeps stale ones first."""
    if not re.fullmatch(r"[a-z][a-z0-9-]*", tag):
        raise ValueError(f"temp dir tag {tag!r}: lowercase letters, digits and '-' only")
    sweep_once(parent)
    return make_locked_dir(f"edgeport-{tag}-pid{os.getpid()}-", parent)


def make_locked_dir(prefix: str, parent: Path | None = None) -> Path:
    """A new directory <prefix><random> under `parent` (default: the temp dir) whose flock this process
    holds until release_dir or remove_tempdir, or its end however it ends."""
    while True:
        fresh = tempfile.mkdtemp(prefix=prefix, suffix=_UNLOCKED, dir=parent)
        fd = os.open(fresh, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        final = fresh[: -len(_UNLOCKED)]
        if not os.path.lexists(final):  # mkdtemp's random part is unique among *.new names only
            os.rename(fresh, final)
            with _LOCK:
                _HELD[final] = fd
            return Path(final)
        os.close(fd)
        os.rmdir(fresh)


def sweep_once(parent: Path | None = None) -> None:
    """sweep_stale_tempdirs(parent), the first time this process asks for `parent`."""
    where = os.fspath(parent if parent is not None else tempfile.gettempdir())
    with _LOCK:
        first = where not in _swept
        _swept.add(where)
    if first:
        sweep_stale_tempdirs(Path(where))


def remove_tempdir(path: Path | str) -> None:
    """Delete a directory from make_tempdir or make_locked_dir and release its lock; a second call does
    nothing."""
    shutil.rmtree(path, ignore_errors=True)
    release_dir(path)


def release_dir(path: Path | str) -> None:
    """Give up the lock on a directory from make_locked_dir, keeping the directory (wherever it has
    been renamed to: the lock is on the directory, `path` only names it)."""
    with _LOCK:
        fd = _HELD.pop(os.fspath(path), None)
    if fd is not None:
        os.close(fd)


@contextlib.contextmanager
def tempdir(tag: str, parent: Path | None = None) -> Iterator[Path]:
    """make_tempdir for the duration of a block (tempfile.TemporaryDirectory's job)."""
    path = make_tempdir(tag, parent)
    try:
        yield path
    finally:
        remove_tempdir(path)


def sweep_stale_tempdirs(parent: Path | None = None) -> list[Path]:
    """Remove edgeport temp directories under `parent` (default: the temp dir) whose lock no process
    holds, i.e. whose owner was killed; says so on stderr. Others' directories and live ones stay."""
    parent = Path(parent if parent is not None else tempfile.gettempdir())
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return []
    removed = []
    for path in entries:
        pid = tempdir_owner(path)
        if pid is not None and remove_if_abandoned(path):
            removed.append(path)
            print(f"edgeport: removed {path}, left by a killed run (process {pid}).", file=sys.stderr)
    return removed


def remove_if_abandoned(path: Path) -> bool:
    """Remove the directory `path` if no process holds its lock (its owner is gone, however it died);
    True if it was removed. A live owner's directory, a symlink or a file stays."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:  # gone, a symlink, a file, or not ours to open
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held: its owner is alive
        os.close(fd)
        return False
    try:
        shutil.rmtree(path, ignore_errors=True)
    finally:
        os.close(fd)
    return not os.path.lexists(path)
