"""The live status of `edgeport run` on a terminal: one row per variant, its current stage, the time it has
taken and how its stages ended (done, cached, FAILED).

The variants run in worker processes; each sends its stage events (the fields a `Say` gets) through a
queue, and a thread in the parent redraws the table from all the events so far. The table is a pure
function of the events (`status_rows`, `status_table`); without a terminal, or with -q or -v, the run
prints its lines as before (execute.sayer).
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.table import Table

Event = tuple[float, dict[str, Any]]  # (seconds since the run started, the event's fields)
FAILED = "FAILED"


@dataclass(frozen=True)
class StatusRow:
    variant: str
    stage: str  # the stage it is in or last finished ("" before its first)
    state: str  # waiting, running, done, cached, or FAILED (kept once a stage failed)
    seconds: float  # since its first event: up to now while running, to its last event after


def status_rows(variants: Sequence[str], events: Sequence[Event], now: float) -> list[StatusRow]:
    """Each variant's row after `events` (in the order they came), `now` seconds into the run."""
    rows = {name: StatusRow(name, "", "waiting", 0.0) for name in variants}
    first: dict[str, float] = {}
    failed: dict[str, str] = {}
    for at, fields in events:
        name = fields.get("variant")
        if name not in rows or "stage" not in fields:
            continue
        first.setdefault(name, at)
        stage = str(fields["stage"])
        if fields.get("error"):
            failed.setdefault(name, stage)
            state = FAILED
        elif "cached" in fields:  # a finished stage (StageRun)
            state = "cached" if fields["cached"] else "done"
        else:  # a stage started, or a convert step finished inside it
            state = "running"
        rows[name] = StatusRow(name, stage, state, at - first[name])
    out = []
    for name, row in rows.items():
        seconds = now - first[name] if row.state == "running" else row.seconds
        state = row.state if name not in failed or row.state == FAILED else f"{row.state}; {FAILED}"
        out.append(StatusRow(name, row.stage.replace(":", " "), state, max(seconds, 0.0)))
    return out


def status_table(rows: Sequence[StatusRow]) -> Table:
    """The rows as the table the terminal shows."""
    table = Table("variant", "stage", "state", "time", box=None, pad_edge=False)
    styles = {"running": "cyan", "done": "green", "cached": "green", "waiting": "dim"}
    for row in rows:
        style = "bold red" if FAILED in row.state else styles.get(row.state, "")
        table.add_row(row.variant, row.stage, f"[{style}]{row.state}[/]", f"{row.seconds:.0f}s")
    return table


def wants_live(stream: TextIO, quiet: bool, verbose: bool) -> bool:
    """The live status only on a terminal, and not with -q (nothing) or -v (JSON lines)."""
    return not quiet and not verbose and stream.isatty()


class LiveStatus:
    """The table on `stream`, redrawn from the events workers put on `queue` (picklable for spawn)."""

    def __init__(self, variants: Sequence[str], stream: TextIO) -> None:
        self.variants = list(variants)
        self.manager = get_context("spawn").Manager()
        self.queue = self.manager.Queue()
        self.events: list[Event] = []
        self.started = time.monotonic()
        self.stop_event = threading.Event()
        self.live = Live(
            self._table(),
            console=Console(file=stream, highlight=False),
            redirect_stdout=False,
            redirect_stderr=False,
            refresh_per_second=4,
        )
        self.thread = threading.Thread(target=self._drain, daemon=True)

    def say(self, text: str, **fields: Any) -> None:
        """A Say for the parent: its events go in the table like the workers'."""
        self.queue.put(fields)

    def _table(self) -> Table:
        return status_table(status_rows(self.variants, self.events, time.monotonic() - self.started))

    def _drain(self) -> None:
        while not self.stop_event.is_set():
            self._take(timeout=0.25)
            self.live.update(self._table())

    def _take(self, timeout: float) -> None:
        try:
            fields = self.queue.get(timeout=timeout)
        except (queue.Empty, EOFError, OSError):
            return
        self.events.append((time.monotonic() - self.started, fields))

    def __enter__(self) -> LiveStatus:
        self.live.start()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()
        with contextlib.suppress(queue.Empty, EOFError, OSError):
            while not self.queue.empty():
                self.events.append((time.monotonic() - self.started, self.queue.get_nowait()))
        self.live.update(self._table())
        self.live.stop()  # the last table stays on the terminal
        self.manager.shutdown()


@contextlib.contextmanager
def live_status(enabled: bool, variants: Sequence[str], stream: TextIO) -> Iterator[LiveStatus | None]:
    """A LiveStatus when `enabled`, else None (the run prints its lines)."""
    if not enabled:
        yield None
        return
    with LiveStatus(variants, stream) as status:
        yield status
