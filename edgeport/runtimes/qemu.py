"""QEMU: run a firmware ELF under qemu-system-arm with a time limit and read what it printed.

The firmware prints on the board's serial port (QEMU's stdio) and ends with a semihosting exit, whose
status becomes QEMU's exit status. A firmware that hangs is stopped at the time limit; what it
printed until then is kept.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError

QEMU = "qemu-system-arm"


@dataclass(frozen=True)
class QemuRun:
    argv: tuple[str, ...]
    exit_status: int | None  # the firmware's semihosting exit status (QEMU's); None when stopped
    lines: list[str]  # what the firmware printed, line by line
    stderr: str
    timed_out: bool

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)


def command(machine: str, icount_shift: int) -> tuple[str, ...]:
    """qemu-system-arm with `machine`, serial on stdio and semihosting exit; the ELF goes after it.

    `icount_shift`: virtual time from the instruction count (2^N ns per instruction), so SysTick
    advances deterministically.
    """
    return (
        QEMU,
        "-M",
        machine,
        "-nographic",
        "-semihosting-config",
        "enable=on,target=native",
        "-icount",
        f"shift={icount_shift}",
        "-kernel",
    )


def _text(output: str | bytes | None) -> str:
    if output is None:
        return ""
    return output.decode(errors="replace") if isinstance(output, bytes) else output


def run_argv(argv: Sequence[str], timeout: float) -> QemuRun:
    """Run a full QEMU command line (`command(...)` plus the ELF) for at most `timeout` seconds."""
    if shutil.which(argv[0]) is None:
        raise EdgeportError(f"{argv[0]} is not installed", "install it: apt-get install qemu-system-arm")
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed QEMU by now
        return QemuRun(tuple(argv), None, _text(exc.stdout).splitlines(), _text(exc.stderr), True)
    return QemuRun(tuple(argv), done.returncode, done.stdout.splitlines(), done.stderr, False)


def run_firmware(elf: Path, machine: str, icount_shift: int, timeout: float = 600) -> QemuRun:
    """Run `elf` on QEMU's `machine` for at most `timeout` seconds."""
    if not Path(elf).is_file():
        raise EdgeportError(f"{elf} does not exist", "build the firmware first (make -C FIRMWARE_DIR)")
    return run_argv((*command(machine, icount_shift), str(elf)), timeout)
