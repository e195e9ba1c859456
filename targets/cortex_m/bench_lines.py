"""The firmware's timing lines (firmware/project/main.cc prints them) and the one parser of them.

After its self-test the firmware runs `warmup` untimed and `runs` timed inferences and prints:

    edgeport bench: warmup=<W> runs=<N> clock_hz=<HZ> source=<DWT|SysTick>
    inference <i>: <cycles> cycles          (i = 0 .. N-1)
    edgeport profile: inference <i>         (a BENCH_PROFILE=1 build: the last timed inference, op by op)
    "Event","Tag","Ticks"                    (TFLite Micro's MicroProfiler::LogCsv: one line per op run,
    <event>,<op name>,<ticks>                 in the order the interpreter ran them)
    edgeport profile: end
    stack: <bytes> bytes used               (when the firmware can measure its stack)
    edgeport bench: done

and, before them, `arena: <used> of <size> bytes used` and the self-test's first inference,
`latency: <cycles> cycles (<source>), ...`. Other lines (the self-test, TFLite Micro's
messages) pass through. The QEMU and serial runners both read the stream with `BenchLineParser` (a
header seen again starts over: a board that reset while the port was open) and turn a profile into the
report's OpProfile with `lines_op_profile`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from edgeport.bench.profile import op_profile
from edgeport.bench.schema import OpProfile, TicksAre
from edgeport.errors import EdgeportError

HEADER_PREFIX = "edgeport bench:"
_HEADER = re.compile(r"edgeport bench: warmup=(\d+) runs=(\d+) clock_hz=(\d+) source=(\S+)")
_DONE = "edgeport bench: done"
_INFERENCE = re.compile(r"inference (\d+): (\d+) cycles")
_STACK = re.compile(r"stack: (\d+) bytes used")
_ARENA = re.compile(r"arena: (\d+) of (\d+) bytes used")
_FIRST = re.compile(r"latency: (\d+) cycles\b.*")  # the self-test's inference, before the warmup
_PROFILE = re.compile(r"edgeport profile: inference (\d+)")
_PROFILE_END = "edgeport profile: end"
_CSV_HEADER = '"Event","Tag","Ticks"'
_CSV_EVENT = re.compile(r"(\d+),([^,]+),(-?\d+)")
# Lines that must match one of the patterns above once they start like this.
_OURS = (HEADER_PREFIX, "inference ", "stack:", "arena:", "latency:", "edgeport profile:")

_GARBLED = (
    "the output was cut or mixed with other output (on a serial port: check its speed and that nothing else "
    "reads it); run again"
)
_REBUILD = "rebuild the firmware with this version of edgeport (edgeport package), whose main.cc prints them"


class BenchLinesError(EdgeportError):
    """The timing lines are missing, cut short or garbled."""


@dataclass(frozen=True)
class ProfileEvent:
    """One MicroProfiler event: an op the interpreter ran, timed on the firmware's cycle counter."""

    index: int  # the event's number: the op's index in the graph (one subgraph, no nested events)
    op: str  # TFLite Micro's name of the op ("CONV_2D"), or a custom op's name
    ticks: int  # counts of the firmware's cycle counter (the `source` of the header)


def parse_profile_csv(lines: Iterable[str]) -> tuple[ProfileEvent, ...]:
    """MicroProfiler::LogCsv's lines (its header, then `event,tag,ticks`; blank lines skipped) -> events."""
    rows = [line.strip() for line in lines if line.strip()]
    if not rows or rows[0] != _CSV_HEADER:
        raise BenchLinesError(
            f"the firmware's op profile does not start with {_CSV_HEADER} "
            f"(got {rows[0][:80] if rows else 'nothing'!r})",
            _GARBLED,
        )
    events = []
    for row in rows[1:]:
        match = _CSV_EVENT.fullmatch(row)
        if match is None or int(match.group(1)) != len(events) or int(match.group(3)) < 0:
            raise BenchLinesError(f"garbled op profile line {row[:80]!r}", _GARBLED)
        events.append(ProfileEvent(len(events), match.group(2), int(match.group(3))))
    if not events:
        raise BenchLinesError("the firmware's op profile has no events", _GARBLED)
    return tuple(events)


@dataclass(frozen=True)
class BenchLines:
    """What the firmware printed about one benchmark run."""

    warmup: int
    runs: int
    clock_hz: int
    source: str  # the cycle counter: "DWT" (the core's cycle counter) or "SysTick"
    cycles: tuple[int, ...]  # per timed inference, in order
    stack_bytes: int | None  # stack high-water mark, None when the firmware did not measure it
    arena_used: int | None
    arena_size: int | None
    done: bool
    first_cycles: int | None = None  # the self-test's inference: the first after boot
    profile: tuple[ProfileEvent, ...] | None = None  # a BENCH_PROFILE=1 build's op events
    profile_inference: int | None = None  # the timed inference they belong to

    def milliseconds(self) -> list[float]:
        """Each inference's counts on the board's clock, in ms."""
        return [c * 1000.0 / self.clock_hz for c in self.cycles]


