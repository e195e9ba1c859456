"""Stage progress on stderr: a spinner while a stage runs (on a terminal), one line with its time after."""

from __future__ import annotations

import time
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


class StageDisplay:
    """A pipeline StageObserver for the terminal; `enabled=False` (-q) shows nothing."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self.console = Console(file=stream, highlight=False) if enabled else None
        self.live: Live | None = None

    def started(self, stage: str) -> None:
        if self.console is None:
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
        self.console.print(f"  {stage:<16}{seconds:7.1f}s")

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None
