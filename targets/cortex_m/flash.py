"""Build the packaged firmware project and flash it: the exact commands per probe, and running them.

Every step is an argv list, so `--dry-run` prints exactly what would run. A tool that is not on
PATH stops the run before anything starts, with the package that provides it.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from edgeport.errors import EdgeportError
from edgeport.options import Options, Spell, cli, flag_spell
from edgeport.packaging import read_manifest
from edgeport.runtimes import qemu
from edgeport.runtimes.qemu import QemuRun
from edgeport.targets.cortex_m.boards import Board, get_board
from edgeport.targets.cortex_m.section import CortexMSection

PROBES = ("pyocd", "openocd", "probe-rs", "arduino-cli", "uf2", "qemu")
TFLM_MAKEFILE = "tensorflow/lite/micro/tools/make/Makefile"  # what makes a directory a TFLite Micro tree
TFLM_ROOT_PLACEHOLDER = "<TFLM_ROOT>"  # printed by a dry run given no tree, like <PORT>
KERNELS = "cmsis_nn"  # the firmware Makefile's default: what a deployed model runs


class FlashOptions(Options):
    """What `edgeport flash` is asked to do: its CLI flags are made from these fields (cli/flash.py)."""

    board: str = Field(description="The board OUTDIR was packaged for.", json_schema_extra=cli(required=True))
    probe: Literal[PROBES] | None = Field(  # type: ignore[valid-type]
        None, description="Flashing tool [default: the board's usual one]."
    )
    port: str | None = Field(None, description="Serial port, for arduino-cli.")
    tflm_root: str | None = Field(
        None,
        description="TFLite Micro checkout to build against [default: $TFLM_ROOT; a dry run needs none].",
    )
    dry_run: bool = Field(False, description="Print the exact commands instead of running them.")
    bench_warmup: int | None = Field(
        None,
        ge=0,
        description="Untimed inferences the firmware runs after its self-test "
        "[default: the firmware Makefile's BENCH_WARMUP].",
    )
    bench_runs: int | None = Field(
        None,
        ge=1,
        description="Timed inferences the firmware prints after the warmup, read by `edgeport bench --on "
        "serial` [default: the firmware Makefile's BENCH_RUNS].",
    )
    bench_profile: bool = Field(
        False,
        description="Build in TFLite Micro's per-op profiler (BENCH_PROFILE=1), read by `edgeport bench --on "
        "serial --profile`.",
    )


# Where each tool comes from, for the one-line "missing tool" error.
INSTALL_HINTS = {
    "make": "apt-get install make",
    "arm-none-eabi-gcc": "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
    "libstdc++-arm-none-eabi-newlib",
    "arm-none-eabi-objcopy": "apt-get install binutils-arm-none-eabi",
    "pyocd": "pip install pyocd",
    "openocd": "apt-get install openocd",
    "probe-rs": "cargo install probe-rs-tools --locked (or the installer at https://probe.rs)",
    "arduino-cli": "arduino-cli (https://arduino.github.io/arduino-cli/latest/installation/)",
    "picotool": "apt-get install picotool",
    "qemu-system-arm": "apt-get install qemu-system-arm",
}


@dataclass(frozen=True)
class Step:
    what: str
    argv: tuple[str, ...]

    def shell(self) -> str:
        return shlex.join(self.argv)


def qemu_icount_shift(board: Board) -> int:
    """QEMU's `-icount shift=N`: each instruction takes 2^N ns of virtual time, and SysTick counts the
    board clock in virtual time. N is the power of two nearest one clock period, so the cycle count the
    firmware prints is about the number of instructions executed (within 25%: QEMU is not cycle-accurate,
    and a real core needs at least that many cycles). With N=3 a 25 MHz board would report a fifth."""
    return max(0, round(math.log2(1e9 / board.clock_hz)))


def qemu_command(board: Board) -> tuple[str, ...]:
    """qemu-system-arm with the board's machine, serial on stdio and semihosting exit; add the ELF."""
    return qemu.command(board.qemu_machine, qemu_icount_shift(board))


