"""`edgeport bench --on serial:PORT`: a real board running the packaged firmware, read over its serial port.

The firmware (firmware/project/main.cc) runs its self-test and then its timed inferences once per boot,
printing the lines targets/cortex_m/bench_lines.py parses. Opening the port pulses DTR, which restarts the
boards that wire it to reset; on the others the user presses reset (or the run already in the port's
buffer is read). Times are the board's own cycle counter (DWT, else SysTick) on its clock: a measurement,
not an estimate. The firmware fixes its warm-up and run counts when it is built (`edgeport flash
--bench-warmup W --bench-runs N`) and prints them: without --runs the bench times every run the firmware
printed, --runs may ask for fewer but not more, and a --warmup other than the firmware's is refused.

`--profile` reads the per-op times of a firmware flashed with `edgeport flash --bench-profile`
(TFLite Micro's MicroProfiler on the same cycle counter, so each op's ticks are the board's cycles, in ms
on the clock the firmware states); a firmware built without it is refused with the command that adds it.
"""

from __future__ import annotations

import contextlib
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from edgeport.bench.runner import BenchModel, RunnerOptions, SessionExtras, cli_words
from edgeport.bench.schema import BenchSettings, DeviceInfo, Memory, TimeKind
from edgeport.errors import EdgeportError
from edgeport.options import Spell
from edgeport.targets.cortex_m.bench_lines import BenchLineParser, BenchLines, lines_op_profile
from edgeport.targets.cortex_m.flash import packaged_board
from edgeport.targets.cortex_m.model_data import crc32_of

if TYPE_CHECKING:
    import serial

READ_TIMEOUT_S = 0.25  # one readline's wait: how often the overall deadline is checked
RESET_PULSE_S = 0.1
MAX_LINE = 1024  # bytes without a newline (noise at a wrong speed) are dropped as one line
_CRC_LINE = re.compile(r"model: \d+ bytes, crc32 0x([0-9a-fA-F]{1,8})\b")  # the self-test's model check


def _serial_module():
    try:
        import serial
    except ImportError as exc:  # a dependency, but a partial install can lack it
        raise EdgeportError("pyserial is not installed", "install it: pip install pyserial") from exc
    return serial


def _open_port(port: str, baud: int) -> serial.Serial:
    serial = _serial_module()
    try:
        return serial.Serial(port, baudrate=baud, timeout=READ_TIMEOUT_S)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise EdgeportError(
            f"cannot open serial port {port}: {_reason(exc)}",
            "check the port name (ls /dev/ttyACM* /dev/ttyUSB*) and that you may use it (group dialout)",
        ) from exc


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:160] if lines else type(exc).__name__


def _pulse_reset(port: serial.Serial) -> None:
    """DTR low then high: a reset on boards that wire DTR to it, nothing on the others."""
    try:
        port.dtr = False
        time.sleep(RESET_PULSE_S)
        port.dtr = True
    except OSError:
        pass  # a port without modem lines (a pseudo-terminal, some USB bridges)


class FirmwareWatch:
    """The lines besides the timing ones that decide a run: the self-test's model check and FAIL lines."""

    def __init__(self, expected_crc: int | None) -> None:
        self.expected_crc = expected_crc
        self.bytes = 0

    def feed(self, line: str, port: str) -> None:
        text = line.strip()
        if text.startswith("FAIL"):
            raise EdgeportError(
                f"the firmware on {port} failed its self-test: {text}",
                "check the package with `edgeport flash --probe qemu`, then flash it again",
            )
        crc = _CRC_LINE.match(text)
        if crc and self.expected_crc is not None:
            if int(crc.group(1), 16) != self.expected_crc:
                raise EdgeportError(
                    f"the board on {port} runs another model ({text}), not this one "
                    f"(crc32 0x{self.expected_crc:08x})",
                    "flash this model's package first: edgeport flash PACKAGE_DIR",
                )


