"""The one parser of the firmware's timing lines (targets/cortex_m/bench_lines.py)."""

from __future__ import annotations

import pytest

from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m.bench_lines import (
    BenchLineParser,
    BenchLinesError,
    lines_op_profile,
    parse_bench_lines,
    parse_profile_csv,
)

# What firmware/project/main.cc prints on a QEMU machine, self-test lines included.
OUTPUT = """\
edgeport self-test
model: 2704 bytes, crc32 0x1234abcd (ok)
arena: 1436 of 2048 bytes used\r
latency: 5012 cycles (SysTick), 200 us at 25 MHz
PASS
edgeport bench: warmup=2 runs=3 clock_hz=25000000 source=SysTick
inference 0: 5010 cycles
inference 1: 5011 cycles
inference 2: 5009 cycles
stack: 1304 bytes used
edgeport bench: done
"""


def test_parses_every_field_of_a_complete_run():
    lines = parse_bench_lines(OUTPUT)
    assert (lines.warmup, lines.runs, lines.clock_hz, lines.source) == (2, 3, 25_000_000, "SysTick")
    assert lines.cycles == (5010, 5011, 5009)
    assert (lines.stack_bytes, lines.arena_used, lines.arena_size, lines.done) == (1304, 1436, 2048, True)
    assert lines.first_cycles == 5012
    assert lines.milliseconds() == pytest.approx([5010 / 25e3, 5011 / 25e3, 5009 / 25e3])
    assert parse_bench_lines(OUTPUT.splitlines()) == lines  # a list of lines parses the same


def test_stack_and_arena_lines_are_optional():
    text = "\n".join(line for line in OUTPUT.splitlines() if not line.startswith(("stack", "arena", "lat")))
    lines = parse_bench_lines(text)
    assert lines.stack_bytes is None and lines.arena_used is None and lines.arena_size is None
    assert lines.first_cycles is None


@pytest.mark.parametrize(
    ("cut_after", "message"),
    [
        ("PASS", "printed no 'edgeport bench:' timing lines"),
        ("source=SysTick", "stopped after 0 of 3 inferences"),
        ("inference 1: 5011 cycles", "stopped after 2 of 3 inferences"),
        ("stack: 1304 bytes used", "stopped after 3 of 3 inferences"),
    ],
)
def test_a_truncated_stream_is_an_error_saying_how_far_it_got(cut_after, message):
    text = OUTPUT[: OUTPUT.index(cut_after) + len(cut_after)]
    with pytest.raises(BenchLinesError, match=message) as info:
        parse_bench_lines(text)
    assert isinstance(info.value, EdgeportError) and info.value.fix  # one line with a fix


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("inference 1: 5011 cycles", "inference 2: 5011 cycles", "inference 2 where inference 1 was due"),
        ("inference 2: 5009 cycles\n", "", "printed 2 inference lines but announced runs=3"),
        ("inference 1: 5011 cycles", "inference 1: 50x1 cycles", "garbled firmware timing line"),
        ("clock_hz=25000000", "clock_hz=", "garbled firmware timing line"),
        ("clock_hz=25000000", "clock_hz=0", "clock_hz=0"),
        ("stack: 1304 bytes used", "stack: lots", "garbled"),
        ("latency: 5012 cycles", "latency: 50 12 cycles", "garbled"),
        ("edgeport bench: warmup=2 runs=3 clock_hz=25000000 source=SysTick\n", "", "without its header"),
    ],
)
def test_a_malformed_stream_is_an_error_naming_the_problem(old, new, message):
    assert old in OUTPUT
    with pytest.raises(BenchLinesError, match=message):
        parse_bench_lines(OUTPUT.replace(old, new))


def test_incremental_feed_reports_progress_and_a_reset_starts_over():
    parser = BenchLineParser()
    # Joined mid-run (serial): an inference line before any header is skipped.
    for line in ["nce 7: 12 cycles", "inference 8: 13 cycles", *OUTPUT.splitlines()[:8]]:
        parser.feed(line)
    assert parser.started and parser.measured == 2 and not parser.done
    for line in OUTPUT.splitlines()[5:]:  # the board reset: the header again, then a whole run
        parser.feed(line)
    assert parser.done and parser.result().cycles == (5010, 5011, 5009)