def build_command(
    firmware: Path,
    tflm_root: str | Path,
    warmup: int | None = None,
    runs: int | None = None,
    kernels: str | None = None,
    jobs: int | None = None,
    profile: bool = False,
) -> tuple[str, ...]:
    """`make` of a packaged firmware project: what `edgeport flash` prints and runs and what the QEMU
    bench builds with. A count or kernel set left None is the firmware Makefile's default; `profile`
    builds in TFLite Micro's per-op profiler (BENCH_PROFILE=1)."""
    settings = {"KERNELS": kernels, "BENCH_WARMUP": warmup, "BENCH_RUNS": runs}
    settings["BENCH_PROFILE"] = 1 if profile else None
    return (
        "make",
        *([f"-j{jobs}"] if jobs else []),
        "-C",
        str(firmware),
        f"TFLM_ROOT={tflm_root}",
        *(f"{name}={value}" for name, value in settings.items() if value is not None),
    )


def first_error(output: str) -> str:
    """The first compiler/make error line of a build's output (else its last line)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if re.search(r"\berror\b|\*\*\*", line, re.I):
            return line[:200]
    return lines[-1][:200] if lines else "no output"


def build_firmware(
    firmware: Path,
    tree: str | Path,
    warmup: int | None = None,
    runs: int | None = None,
    kernels: str | None = KERNELS,
    profile: bool = False,
) -> Path:
    """`make` the packaged firmware project quietly (TFLite Micro's library first, once per tree and core)
    -> the ELF; a failed build is one line with its first error."""
    argv = build_command(firmware, tree, warmup, runs, kernels, jobs=os.cpu_count() or 1, profile=profile)
    done = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise EdgeportError(
            f"the firmware did not build: {first_error(done.stdout + done.stderr)}",
            f"run `make -C {firmware} TFLM_ROOT={tree}` to see the whole build",
        )
    return firmware / "build" / "firmware.elf"


def build_and_run_qemu(firmware: Path, board: Board, tflm_root: str | Path, timeout: float = 600) -> QemuRun:
    """Build a packaged firmware project against a TFLite Micro tree (the firmware's own bench counts) and
    run it in QEMU (at most `timeout` seconds): the firmware tests and the Cortex-M benchmark read the
    self-test's lines from it."""
    elf = build_firmware(firmware, tflm_root)
    return qemu.run_firmware(elf, board.qemu_machine, qemu_icount_shift(board), timeout)


def packaged_board(outdir: Path) -> str:
    manifest = read_manifest(
        outdir,
        "an `edgeport package` output",
        "run `edgeport package MODEL --target cortex-m -o OUTDIR` first",
    )
    section = CortexMSection.of(manifest, str(outdir))
    if not (outdir / section.firmware).is_dir():
        raise EdgeportError(
            f"{outdir} has no Cortex-M package", "run `edgeport package --target cortex-m` into it"
        )
    return section.board


def tflm_root_or_env(tflm_root: str | Path | None) -> str | None:
    """The TFLite Micro tree asked for: the option, else $TFLM_ROOT; None when neither is set."""
    return str(tflm_root) if tflm_root else os.environ.get("TFLM_ROOT")


def check_tflm_tree(root: str | None, spell: Spell | None = None) -> Path:
    """The TFLite Micro checkout a real build runs `make` in: refuse a missing one, or a directory that is
    not one (an empty directory would otherwise fail deep inside the firmware's Makefile). `spell` names
    the tflm_root option in the fix (the CLI flag by default)."""
    option = (spell or flag_spell(FlashOptions))("tflm_root")
    if not root:
        raise EdgeportError(
            "TFLite Micro sources are needed to build the firmware",
            f"clone https://github.com/tensorflow/tflite-micro and pass {option} DIR or set TFLM_ROOT",
        )
    tree = Path(root)
    if not (tree / TFLM_MAKEFILE).is_file():
        raise EdgeportError(
            f"{tree} is not a TFLite Micro checkout (no {TFLM_MAKEFILE})",
            f"pass {option} (or TFLM_ROOT) the top of a https://github.com/tensorflow/tflite-micro clone",
        )
    return tree


def plan(
    outdir: Path,
    board: Board,
    probe: str | None,
    port: str | None,
    tflm_root: str | None,
    build: bool = True,
    bench_warmup: int | None = None,
    bench_runs: int | None = None,
    bench_profile: bool = False,
) -> list[Step]:
    """The build and flash commands for OUTDIR on `board` with `probe` (default: the board's first); without
    a TFLite Micro tree the build command names it with a placeholder (a dry run needs none). The bench
    counts, when given, and the per-op profiler, when asked for, are built into the firmware."""
    probe = probe or board.probes[0]
    if probe not in board.probes:
        raise EdgeportError(
            f"probe {probe!r} is not supported for {board.title}",
            f"use one of: {', '.join(board.probes)}",
        )
    firmware = outdir / "firmware"
    elf = firmware / "build" / "firmware.elf"
    steps = []
    if build:
        root = tflm_root_or_env(tflm_root) or TFLM_ROOT_PLACEHOLDER
        command = build_command(firmware, root, bench_warmup, bench_runs, profile=bench_profile)
        steps.append(Step("build", command))
    if probe == "pyocd":
        steps.append(Step("flash", ("pyocd", "flash", "--target", board.pyocd_target, str(elf))))
    elif probe == "openocd":
        steps.append(
            Step("flash", ("openocd", *board.openocd_args, "-c", f"program {elf} verify reset exit"))
        )
    elif probe == "probe-rs":
        steps.append(Step("flash", ("probe-rs", "download", "--chip", board.probe_rs_chip, str(elf))))
        steps.append(Step("reset", ("probe-rs", "reset", "--chip", board.probe_rs_chip)))
    elif probe == "arduino-cli":
        binary = elf.with_suffix(".bin")
        steps.append(Step("convert", ("arm-none-eabi-objcopy", "-O", "binary", str(elf), str(binary))))
        steps.append(
            Step(
                "flash",
                (
                    "arduino-cli",
                    "upload",
                    "--fqbn",
                    board.arduino_fqbn,
                    "--port",
                    port or "<PORT>",
                    "--input-file",
                    str(binary),
                ),
            )
        )
    elif probe == "uf2":
        steps.append(Step("flash", ("picotool", "load", "-v", "-x", str(elf))))
    elif probe == "qemu":
        steps.append(Step("run", (*qemu_command(board), str(elf))))
    return steps


def check_tools(steps: list[Step]) -> None:
    needed = []
    for step in steps:
        needed.append(step.argv[0])
        if step.what == "build":
            needed.append("arm-none-eabi-gcc")
    for tool in dict.fromkeys(needed):
        if shutil.which(tool) is None:
            raise EdgeportError(f"{tool} is not installed", f"install it: {INSTALL_HINTS.get(tool, tool)}")


def flash(
    outdir: Path | str,
    board: str,
    probe: str | None = None,
    port: str | None = None,
    tflm_root: str | None = None,
    dry_run: bool = False,
    build: bool = True,
    bench_warmup: int | None = None,
    bench_runs: int | None = None,
    bench_profile: bool = False,
) -> list[Step]:
    """Build and flash (or, with dry_run, only plan) the firmware in OUTDIR for `board`; `bench_warmup` /
    `bench_runs` set the inferences it times after its self-test (None: the firmware's defaults) and
    `bench_profile` builds in the per-op profiler."""
    outdir = Path(outdir)
    the_board = get_board(board)
    packaged = packaged_board(outdir)
    if packaged != the_board.name:
        raise EdgeportError(
            f"{outdir} was packaged for {packaged}, not {the_board.name}",
            f"re-run `edgeport package ... --board {the_board.name}`",
        )
    root = tflm_root_or_env(tflm_root)
    bench_build = bench_warmup is not None or bench_runs is not None or bench_profile
    if build and not dry_run and not root and not bench_build:  # without sources, flash an ELF built earlier
        build = not (outdir / "firmware" / "build" / "firmware.elf").is_file()
    if probe == "arduino-cli" and not port and not dry_run:
        raise EdgeportError("arduino-cli needs the board's serial port", "pass --port, e.g. /dev/ttyACM0")
    if build and not dry_run:
        # --bench-runs / --bench-warmup / --bench-profile always rebuild: an earlier ELF may lack them.
        check_tflm_tree(root)
    steps = plan(outdir, the_board, probe, port, root, build, bench_warmup, bench_runs, bench_profile)
    if dry_run:
        return steps
    check_tools(steps)
    for step in steps:
        done = subprocess.run(list(step.argv))
        if done.returncode != 0:
            raise EdgeportError(
                f"{step.what} step failed (exit {done.returncode}): {step.shell()}",
                "see the tool's output above",
            )
    return steps