def read_run(
    port: serial.Serial,
    name: str,
    baud: int,
    timeout_s: float,
    expected_crc: int | None,
    spell: Spell = cli_words,
) -> BenchLines:
    """Read the port until the firmware's `edgeport bench: done`, or fail in one line at the deadline
    (naming options as `spell` writes them)."""
    parser = BenchLineParser()
    watch = FirmwareWatch(expected_crc)
    deadline = time.monotonic() + timeout_s
    pending = b""
    while not parser.done:
        # Checked on every line too: a port that never stops talking must not keep us forever.
        if time.monotonic() >= deadline:
            raise timeout_error(parser, watch.bytes, name, baud, timeout_s, spell)
        try:
            chunk = port.readline()
        except OSError as exc:  # serial.SerialException is one: the device went away
            raise EdgeportError(
                f"serial port {name} failed while reading: {_reason(exc)}", "reconnect the board"
            ) from exc
        watch.bytes += len(chunk)
        pending += chunk
        if pending.endswith(b"\n") or len(pending) > MAX_LINE:
            line = pending.decode("utf-8", errors="replace")
            pending = b""
            watch.feed(line, name)
            parser.feed(line)
    return parser.result()


def timeout_error(
    parser: BenchLineParser,
    received: int,
    port: str,
    baud: int,
    timeout_s: float,
    spell: Spell = cli_words,
) -> EdgeportError:
    """Why nothing usable came in time: silence, bytes that never formed our lines, or a run cut short."""
    if parser.started:
        return EdgeportError(
            f"the firmware on {port} printed {parser.measured} timed inferences but no "
            f"'edgeport bench: done' within {timeout_s:g} s",
            "if the board reset or hung, reset it and run again; for a slow model raise "
            f"{spell('timeout_s')}",
        )
    if received:
        return EdgeportError(
            f"{port} sent {received} bytes but no 'edgeport bench:' timing line in {timeout_s:g} s",
            f"check that {spell('baud')} ({baud}) is the firmware's UART speed and that the flashed firmware "
            "is an edgeport package built by this version (edgeport package, then edgeport flash)",
        )
    return EdgeportError(
        f"no output from {port} in {timeout_s:g} s",
        f"check the port ({spell('runner')} serial:PORT), that the packaged firmware is flashed (edgeport "
        f"flash), the speed ({spell('baud')}, now {baud}), then reset the board",
    )


def reflash(package_dir: Path | None, flags: str) -> str:
    """The command that rebuilds and flashes the package with other bench counts."""
    board = "BOARD"
    if package_dir is not None:
        with contextlib.suppress(EdgeportError):
            board = packaged_board(package_dir)
    return f"edgeport flash {package_dir or 'PACKAGE_DIR'} --board {board} {flags}"


def check_warmup(
    lines: BenchLines,
    settings: BenchSettings,
    port: str,
    package_dir: Path | None,
    spell: Spell = cli_words,
) -> None:
    """A warmup the firmware was not built with cannot be honoured: refused rather than ignored."""
    if "warmup" in settings.model_fields_set and settings.warmup != lines.warmup:
        raise EdgeportError(
            f"{spell('warmup')} {settings.warmup}: the firmware on {port} warms up with {lines.warmup} "
            "inferences (fixed when it was built)",
            f"leave out {spell('warmup')}, or rebuild and flash it: "
            f"{reflash(package_dir, f'--bench-warmup {settings.warmup}')}",
        )


def check_profile(
    lines: BenchLines,
    settings: BenchSettings,
    port: str,
    package_dir: Path | None,
    spell: Spell = cli_words,
) -> None:
    """--profile needs a firmware built with the profiler: refused rather than reported empty."""
    if settings.profile and lines.profile is None:
        raise EdgeportError(
            f"{spell('profile')}: the firmware on {port} printed no op profile (built without the profiler)",
            f"leave out {spell('profile')}, or rebuild and flash it with the profiler: "
            f"{reflash(package_dir, '--bench-profile')}",
        )


