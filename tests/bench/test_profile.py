"""`--profile`: the per-op aggregation (edgeport/bench/profile.py), its place in the report and the table."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path
from typing import get_args

import pytest

from edgeport.bench.profile import op_profile
from edgeport.bench.schema import BenchReport, BenchSettings, TicksAre, json_schema
from edgeport.bench.table import OUTSIDE, TICKS_ARE_TITLES, profile_table
from edgeport.targets.cortex_m.flash import build_command
from tests.bench.test_schema_stats import report

OPS = [(0, "CONV_2D", 3000), (1, "DEPTHWISE_CONV_2D", 1500), (2, "CONV_2D", 400), (3, "SOFTMAX", 60)]


def test_op_types_are_summed_and_shared_out_of_the_whole_inference():
    profile = op_profile(
        OPS, inference=4, inference_ticks=5000, ms_per_tick=0.04, ticks_are="cycles", source="test"
    )
    assert [(t.op, t.count, t.ticks) for t in profile.by_type] == [
        ("CONV_2D", 2, 3400),
        ("DEPTHWISE_CONV_2D", 1, 1500),
        ("SOFTMAX", 1, 60),
    ]
    assert profile.outside_ticks == 5000 - 4960 and profile.outside_ms == pytest.approx(40 * 0.04)
    shares = sum(t.share for t in profile.by_type) + profile.outside_ticks / profile.ticks
    assert shares == pytest.approx(1.0)
    assert [op.index for op in profile.ops] == [0, 1, 2, 3] and profile.ops[0].ms == pytest.approx(120.0)
    assert (profile.inference, profile.ticks, profile.ticks_are, profile.source) == (
        4,
        5000,
        "cycles",
        "test",
    )


def test_random_profiles_keep_every_op_and_shares_never_exceed_the_whole():
    rng = random.Random(0)
    for _ in range(50):
        names = ["CONV_2D", "ADD", "MEAN", "FULLY_CONNECTED"]
        ops = [(i, rng.choice(names), rng.randrange(0, 10_000)) for i in range(rng.randrange(1, 40))]
        whole = sum(t for _, _, t in ops) + rng.randrange(-50, 500)  # per-op rounding may overshoot
        profile = op_profile(ops, 0, whole, 1e-3, "cycles")
        assert sum(t.count for t in profile.by_type) == len(ops)
        assert sum(t.ticks for t in profile.by_type) == sum(t for _, _, t in ops)
        assert profile.outside_ticks >= 0 and sum(t.share for t in profile.by_type) <= 1.0 + 1e-12
        assert [t.ticks for t in profile.by_type] == sorted((t.ticks for t in profile.by_type), reverse=True)


def _rendered(table) -> str:
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_the_table_compares_op_types_with_the_first_model():
    profiled = report([2.0, 1.0])
    profiled.results[0].profile = op_profile(OPS, 0, 5000, 0.04, "cycles")
    profiled.results[1].profile = op_profile([(0, "CONV_2D", 1700), (1, "ADD", 100)], 0, 1900, 0.04, "cycles")
    text = _rendered(profile_table(profiled))
    rows = {line.split("│")[1].strip(): line for line in text.splitlines() if line.startswith("│")}
    assert list(rows) == ["CONV_2D", "DEPTHWISE_CONV_2D", "SOFTMAX", "ADD", OUTSIDE]
    assert "0.50x" in rows["CONV_2D"] and "68.0%" in rows["CONV_2D"]  # 3400 -> 1700; 3400 of 5000
    assert rows["DEPTHWISE_CONV_2D"].rstrip("│ ").endswith("-")  # not in the second model
    assert "(1) m0.tflite" in text and "(2) m1.tflite" in text
    assert profile_table(report([1.0])) is None  # without --profile: no table


def test_every_kind_of_tick_has_a_title():
    assert set(TICKS_ARE_TITLES) == set(get_args(TicksAre))


@pytest.mark.parametrize(
    ("ticks_are", "says", "never"),
    [
        ("instructions", "QEMU's instruction counts at one per cycle of the board's clock", "cycle counter"),
        ("cycles", "the board's own cycle counter (DWT or SysTick)", "instruction"),
    ],
)
def test_the_table_title_says_what_the_ticks_are(ticks_are, says, never):
    profiled = report([2.0])
    profiled.results[0].profile = op_profile(OPS, 0, 5000, 0.04, ticks_are)
    title = profile_table(profiled).title
    assert title.startswith("per-op profile: one inference, ms from ") and says in title
    assert never not in title


def test_the_qemu_runner_profiles_in_instructions_and_its_table_says_so(monkeypatch, stand_in_tflm):
    """QEMU's profile without a TFLite Micro build: the firmware's printed lines stand in for its run.
    (A board over serial: tests/bench/test_serial.py, in cycles.)"""
    from types import SimpleNamespace

    from edgeport.bench.runner import RunnerOptions, get_runner
    from edgeport.runtimes.qemu import QemuRun
    from edgeport.targets.cortex_m import bench_qemu
    from tests.bench.test_bench_lines import PROFILED

    runner = get_runner("qemu:mps2-an386", RunnerOptions(tflm_root=stand_in_tflm))
    printed = QemuRun(("qemu",), 0, PROFILED.splitlines(), "", False)
    monkeypatch.setattr(bench_qemu.qemu, "run_firmware", lambda *args, **kw: printed)
    model = SimpleNamespace(info=SimpleNamespace(name="kws.tflite"))
    session = bench_qemu.QemuSession(runner, model, BenchSettings(runner=runner.name, runs=3, profile=True))
    session.elf, session.built_runs = Path("firmware.elf"), 3  # built: only the run is asked for
    try:
        session.run(3)
        session.elf = None  # no ELF to size
        profile = session.finish().profile
    finally:
        session.close()
    shift = runner.icount_shift
    assert profile is not None and profile.ticks_are == "instructions"
    assert profile.ticks == bench_qemu.instructions(5009, 25_000_000, shift)
    profiled = report([2.0])
    profiled.results[0].profile = profile
    title = profile_table(profiled).title
    assert "QEMU's instruction counts at one per cycle" in title and "cycle counter" not in title


def test_a_profile_round_trips_through_json_and_its_schema():
    jsonschema = pytest.importorskip("jsonschema")
    profiled = report([2.0])
    profiled.results[0].profile = op_profile(OPS, 1, 5000, 0.04, "instructions")
    data = json.loads(profiled.to_json())
    jsonschema.validate(data, json.loads(json_schema()))
    assert BenchReport.model_validate(data) == profiled


def test_the_setting_and_the_make_variable():
    assert BenchSettings(runner="host").profile is False  # off unless asked for
    assert "BENCH_PROFILE=1" in build_command(Path("fw"), "/tflm", profile=True)
    assert not any("BENCH_PROFILE" in word for word in build_command(Path("fw"), "/tflm"))
