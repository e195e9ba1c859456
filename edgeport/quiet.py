"""Silence native libraries (TensorFlow, LiteRT, onnxruntime) that write straight to fd 1/2.

Python-level redirection does not catch C++ logging; this swaps the file descriptors themselves.
The CLI wraps a whole command in it unless --debug, so users see edgeport's progress and one-line
summary, not pages of library chatter; the Python API leaves the caller's stdout/stderr alone.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import TextIO


def quiet_native_logs() -> None:
    """Environment switches honoured by TensorFlow/absl at import time."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def silenced(enabled: bool = True) -> Iterator[TextIO]:
    """Send fd 1 and 2 to a scratch file for the duration (errors still surface as exceptions).

    Yields a stream on the original stderr, for what the user should still see (stage progress).
    """
    if not enabled:
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
    stderr = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding=encoding, errors="replace")
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield stderr  # Python's own sys.stdout/stderr write to fd 1/2 too, once flushed
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            stderr.close()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
