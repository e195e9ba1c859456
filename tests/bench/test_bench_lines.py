"""The one parser of the firmware's timing lines (targets/cortex_m/bench_lines.py)."""

from __future__ import annotations

import pytest

from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m.bench_lines import BenchLineParser, BenchLinesError, parse_bench_lines

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
