"""Stage progress on stderr: a spinner while a stage runs (on a terminal), one line with its time after.

Into a log (stderr not a terminal) the spinner shows nothing, so a stage's steps are written as lines
instead, at most one every LOG_EVERY seconds: a --prune recovery says its step hundreds of times and
runs for many minutes, which a log would otherwise show as silence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.live import Live
from rich.spinner import Spinner


class _Running:
    """A spinner with the stage's elapsed seconds (a minutes-long calibration visibly progresses)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.started = time.monotonic()
        self.spinner = Spinner("dots")

    def __rich__(self) -> Spinner:
        self.spinner.update(text=f"{self.stage} ... {time.monotonic() - self.started:.0f}s")
        return self.spinner


LOG_EVERY = 30.0  # seconds between two step lines written into a log


class StageDisplay:
    """A pipeline StageObserver for the terminal or a log; `enabled=False` (-q) shows nothing."""

    def __init__(
        self, stream: TextIO, enabled: bool = True, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.console = Console(file=stream, highlight=False) if enabled else None
        self.live: Live | None = None
        self.clock = clock
        self.logged_at: float | None = None  # when the last step line went into a log

    def started(self, stage: str) -> None:
        if self.console is None:
            return
        if not self.console.is_terminal:
            self._log_step(stage)
            return
        self.close()
        # Not console.status(): that also redirects sys.stdout into the display, which would show
        # the library chatter the CLI keeps out of sight.
        self.live = Live(
            _Running(stage),
            console=self.console,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=8,
        )
        self.live.start()

    def finished(self, stage: str, seconds: float) -> None:
        if self.console is None:
            return
        self.close()
        self.logged_at = None
        self.console.print(f"  {stage:<16}{seconds:7.1f}s")

    def _log_step(self, text: str) -> None:
        """A step ("prune: recovery: step 120/400, ...") as a line, the first of a stage at once and
        then at most one every LOG_EVERY seconds; a stage's start needs none (its finished line follows)."""
        if ": " not in text:
            return
        now = self.clock()
        if self.logged_at is None or now - self.logged_at >= LOG_EVERY:
            self.logged_at = now
            assert self.console is not None
            self.console.print(f"  {text}", markup=False, soft_wrap=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