class BenchLineParser:
    """Feed the firmware's output line by line; `result()` once `done` (or when the stream ended)."""

    def __init__(self) -> None:
        self._header: tuple[int, int, int, str] | None = None
        self._cycles: list[int] = []
        self._stack: int | None = None
        self._arena: tuple[int, int] | None = None
        self._first: int | None = None
        self._profile: tuple[int, tuple[ProfileEvent, ...]] | None = None
        self._profile_lines: list[str] | None = None  # inside an `edgeport profile:` block
        self._profile_of = -1
        self.done = False

    def feed(self, line: str) -> None:
        text = line.strip()
        if self._profile_lines is not None and text != _PROFILE_END and not _HEADER.fullmatch(text):
            if text:
                self._profile_lines.append(text)
            return
        if not text.startswith(_OURS):
            return
        if text == _DONE:
            self._finish()
            return
        if match := _HEADER.fullmatch(text):
            warmup, runs, clock_hz, source = match.groups()
            if int(clock_hz) <= 0:
                raise BenchLinesError(f"firmware timing header says clock_hz={clock_hz}", _REBUILD)
            self._header = (int(warmup), int(runs), int(clock_hz), source)
            self._cycles, self._stack, self.done = [], None, False
            self._profile, self._profile_lines = None, None
        elif match := _PROFILE.fullmatch(text):
            self._profile_lines, self._profile_of = [], int(match.group(1))
        elif text == _PROFILE_END:
            if self._profile_lines is None:
                raise BenchLinesError(f"{_PROFILE_END!r} without its start line", _GARBLED)
            events = parse_profile_csv(self._profile_lines)
            self._profile, self._profile_lines = (self._profile_of, events), None
        elif match := _INFERENCE.fullmatch(text):
            self._inference(int(match.group(1)), int(match.group(2)))
        elif match := _STACK.fullmatch(text):
            self._stack = int(match.group(1))
        elif match := _ARENA.fullmatch(text):
            self._arena = (int(match.group(1)), int(match.group(2)))
        elif match := _FIRST.fullmatch(text):
            self._first = int(match.group(1))
        elif not text.startswith("inference ") or self._header is not None:
            raise BenchLinesError(f"garbled firmware timing line {text[:80]!r}", _GARBLED)
        # An inference line before any header: joined a serial stream mid-run; wait for the next header.

    def _inference(self, index: int, cycles: int) -> None:
        if self._header is None:
            return
        if index != len(self._cycles):
            raise BenchLinesError(
                f"firmware printed inference {index} where inference {len(self._cycles)} was due "
                "(timing lines were lost)",
                _GARBLED,
            )
        self._cycles.append(cycles)

    def _finish(self) -> None:
        if self._header is None:
            raise BenchLinesError("firmware printed 'edgeport bench: done' without its header line", _REBUILD)
        runs = self._header[1]
        if len(self._cycles) != runs:
            raise BenchLinesError(
                f"firmware printed {len(self._cycles)} inference lines but announced runs={runs}",
                _GARBLED,
            )
        self.done = True

    @property
    def started(self) -> bool:
        return self._header is not None

    @property
    def measured(self) -> int:
        """Timed inferences read so far."""
        return len(self._cycles)

    def result(self) -> BenchLines:
        """The run as printed; a stream that ended before `edgeport bench: done` is an error."""
        if self._header is None:
            raise BenchLinesError("the firmware printed no 'edgeport bench:' timing lines", _REBUILD)
        warmup, runs, clock_hz, source = self._header
        if self._profile_lines is not None:
            raise BenchLinesError(
                f"the firmware's op profile stopped after {len(self._profile_lines)} lines, "
                f"without {_PROFILE_END!r}",
                "it crashed, reset or ran out of time: see what it printed before, or raise the time limit",
            )
        if not self.done:
            raise BenchLinesError(
                f"the firmware's timing output stopped after {len(self._cycles)} of {runs} inferences",
                "it crashed, reset or ran out of time: see what it printed before, or raise the time limit",
            )
        arena_used, arena_size = self._arena if self._arena else (None, None)
        profile_inference, profile = self._profile if self._profile else (None, None)
        if profile_inference is not None and not 0 <= profile_inference < runs:
            raise BenchLinesError(
                f"the firmware profiled inference {profile_inference} of {runs} timed ones", _REBUILD
            )
        return BenchLines(
            warmup=warmup,
            runs=runs,
            clock_hz=clock_hz,
            source=source,
            cycles=tuple(self._cycles),
            stack_bytes=self._stack,
            arena_used=arena_used,
            arena_size=arena_size,
            done=True,
            first_cycles=self._first,
            profile=profile,
            profile_inference=profile_inference,
        )


def parse_bench_lines(output: str | Iterable[str]) -> BenchLines:
    """Parse a whole captured output (a string, or its lines)."""
    parser = BenchLineParser()
    for line in output.splitlines() if isinstance(output, str) else output:
        parser.feed(line)
    return parser.result()


def lines_op_profile(
    lines: BenchLines,
    ticks: Callable[[int], int],
    ms_per_tick: float,
    ticks_are: TicksAre,
    before: int = 0,
) -> OpProfile | None:
    """The inference a BENCH_PROFILE=1 firmware profiled, op by op (None when it printed no profile):
    every count of the firmware's counter (its ops' and that inference's) through `ticks` into the unit of
    BenchResult.ticks (`ticks_are`, recorded in the profile), at `ms_per_tick` on the board's clock; `before`
    is how many timed inferences the report lists ahead of these lines' first (earlier runs of the model)."""
    if lines.profile is None or lines.profile_inference is None:
        return None
    return op_profile(
        [(event.index, event.op, ticks(event.ticks)) for event in lines.profile],
        inference=before + lines.profile_inference,
        inference_ticks=ticks(lines.cycles[lines.profile_inference]),
        ms_per_tick=ms_per_tick,
        ticks_are=ticks_are,
        source="TFLite Micro's MicroProfiler around each op of the last timed inference, read from "
        f"{lines.source}: {ticks_are} per op",
    )
