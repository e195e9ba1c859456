"""`edgeport bench --on qemu:BOARD`: the packaged self-test firmware, built against TFLite Micro and run
under `qemu-system-arm -icount` on the board's QEMU machine, timing warmup + N inferences.

What the numbers are: under -icount QEMU advances virtual time by 2^shift ns per instruction executed,
and the firmware reads SysTick, which counts the board clock in that virtual time. So each count is an
instruction count in disguise; `ticks` holds the instructions per inference recovered from it, and the
times are those instructions at one per cycle on the board's clock: an estimate. QEMU models no
pipeline, cache, flash wait states or memory latency, so a real core needs more cycles than this
(or fewer where it dual-issues, as the Cortex-M7 can).

`--profile` builds the firmware with TFLite Micro's MicroProfiler on the interpreter (BENCH_PROFILE=1): it
times each op of the last timed inference on the same SysTick count (TFLM's own tick source reads the DWT
cycle counter, which QEMU does not emulate: it stays 0), so each op's ticks are instructions as well.

Every model is packaged afresh for the board (an `edgeport package` directory's firmware may be for
another board); `timeout_s` limits each QEMU run, not the build (TFLite Micro's library, built once
per tree and core, takes many minutes).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgeport.bench.runner import BenchModel, RunnerOptions, SessionExtras, cli_words
from edgeport.bench.schema import BenchSettings, Delegation, DeviceInfo, Memory, OpProfile, TimeKind
from edgeport.errors import EdgeportError
from edgeport.manifest import sha256_of
from edgeport.options import Spell
from edgeport.runtimes import qemu
from edgeport.targets.cortex_m.bench_lines import BenchLines, lines_op_profile, parse_bench_lines
from edgeport.targets.cortex_m.boards import BOARDS, Board, get_board
from edgeport.targets.cortex_m.flash import (
    INSTALL_HINTS,
    KERNELS,
    TFLM_MAKEFILE,
    build_firmware,
    check_tflm_tree,
    qemu_icount_shift,
    tflm_root_or_env,
)
from edgeport.tempdirs import make_tempdir, remove_tempdir

TOOLS = ("make", "arm-none-eabi-gcc", "qemu-system-arm")


def qemu_boards() -> list[Board]:
    return [board for board in BOARDS if board.qemu_machine]


def qemu_board(name: str, spell: Spell = cli_words) -> Board:
    """The board `qemu:NAME` names; a board without a QEMU machine lists the ones that have one."""
    fix = f"use {spell('runner')} qemu:BOARD with one of: " + _qemu_names()
    try:
        board = get_board(name)
    except EdgeportError as exc:
        raise EdgeportError(exc.problem, fix) from None
    if not board.qemu_machine:
        raise EdgeportError(f"board {board.name} has no QEMU machine", fix)
    return board


def _qemu_names() -> str:
    return ", ".join(b.name for b in qemu_boards())


def tflm_tree(root: Path | str | None, spell: Spell = cli_words) -> Path:
    """The TFLite Micro tree the firmware builds against (--tflm-root, else $TFLM_ROOT)."""
    return check_tflm_tree(tflm_root_or_env(root), spell)


def tree_from_archive(archive: Path, cache: Path | None = None) -> Path:
    """A TFLite Micro tree from an offline source archive (one `tflite-micro/` folder), extracted once into
    CACHE/edgeport-tflm-<sha256 prefix> (default: the system's temp dir) and reused, with the libraries
    built in its gen/. Extracted beside it and renamed into place, so a reader never sees half a tree."""
    final = Path(cache or tempfile.gettempdir()) / f"edgeport-tflm-{sha256_of(archive)[:12]}"
    tree = final / "tflite-micro"
    if not (tree / TFLM_MAKEFILE).is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=final.parent))
        try:
            with tarfile.open(archive) as bundle:
                extras = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                bundle.extractall(staging, **extras)
            if not (staging / "tflite-micro" / TFLM_MAKEFILE).is_file():
                raise EdgeportError(f"{archive} holds no tflite-micro/ tree", "give the offline TFLM bundle")
            staging.chmod(0o755)
            try:
                staging.rename(final)
            except OSError:  # another process put it there first
                if not (tree / TFLM_MAKEFILE).is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return tree


def instructions(ticks: int, clock_hz: int, icount_shift: int) -> int:
    """Instructions executed while SysTick counted `ticks` at `clock_hz` under `-icount shift=N`."""
    return round(ticks * 1e9 / (clock_hz * 2**icount_shift))


@dataclass(frozen=True)
class ElfSizes:
    """`size` (Berkeley): text is everything read-only (code, constants, the model), data the initialized
    variables (stored in flash, copied to RAM), bss the zeroed ones (the tensor arena)."""

    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        return self.text + self.data


def parse_size(output: str) -> ElfSizes:
    """The numbers of `arm-none-eabi-size FILE` (`text data bss dec hex filename`)."""
    lines = output.strip().splitlines()
    if len(lines) < 2 or lines[0].split()[:3] != ["text", "data", "bss"]:
        raise EdgeportError(f"unexpected output of arm-none-eabi-size: {output.strip()[:80]!r}", "report it")
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return ElfSizes(text, data, bss)


def elf_sizes(elf: Path) -> ElfSizes:
    done = subprocess.run(["arm-none-eabi-size", str(elf)], capture_output=True, text=True, check=True)
    return parse_size(done.stdout)


def run_error(
    run: qemu.QemuRun, name: str, board: Board, timeout: float, spell: Spell = cli_words
) -> EdgeportError | None:
    """Why a firmware run gave no timings (it hung, crashed or failed its self-test), or None; options
    named as `spell` writes them."""
    where = f"{name} on qemu {board.qemu_machine}"
    if run.timed_out:
        done = sum(1 for line in run.lines if line.startswith("inference "))
        return EdgeportError(
            f"{where}: the firmware did not finish within {timeout:g} s ({done} timed inferences printed)",
            f"raise {spell('timeout_s')} or lower {spell('runs')}; a firmware that prints nothing has hung",
        )
    if run.exit_status != 0:
        fails = [line.strip() for line in run.lines if line.startswith("FAIL")]
        said = fails[-1] if fails else (run.lines[-1].strip() if run.lines else run.stderr.strip()[:200])
        return EdgeportError(
            f"{where}: the firmware stopped with status {run.exit_status}: {said or 'no output'}",
            "check the model with `edgeport package` and its self-test (`edgeport flash --probe qemu`)",
        )
    return None


class QemuSession:
    """One model: packaged and built when opened; each `run(count)` is one firmware run in QEMU."""

    def __init__(self, runner: QemuRunner, model: BenchModel, settings: BenchSettings) -> None:
        self.runner = runner
        self.model = model
        self.settings = settings
        self.init_ms: float | None = None  # the firmware loads nothing at run time: no init to time
        self.first_ms: float | None = None
        self.lines: list[BenchLines] = []
        self.workdir = make_tempdir("bench-qemu")
        self.firmware: Path | None = None
        self.elf: Path | None = None
        self.built_runs = -1

    def open(self) -> None:
        from edgeport.targets.cortex_m import package

        board = self.runner.board
        result = package(self.model.tflite, self.workdir / "package", board=board.name)
        self.firmware = result.outdir / "firmware"
        self._build(self.settings.runs)

    def _build(self, runs: int) -> None:
        assert self.firmware is not None
        self.elf = build_firmware(
            self.firmware, self.runner.tree, self.settings.warmup, runs, profile=self.settings.profile
        )
        self.built_runs = runs

    def run(self, count: int) -> list[float]:
        if count != self.built_runs:
            self._build(count)  # only main.cc is compiled again
        board, shift = self.runner.board, self.runner.icount_shift
        timeout = self.settings.timeout_s
        assert self.elf is not None
        done = qemu.run_firmware(self.elf, board.qemu_machine, shift, timeout=timeout)
        error = run_error(done, self.model.info.name, board, timeout, self.runner.spell)
        if error is not None:
            raise error
        lines = parse_bench_lines(done.lines)
        self.lines.append(lines)
        if self.first_ms is None and lines.first_cycles is not None:
            self.first_ms = self.runner.milliseconds(lines.first_cycles, lines.clock_hz)
        return [self.runner.milliseconds(c, lines.clock_hz) for c in lines.cycles]

    def finish(self) -> SessionExtras:
        board, shift = self.runner.board, self.runner.icount_shift
        ticks = [instructions(c, lines.clock_hz, shift) for lines in self.lines for c in lines.cycles]
        last = self.lines[-1] if self.lines else None
        stack = last.stack_bytes if last else None
        sizes = elf_sizes(self.elf) if self.elf else None
        memory = Memory(
            arena_bytes=last.arena_used if last else None,
            flash_bytes=sizes.flash if sizes else None,
            ram_bytes=sizes.data + sizes.bss + (stack or 0) if sizes else None,
            stack_bytes=stack,
        )
        notes = [
            f"instruction-estimate: ticks are instructions per inference (QEMU -icount shift={shift}: "
            f"one instruction = {2**shift} ns of virtual time, read from SysTick at {board.clock_hz} Hz); "
            f"times are those instructions at one per cycle on the board's {board.clock_hz / 1e6:g} MHz "
            "clock. QEMU models no pipeline, caches, flash wait states or memory latency: not cycles",
            f"ram = .data + .bss (with the {last.arena_size if last else '?'}-byte arena) + stack high-water "
            "mark; flash = text (code, constants, the model) + .data's load image",
        ]
        profile = self._profile() if self.settings.profile else None
        if profile is not None:
            notes.append(
                f"profile: {profile.source}; 'outside ops' is the interpreter's loop and the profiler; "
                "ram and times include the profiler (its 4096 event slots, about 80 KB of .bss)"
            )
        return SessionExtras(
            memory=memory,
            delegation=Delegation(delegate=KERNELS.replace("_", "-")),
            ticks=ticks,
            notes=notes,
            profile=profile,
        )

    def _profile(self) -> OpProfile:
        """The profiled inference (the last one timed) op by op, in instructions like `ticks`."""
        profile = None
        if self.lines:
            last, shift = self.lines[-1], self.runner.icount_shift
            clock_hz = last.clock_hz
            profile = lines_op_profile(
                last,
                lambda ticks: instructions(ticks, clock_hz, shift),
                ms_per_tick=1000.0 / self.runner.board.clock_hz,  # instructions at one per board cycle
                ticks_are="instructions",
                before=sum(len(lines.cycles) for lines in self.lines[:-1]),
            )
        if profile is None:
            raise EdgeportError(
                f"{self.model.info.name}: the firmware printed no op profile",
                "report this as an edgeport bug (its main.cc prints one when built with BENCH_PROFILE=1)",
            )
        return profile

    def close(self) -> None:
        remove_tempdir(self.workdir)


class QemuRunner:
    time_kind: TimeKind = "instruction-estimate"
    interleaves = False  # one firmware run per model
    # Threads, the XNNPACK switch and delegates are LiteRT's; the firmware has none of them.
    uses = ("profile",)

    def __init__(self, board: Board, tree: Path, spell: Spell = cli_words) -> None:
        self.board = board
        self.tree = tree
        self.spell = spell  # names options in the errors of its runs
        self.name = f"qemu:{board.name}"
        self.icount_shift = qemu_icount_shift(board)

    def milliseconds(self, ticks: int, clock_hz: int) -> float:
        """SysTick counts -> the estimated time: the instructions they stand for, one per board cycle."""
        return instructions(ticks, clock_hz, self.icount_shift) * 1000.0 / self.board.clock_hz

    def device(self) -> DeviceInfo:
        return DeviceInfo(
            kind="qemu",
            description=self.board.title,
            cpu=self.board.core,
            clock_hz=self.board.clock_hz,
        )

    def check(self, model: BenchModel) -> None:
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise EdgeportError(
                f"qemu runner: {missing[0]} is not installed", f"install it: {INSTALL_HINTS[missing[0]]}"
            )
        from edgeport.targets.cortex_m.op_resolver import check_ops
        from edgeport.tflite_file import read_tflite

        check_ops(read_tflite(model.tflite))  # an op without a TFLite Micro kernel, before any build

    def open(self, model: BenchModel, settings: BenchSettings) -> QemuSession:
        session = QemuSession(self, model, settings)
        try:
            session.open()
        except BaseException:
            session.close()
            raise
        return session

    def tools(self) -> dict[str, str]:
        versions = {}
        for tool in ("qemu-system-arm", "arm-none-eabi-gcc"):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=30).stdout
                versions[tool] = out.splitlines()[0].strip() if out else "?"
        versions["tflite-micro"] = f"{self.tree} ({KERNELS} kernels)"
        return versions


def make_runner(arg: str | None, options: RunnerOptions, spell: Spell = cli_words) -> QemuRunner:
    if not arg:
        on = spell("runner")
        raise EdgeportError(f"{on} qemu needs a BOARD", f"write {on} qemu:BOARD, e.g. {on} qemu:mps2-an386")
    board = qemu_board(arg, spell)
    return QemuRunner(board, tflm_tree(options.tflm_root, spell), spell)
