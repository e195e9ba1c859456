"""The live status of `edgeport run`: its rows and table as pure functions of the stage events, when it is
shown, and that without it the run's lines are what they were."""

from __future__ import annotations

import io
import queue

from click.testing import CliRunner
from rich.console import Console

from edgeport.run.execute import StageRun, queue_sayer, sayer
from edgeport.run.progress import LiveStatus, StatusRow, status_rows, status_table, wants_live


def finished(variant: str, stage: str, cached: bool = False, error: str | None = None) -> dict:
    """The fields of a finished stage's event, as execute._stage says them."""
    ran = StageRun(stage, "k" * 64, cached, 1.0, f"variants/{variant}", error)
    return {"variant": variant, **ran.__dict__}


EVENTS = [
    (0.0, {"variant": "int8", "stage": "convert", "started": True}),
    (1.0, {"variant": "float", "stage": "convert", "started": True}),
    (4.0, {"variant": "int8", "stage": "convert:onnx", "seconds": 4.0}),
    (6.0, finished("float", "convert", cached=True)),
    (7.0, finished("float", "package:cortex-m", error="board has 64 KiB of RAM")),
    (8.0, finished("float", "package:android")),
    (9.0, {"runner": "host", "stage": "bench"}),  # not a variant's: no row
]


def test_rows_follow_the_events():
    rows = status_rows(["float", "int8", "w4a8"], EVENTS, now=12.0)
    assert rows == [
        # A failed stage stays visible after the variant goes on.
        StatusRow("float", "package android", "done; FAILED", 7.0),
        # Running: the time counts up to now.
        StatusRow("int8", "convert onnx", "running", 12.0),
        StatusRow("w4a8", "", "waiting", 0.0),
    ]
    assert status_rows(["float"], EVENTS[:5], now=12.0)[0].state == "FAILED"
    assert status_rows(["float"], EVENTS[:4], now=12.0)[0] == StatusRow("float", "convert", "cached", 5.0)


def test_the_table_shows_every_row():
    console = Console(file=io.StringIO(), width=80, color_system=None)
    console.print(status_table(status_rows(["float", "int8", "w4a8"], EVENTS, now=12.0)))
    lines = console.file.getvalue().splitlines()
    assert lines[0].split() == ["variant", "stage", "state", "time"]
    assert lines[1].split() == ["float", "package", "android", "done;", "FAILED", "7s"]
    assert lines[2].split() == ["int8", "convert", "onnx", "running", "12s"]
    assert lines[3].split() == ["w4a8", "waiting", "0s"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_live_status_only_on_a_terminal_without_q_or_v():
    assert wants_live(Terminal(), quiet=False, verbose=False)
    assert not wants_live(Terminal(), quiet=True, verbose=False)
    assert not wants_live(Terminal(), quiet=False, verbose=True)
    assert not wants_live(io.StringIO(), quiet=False, verbose=False)


def test_without_a_terminal_the_cli_asks_for_lines(tmp_path, monkeypatch):
    import edgeport.run
    from edgeport.cli.run import run

    asked = {}

    class Stop(Exception):
        pass

    def fake_run(config, outdir, **kwargs):
        asked.update(kwargs)
        raise Stop

    monkeypatch.setattr(edgeport.run, "load_config", lambda path: type("C", (), {"output": tmp_path})())
    monkeypatch.setattr(edgeport.run, "run", fake_run)
    result = CliRunner().invoke(run, [str(tmp_path / "edgeport.toml")])
    assert isinstance(result.exception, Stop) and asked["live"] is False


def test_lines_are_unchanged_and_the_queue_gets_the_same_fields():
    stream, events = io.StringIO(), queue.Queue()
    fields = finished("int8", "convert")
    sayer(stream, quiet=False, json_log=False)("int8: convert ran in 1.0s", **fields)
    queue_sayer(events)("int8: convert ran in 1.0s", **fields)
    assert stream.getvalue() == "int8: convert ran in 1.0s\n" and events.get_nowait() == fields


def test_the_live_status_draws_its_last_table_when_it_stops():
    stream = io.StringIO()
    with LiveStatus(["float", "int8"], stream) as status:
        for _, fields in EVENTS:
            status.say("", **fields)
    text = stream.getvalue()
    assert "FAILED" in text and "running" in text and "waiting" not in text