class SerialSession:
    """One boot of the board: the firmware's whole run, read when the session opens."""

    def __init__(
        self,
        lines: BenchLines,
        port: str,
        package_dir: Path | None = None,
        spell: Spell = cli_words,
        profile: bool = False,
    ) -> None:
        self.lines = lines
        self.profile = profile  # --profile: report the op profile the firmware printed
        self.port = port
        self.package_dir = package_dir
        self.spell = spell
        # The harness times these when --runs is not given, and reports this warmup.
        self.fixed_runs = lines.runs
        self.fixed_warmup = lines.warmup
        self.init_ms: float | None = None  # the model is in flash: nothing is loaded at run time
        first = lines.first_cycles
        # The self-test's inference: the first after boot, before the warm-up.
        self.first_ms = first * 1000.0 / lines.clock_hz if first is not None else None
        self.used = 0

    def run(self, count: int) -> list[float]:
        available = self.lines.runs - self.used
        if count > available:
            runs = self.spell("runs")
            raise EdgeportError(
                f"the firmware on {self.port} times {self.lines.runs} inferences a boot, {count} were asked",
                f"leave out {runs} (or pass {runs} {self.lines.runs}), or rebuild and flash it for {count}: "
                f"{reflash(self.package_dir, f'--bench-runs {count}')}",
            )
        profiled = self.lines.profile_inference
        if self.profile and profiled is not None and profiled >= self.used + count:
            runs = self.spell("runs")
            raise EdgeportError(
                f"{self.spell('profile')}: the firmware on {self.port} profiles timed inference "
                f"{profiled + 1} of {self.lines.runs}, which {runs} {count} leaves out",
                f"leave out {runs} (or pass {runs} {self.lines.runs})",
            )
        times = self.lines.milliseconds()[self.used : self.used + count]
        self.used += count
        return times

    def finish(self) -> SessionExtras:
        lines = self.lines
        notes = [
            f"device-timer: the board's {lines.source} cycle counter at {lines.clock_hz / 1e6:g} MHz, "
            f"{lines.warmup} warm-up and {lines.runs} timed inferences per boot (fixed when the firmware "
            "was built); ticks are those cycle counts"
        ]
        if self.used < lines.runs:
            notes.append(f"the first {self.used} of the {lines.runs} timed inferences are reported")
        # The firmware's counter counts at the clock it states (the header's clock_hz), ops included.
        profile = (
            lines_op_profile(lines, lambda ticks: ticks, 1000.0 / lines.clock_hz, ticks_are="cycles")
            if self.profile
            else None
        )
        if profile is not None:
            notes.append(
                f"profile: {profile.source}; 'outside ops' is the interpreter's loop and the profiler; "
                "times include the profiler, which also takes about 80 KB of .bss (its 4096 event slots)"
            )
        elif lines.profile is not None:
            notes.append(
                "the firmware was built with the per-op profiler (edgeport flash --bench-profile): its times "
                f"include the profiler's work; {self.spell('profile')} reports it"
            )
        memory = Memory(arena_bytes=lines.arena_used, stack_bytes=lines.stack_bytes)
        return SessionExtras(
            memory=memory, ticks=list(lines.cycles[: self.used]), notes=notes, profile=profile
        )

    def close(self) -> None:
        pass  # the port is closed once the run is read


class SerialRunner:
    time_kind: TimeKind = "device-timer"
    interleaves = False  # one firmware run per boot, one model per firmware
    # Threads, the XNNPACK switch and delegates are LiteRT's; the firmware has none of them.
    uses = ("profile",)

    def __init__(self, port: str, options: RunnerOptions, spell: Spell = cli_words) -> None:
        self.port = port
        self.baud = options.baud
        self.spell = spell
        self.name = f"serial:{port}"

    def device(self) -> DeviceInfo:
        return DeviceInfo(
            kind="board", description=f"board on {self.port} ({self.baud} baud)", serial=self.port
        )

    def check(self, model: BenchModel) -> None:
        if not model.tflite.is_file():
            raise EdgeportError(f"{model.tflite} does not exist", "pass the package directory you flashed")
        _serial_module()

    def open(self, model: BenchModel, settings: BenchSettings) -> SerialSession:
        port = _open_port(self.port, self.baud)
        try:
            _pulse_reset(port)
            crc = crc32_of(Path(model.tflite))
            lines = read_run(port, self.port, self.baud, settings.timeout_s, crc, self.spell)
        finally:
            port.close()
        check_warmup(lines, settings, self.port, model.package_dir, self.spell)
        check_profile(lines, settings, self.port, model.package_dir, self.spell)
        return SerialSession(lines, self.port, model.package_dir, self.spell, profile=settings.profile)


def make_runner(arg: str | None, options: RunnerOptions, spell: Spell = cli_words) -> SerialRunner:
    if not arg:
        on = spell("runner")
        raise EdgeportError(
            f"{on} serial needs a PORT", f"write {on} serial:PORT, e.g. {on} serial:/dev/ttyACM0"
        )
    return SerialRunner(arg, options, spell)
