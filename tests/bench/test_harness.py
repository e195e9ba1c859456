"""The harness with an in-test runner: check first, interleaving order, results, closing on every path."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.bench.harness import bench, schedule
from edgeport.bench.runner import BenchModel, SessionExtras
from edgeport.bench.schema import BenchSettings, DeviceInfo, Memory, ModelInfo
from edgeport.errors import EdgeportError


def model(name: str) -> BenchModel:
    info = ModelInfo(name=name, path=name, sha256="0" * 64, size_bytes=1)
    return BenchModel(info=info, tflite=Path(name))


class FakeSession:
    def __init__(self, runner: FakeRunner, name: str, settings: BenchSettings) -> None:
        self.runner, self.name = runner, name
        self.init_ms, self.first_ms = 1.0, 2.0
        self.done = 0
        runner.events.append(("open", name, settings.warmup))

    def run(self, count: int) -> list[float]:
        self.runner.events.append(("run", self.name, count))
        if self.name in self.runner.fail_run:
            raise self.runner.fail_run[self.name]
        times = [self.runner.base[self.name] + 0.001 * (self.done + i) for i in range(count)]
        self.done += count
        return times[: count - 1] if self.name in self.runner.short else times

    def finish(self) -> SessionExtras:
        self.runner.events.append(("finish", self.name))
        return SessionExtras(memory=Memory(arena_bytes=len(self.name)), notes=[f"note {self.name}"])

    def close(self) -> None:
        self.runner.events.append(("close", self.name))


class FakeRunner:
    name = "fake"
    time_kind = "device-timer"
    uses = ()

    def __init__(self, interleaves: bool = True) -> None:
        self.interleaves = interleaves
        self.events: list[tuple] = []
        self.base = {"a": 1.0, "b": 2.0, "c": 4.0}
        self.fail_run: dict[str, BaseException] = {}
        self.fail_open: set[str] = set()
        self.refuse: set[str] = set()
        self.short: set[str] = set()

    def device(self) -> DeviceInfo:
        return DeviceInfo(kind="board", description="fake board")

    def check(self, m: BenchModel) -> None:
        self.events.append(("check", m.info.name))
        if m.info.name in self.refuse:
            raise EdgeportError(f"{m.info.name}: cannot run", "give another model")

    def open(self, m: BenchModel, settings: BenchSettings) -> FakeSession:
        if m.info.name in self.fail_open:
            raise EdgeportError(f"{m.info.name}: cannot open")
        return FakeSession(self, m.info.name, settings)

    def tools(self) -> dict[str, str]:
        return {"fake-tool": "1.0"}


def kinds(runner: FakeRunner, kind: str) -> list[tuple]:
    return [e for e in runner.events if e[0] == kind]


def test_schedule_interleaves_rounds_and_counts_every_run():
    assert schedule(2, 5, True) == [(0, 1), (1, 1)] * 5
    steps = schedule(3, 25, True)
    assert steps[:3] == [(0, 2), (1, 2), (2, 2)]  # rounds of 25 // 10
    assert steps[-3:] == [(0, 1), (1, 1), (2, 1)]
    for index in range(3):
        assert sum(count for i, count in steps if i == index) == 25
    assert schedule(2, 7, False) == [(0, 7), (1, 7)]


def test_interleaved_run_checks_all_first_then_alternates_rounds():
    runner = FakeRunner()
    settings = BenchSettings(runner="fake", runs=20, warmup=3)
    report = bench([model("a"), model("b")], runner, settings)
    names = [e[:2] for e in runner.events]
    assert names[:2] == [("check", "a"), ("check", "b")]
    assert names[2:4] == [("open", "a"), ("open", "b")]
    assert kinds(runner, "open")[0][2] == 3  # the session is told the warmup
    assert [e[1:] for e in kinds(runner, "run")] == [("a", 2), ("b", 2)] * 10
    assert set(names[-4:]) == {("finish", "a"), ("finish", "b"), ("close", "a"), ("close", "b")}
    a, b = report.results
    assert a.samples_ms == [1.0 + 0.001 * i for i in range(20)]  # in order, over all rounds
    assert (a.stats.count, a.init_ms, a.first_ms, a.time_kind) == (20, 1.0, 2.0, "device-timer")
    assert (a.memory.arena_bytes, a.notes, a.runner) == (1, ["note a"], "fake")
    assert report.ratios()[1] == pytest.approx(b.stats.median / a.stats.median)
    assert report.tools["fake-tool"] == "1.0" and "edgeport" in report.tools
    assert report.device.description == "fake board"


def test_a_runner_that_does_not_interleave_measures_model_after_model():
    runner = FakeRunner(interleaves=False)
    bench([model("a"), model("b")], runner, BenchSettings(runner="fake", runs=4))
    names = [e[:2] for e in runner.events]
    assert names == [
        ("check", "a"),
        ("check", "b"),
        ("open", "a"),
        ("run", "a"),
        ("finish", "a"),
        ("close", "a"),
        ("open", "b"),
        ("run", "b"),
        ("finish", "b"),
        ("close", "b"),
    ]


def test_a_refused_model_stops_everything_before_anything_opens():
    runner = FakeRunner()
    runner.refuse = {"b"}
    with pytest.raises(EdgeportError, match="b: cannot run"):
        bench([model("a"), model("b")], runner, BenchSettings(runner="fake", runs=2))
    assert kinds(runner, "open") == []


@pytest.mark.parametrize("error", [EdgeportError("b failed"), KeyboardInterrupt()])
def test_every_open_session_is_closed_on_an_error_or_ctrl_c(error):
    runner = FakeRunner()
    runner.fail_run = {"b": error}
    with pytest.raises(type(error)):
        bench([model("a"), model("b"), model("c")], runner, BenchSettings(runner="fake", runs=2))
    assert sorted(e[1] for e in kinds(runner, "close")) == ["a", "b", "c"]


def test_sessions_opened_before_a_failing_open_are_closed():
    runner = FakeRunner()
    runner.fail_open = {"c"}
    with pytest.raises(EdgeportError, match="c: cannot open"):
        bench([model("a"), model("b"), model("c")], runner, BenchSettings(runner="fake", runs=2))
    assert sorted(e[1] for e in kinds(runner, "close")) == ["a", "b"]


def test_a_session_returning_too_few_timings_is_an_error():
    runner = FakeRunner(interleaves=False)
    runner.short = {"a"}
    with pytest.raises(EdgeportError, match="returned 2 timings for 3 runs"):
        bench([model("a")], runner, BenchSettings(runner="fake", runs=3))
    assert kinds(runner, "close") == [("close", "a")]


def test_settings_take_the_runner_name_and_defaults_apply():
    runner = FakeRunner()
    report = bench([model("a")], runner)
    assert report.settings.runner == "fake" and report.settings.runs == BenchSettings(runner="x").runs
    assert report.results[0].stats.count == report.settings.runs


def test_no_model_is_an_error():
    with pytest.raises(EdgeportError, match="no model given"):
        bench([], FakeRunner())


def test_the_python_api_is_edgeport_bench_bench():
    import edgeport.bench

    assert edgeport.bench.bench is bench


def test_a_progress_bar_changes_nothing_measured(capsys):
    runner = FakeRunner()
    report = bench([model("a"), model("b")], runner, BenchSettings(runner="fake", runs=3), progress=True)
    assert [r.stats.count for r in report.results] == [3, 3]
    assert capsys.readouterr().out == ""  # the bar is drawn on stderr only