# A BENCH_PROFILE=1 build adds MicroProfiler::LogCsv of the last timed inference (MicroPrintf ends each
# line with \r\n, which a serial stream shows as blank lines between them).
PROFILE = """\
edgeport profile: inference 2\r
"Event","Tag","Ticks"\r
\r
0,CONV_2D,3000\r
\r
1,DEPTHWISE_CONV_2D,1500\r
2,CONV_2D,400\r
3,SOFTMAX,60\r
edgeport profile: end
"""
PROFILED = OUTPUT.replace("stack: 1304", PROFILE + "stack: 1304")


def test_the_op_profile_is_read_in_event_order():
    lines = parse_bench_lines(PROFILED)
    assert lines.profile_inference == 2
    assert [(e.index, e.op, e.ticks) for e in lines.profile] == [
        (0, "CONV_2D", 3000),
        (1, "DEPTHWISE_CONV_2D", 1500),
        (2, "CONV_2D", 400),
        (3, "SOFTMAX", 60),
    ]
    assert lines.cycles == (5010, 5011, 5009) and lines.stack_bytes == 1304  # the rest unchanged
    assert parse_bench_lines(OUTPUT).profile is None  # a build without the profiler


def test_parse_profile_csv_is_the_block_alone():
    block = PROFILE.splitlines()[1:-1]
    assert parse_profile_csv(block) == parse_bench_lines(PROFILED).profile


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('"Event","Tag","Ticks"', "Event,Tag,Ticks", "does not start with"),
        ("1,DEPTHWISE_CONV_2D,1500", "2,DEPTHWISE_CONV_2D,1500", "garbled op profile line"),
        ("3,SOFTMAX,60", "3,SOFTMAX", "garbled op profile line"),
        ("2,CONV_2D,400", "2,CONV_2D,-4", "garbled op profile line"),
        ("edgeport profile: inference 2", "edgeport profile: inference 3", "profiled inference 3 of 3"),
        ("edgeport profile: inference 2\r\n", "", "without its start line"),
    ],
)
def test_a_garbled_profile_is_an_error(old, new, message):
    with pytest.raises(BenchLinesError, match=message) as info:
        parse_bench_lines(PROFILED.replace(old, new))
    assert info.value.fix


def test_a_profile_without_its_end_line_is_an_error_not_a_swallowed_stream():
    with pytest.raises(BenchLinesError, match="op profile stopped after 7 lines"):
        parse_bench_lines(PROFILED.replace("edgeport profile: end\n", ""))


def test_a_header_seen_again_drops_a_profile_cut_by_a_reset():
    reset = PROFILED[: PROFILED.index("2,CONV_2D")] + OUTPUT[OUTPUT.index("edgeport bench:") :]
    lines = parse_bench_lines(reset)
    assert lines.profile is None and lines.cycles == (5010, 5011, 5009)


def test_lines_op_profile_converts_every_count_the_same_way_and_counts_earlier_runs():
    """The one conversion both runners use: QEMU passes SysTick -> instructions, a board its cycles as they
    are; `before` places the profiled inference among the samples of earlier runs."""
    lines = parse_bench_lines(PROFILED)
    profile = lines_op_profile(
        lines, lambda ticks: 2 * ticks, ms_per_tick=0.5, ticks_are="instructions", before=3
    )
    assert profile is not None and profile.inference == 3 + 2 and profile.ticks == 2 * 5009
    assert profile.ticks_are == "instructions"  # said in the profile, for --json readers and the table
    assert [(op.index, op.op, op.ticks, op.ms) for op in profile.ops] == [
        (0, "CONV_2D", 6000, 3000.0),
        (1, "DEPTHWISE_CONV_2D", 3000, 1500.0),
        (2, "CONV_2D", 800, 400.0),
        (3, "SOFTMAX", 120, 60.0),
    ]
    assert profile.source.endswith(f"read from {lines.source}: instructions per op")
    assert lines_op_profile(parse_bench_lines(OUTPUT), int, 1.0, "cycles") is None  # no profiler built in
