"""Write an output directory all at once: build in a temporary sibling, move into place at the end.

A failure anywhere leaves OUTDIR as it was (absent, or untouched), never half-written. SIGTERM and
SIGHUP are handled like Ctrl-C (the staging folder is removed); a run killed outright (SIGKILL, power
loss) leaves its staging folder behind, and the next run into the same OUTDIR removes it. A staging
folder holds its run's lock as edgeport's temp dirs do (edgeport/tempdirs.py), and is removed when
nobody holds it.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.tempdirs import make_locked_dir, release_dir, remove_if_abandoned, remove_tempdir, sweep_once

# Staging folders are named .OUTDIR.edgeport-staging-<pid>-<random>: recognisably ours, naming the
# process that made them; whether it still runs is told by the folder's lock.
_STAGING_TAG = "edgeport-staging"
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))
# Errors writing the output that are the machine's state, not a bug: reported as user errors.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _holds_user_files(outdir: Path) -> str | None:
    """Why replacing `outdir` would delete what the user works in (the current or home directory, or
    one containing it), or None."""
    target = outdir.resolve()
    for name, place in (("the current directory", Path.cwd()), ("your home directory", Path.home())):
        place = place.resolve()
        if target == place:
            return name
        if target in place.parents:
            return f"a directory containing {name}"
    return None


def check_outdir(outdir: Path, force: bool) -> None:
    """Refuse a non-empty OUTDIR unless --force; refuse a path that is a file, and directories the
    user works in (the output replaces OUTDIR as a whole)."""
    if outdir.is_dir() and (why := _holds_user_files(outdir)):
        raise EdgeportError(
            f"-o {outdir} is {why}; the output replaces that directory as a whole",
            "give -o a directory of its own, e.g. -o out/model",
        )
    if outdir.exists() and not outdir.is_dir():
        raise EdgeportError(f"output path {outdir} is a file", "give a directory path with -o")
    if outdir.is_dir() and any(outdir.iterdir()) and not force:
        raise EdgeportError(
            f"output directory {outdir} exists and is not empty",
            "choose another -o directory or pass --force to replace it",
        )
    if not outdir.exists():
        _check_creatable(outdir)


def _check_creatable(outdir: Path) -> None:
    """Refuse now, not after minutes of work, an OUTDIR that cannot be created: under a file, or where its
    nearest existing folder takes no new entry (a read-only or pseudo file system such as /proc)."""
    nearest = next(a for a in outdir.absolute().parents if a.exists())
    try:
        # Not named like a staging folder: unlocked, another run's sweep would take it.
        os.rmdir(tempfile.mkdtemp(prefix=f".{outdir.name}.edgeport-probe-", dir=nearest))
    except OSError as exc:
        raise _unwritable(outdir, exc) from exc


def _unwritable(
    outdir: Path, exc: OSError, what: str = "output directory", flag: str = "-o"
) -> EdgeportError:
    """The user-facing reason an output directory (or file) cannot be created at `outdir`."""
    for ancestor in outdir.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                return EdgeportError(
                    f"cannot create {what} {outdir}: {ancestor} is a file",
                    f"give {flag} a path whose parent folders are directories",
                )
            break
    reason = exc.strerror or type(exc).__name__
    place = "a directory" if what == "output directory" else "a path"
    return EdgeportError(
        f"cannot create {what} {outdir} ({reason})",
        f"give {flag} {place} on a writable file system",
    )


def write_files(files: dict[Path, bytes | str], flag: str = "-o", make_parents: bool = False) -> None:
    """Write every file whole, or none: each goes to a temporary file beside it, and only when all are
    written are they renamed into place. A path that cannot be written is one line naming `flag`."""
    temporaries: dict[Path, Path] = {}
    path = next(iter(files), Path("."))
    try:
        for path, data in files.items():
            if make_parents:
                path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            temporaries[path] = Path(temporary)
            with os.fdopen(handle, "wb") as out:
                out.write(data.encode() if isinstance(data, str) else data)
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    except OSError as exc:
        raise _unwritable(path, exc, "file", flag) from exc
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def staging_owner(path: Path, outdir: Path) -> int | None:
    """The process id that made `path` if it is an edgeport staging folder for `outdir`, else None."""
    pattern = rf"\.{re.escape(outdir.name)}\.{_STAGING_TAG}-(\d+)-\w+"
    match = re.fullmatch(pattern, path.name)
    return int(match.group(1)) if match else None


def sweep_stale_staging(outdir: Path) -> list[Path]:
    """Remove staging folders left beside `outdir` by killed runs; says so on stderr."""
    outdir = Path(outdir)
    siblings = []
    # Beside OUTDIR, and inside it where OUTDIR's parent was not writable (see _make_staging).
    for folder in (outdir.absolute().parent, outdir):
        try:
            siblings += list(folder.iterdir())
        except OSError:
            pass
    removed = []
    for path in sorted(siblings):
        pid = staging_owner(path, outdir)
        if pid is not None and remove_if_abandoned(path):
            removed.append(path)
            print(
                f"edgeport: removed {path}, left by an earlier run into {outdir} that was killed "
                f"(process {pid} is gone).",
                file=sys.stderr,
            )
    return removed


class Terminated(KeyboardInterrupt):
    """SIGTERM / SIGHUP, raised like Ctrl-C so that the same clean-up runs."""


def _raise_terminated(signum: int, _frame: object) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) instead of killing."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    previous = {sig: signal.signal(sig, _raise_terminated) for sig in _TERMINATING}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _make_staging(outdir: Path) -> Path:
    """A new staging folder beside OUTDIR or, where its parent is not writable but OUTDIR is an existing
    directory (a container volume mounted at OUTDIR), inside it."""
    prefix = f".{outdir.name}.{_STAGING_TAG}-{os.getpid()}-"
    try:
        outdir.parent.mkdir(parents=True, exist_ok=True)
        return make_locked_dir(prefix, outdir.parent)
    except OSError as exc:
        if outdir.is_dir():
            try:
                return make_locked_dir(prefix, outdir)
            except OSError:
                pass
        raise _unwritable(outdir, exc) from exc


def _move_into_place(staging: Path, outdir: Path) -> None:
    """Replace OUTDIR by the staging folder: one rename, or, where OUTDIR cannot be renamed (a mount
    point) or holds the staging folder, its entries replaced one by one."""
    if staging.parent != outdir and not outdir.exists():
        staging.rename(outdir)
        return
    if staging.parent != outdir:
        backup = outdir.with_name(f".{outdir.name}.old")
        shutil.rmtree(backup, ignore_errors=True)
        try:
            outdir.rename(backup)
        except OSError:
            backup = None  # OUTDIR stays where it is: its contents are replaced below
        if backup is not None:
            staging.rename(outdir)
            shutil.rmtree(backup, ignore_errors=True)
            return
    for old in outdir.iterdir():
        if old == staging:
            continue
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old)
        else:
            old.unlink()
    for new in staging.iterdir():
        shutil.move(str(new), str(outdir / new.name))
    staging.rmdir()


@contextmanager
def staged_outdir(outdir: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces `outdir`, on failure it is deleted."""
    outdir = Path(outdir)
    sweep_stale_staging(outdir)
    sweep_once()  # and the temp dirs of killed runs (edgeport/tempdirs.py)
    check_outdir(outdir, force)
    staging = _make_staging(outdir)
    try:
        with terminate_as_interrupt():
            yield staging
    except BaseException as exc:
        remove_tempdir(staging)
        if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
            raise EdgeportError(
                f"writing the output beside {outdir} failed ({exc.strerror})",
                "free space on that file system or give -o a directory elsewhere",
            ) from exc
        raise
    try:
        _move_into_place(staging, outdir)
    except OSError as exc:
        remove_tempdir(staging)
        raise EdgeportError(
            f"moving the finished output into {outdir} failed ({exc.strerror or type(exc).__name__})",
            "give -o a directory on a writable file system",
        ) from exc
    release_dir(staging)  # the folder is OUTDIR now, or gone
