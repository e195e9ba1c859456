"""The generated board support (startup, linker script, UART, cycle counter, semihosting exit) boots
and prints on the QEMU machines, without TFLite Micro (test_firmware_build.py builds the whole firmware)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from edgeport.runtimes import qemu as qemu_runtime
from edgeport.targets.cortex_m.fit import DEFAULT_STACK
from edgeport.targets.cortex_m.flash import qemu_icount_shift
from tests.conftest import shared_path

BOARDS = ["mps2-an386", "mps2-an500", "corstone-300"]
HELLO = r"""
#include <stdio.h>
#include "platform.h"
volatile float g_value = 1.5f;
__attribute__((noinline)) int use_stack(int n) {
  volatile char buffer[3000];
  for (int i = 0; i < 3000; ++i) buffer[i] = (char)(i + n);
  return buffer[n];
}
int main(void) {
  static char line[80];
  platform_init();
  platform_cycles_start();
  uint32_t start = platform_cycles_read();
  for (volatile int i = 0; i < 20000; ++i) g_value = g_value * 1.0001f;
  uint32_t cycles = platform_cycles_read() - start;
  snprintf(line, sizeof line, "bsp ok: %lu cycles (%s)\n", (unsigned long)cycles, platform_cycles_source());
  platform_write(line);
  const uint32_t before = platform_stack_used();
  use_stack(7);
  snprintf(line, sizeof line, "stack: %lu then %lu bytes\n", (unsigned long)before,
           (unsigned long)platform_stack_used());
  platform_write(line);
#if defined(CRASH)
  __asm volatile("udf #0");  // an undefined instruction: UsageFault, escalated to HardFault
#endif
  platform_exit(cycles > 0 ? 42 : 1);
  return 0;
}
"""


def _board_mk(path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        if ":=" in line and not line.startswith("#"):
            key, value = line.split(":=", 1)
            values[key.strip()] = value.strip()
    return values


def _run_hello(board: str, tmp_path, *defines: str) -> qemu_runtime.QemuRun:
    """HELLO built with the generated board support for `board` and run in QEMU."""
    gcc, qemu = shutil.which("arm-none-eabi-gcc"), shutil.which("qemu-system-arm")
    if gcc is None or qemu is None:
        pytest.skip(
            "needs arm-none-eabi-gcc and qemu-system-arm (apt-get install gcc-arm-none-eabi qemu-system-arm)"
        )
    from edgeport.targets.cortex_m import package

    out = tmp_path / "pkg"
    result = package(shared_path("models", "tflite", "tflm_hello_world_int8.tflite"), out, board=board)
    firmware = out / "firmware"
    (firmware / "hello.c").write_text(HELLO)
    mk = _board_mk(firmware / "board.mk")
    elf = tmp_path / "hello.elf"
    subprocess.run(
        [
            gcc,
            *mk["CPU_FLAGS"].split(),
            *mk["BOARD_DEFINES"].split(),
            *[f"-D{define}" for define in defines],
            f"-DEDGEPORT_CLOCK_HZ={mk['CLOCK_HZ']}u",
            "-O2",
            "-Wall",
            "-Werror",
            "-I",
            str(firmware),
            "-T",
            str(firmware / "linker.ld"),
            "--specs=nano.specs",
            "--specs=nosys.specs",
            "-Wl,--gc-sections",
            *[str(firmware / s) for s in mk["BOARD_SOURCES"].split()],
            str(firmware / "hello.c"),
            "-o",
            str(elf),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return qemu_runtime.run_firmware(
        elf, result.board.qemu_machine, qemu_icount_shift(result.board), timeout=60
    )


@pytest.mark.parametrize("board", BOARDS)
def test_board_support_boots_prints_and_exits_in_qemu(board, tmp_path):
    run = _run_hello(board, tmp_path)
    assert not run.timed_out and "bsp ok:" in run.stdout, run.stdout + run.stderr
    assert run.exit_status == 42  # the semihosting exit code, after a non-zero cycle count
    # The startup code painted the stack: the 3000-byte buffer shows in the high-water mark.
    before, after = map(int, re.search(r"stack: (\d+) then (\d+) bytes", run.stdout).groups())
    assert 0 < before < 3000 < after < DEFAULT_STACK, run.stdout


@pytest.mark.parametrize("board", BOARDS)
def test_a_fault_prints_and_exits_at_once_instead_of_hanging(board, tmp_path):
    run = _run_hello(board, tmp_path, "CRASH")
    assert not run.timed_out and "bsp ok:" in run.stdout, run.stdout + run.stderr
    assert "FAIL: fault, exception 003" in run.stdout and run.exit_status == 7, run.stdout  # HardFault
