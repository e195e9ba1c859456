"""Does the packaged model fit the board? Flash: model + runtime code. RAM: arena + stack + runtime state.

The arena is measured (arena.py); the runtime code and state are estimates, labelled as such in the
manifest: TFLite Micro's interpreter, allocator and flatbuffer parsing plus startup code and a
minimal libc take a few tens of KB of flash whatever the model, and each kernel adds a few KB.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict

from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m.boards import Board

# Estimates (bytes), chosen on the high side so a "fits" verdict is safe; see the module docstring.
RUNTIME_CODE_BASE = 64 * 1024  # interpreter + allocator + flatbuffer parsing + startup + libc
RUNTIME_CODE_PER_OP = 8 * 1024  # one kernel, e.g. CMSIS-NN convolution with its reference fallback
RUNTIME_RAM = 4 * 1024  # MicroInterpreter, op resolver, .data/.bss of the runtime and libc
DEFAULT_STACK = 8 * 1024  # main stack reserved by the linker scripts in firmware/


class FitReport(BaseModel):
    """The fit verdict with its numbers; also the manifest's cortex_m.fit section."""

    model_config = ConfigDict(frozen=True)

    board: str
    model_bytes: int
    runtime_code_estimate: int
    flash_needed: int
    flash_available: int
    arena_bytes: int
    stack_bytes: int
    runtime_ram_estimate: int
    ram_needed: int
    largest_ram_region: str
    largest_ram_bytes: int
    fits_flash: bool
    fits_ram: bool
    checked: bool = True  # False: packaged with --no-fit-check
    estimates: tuple[str, ...] = ("runtime_code", "runtime_ram")  # the figures that are not measured

    @property
    def fits(self) -> bool:
        return self.fits_flash and self.fits_ram


def kb(n: int) -> str:
    return f"{math.ceil(n / 1024)} KB"


def assess(board: Board, model_bytes: int, arena_bytes: int, n_ops: int) -> FitReport:
    code = RUNTIME_CODE_BASE + RUNTIME_CODE_PER_OP * n_ops
    region = board.largest_ram
    flash_needed = model_bytes + code
    ram_needed = arena_bytes + DEFAULT_STACK + RUNTIME_RAM
    return FitReport(
        board=board.name,
        model_bytes=model_bytes,
        runtime_code_estimate=code,
        flash_needed=flash_needed,
        flash_available=board.flash_bytes,
        arena_bytes=arena_bytes,
        stack_bytes=DEFAULT_STACK,
        runtime_ram_estimate=RUNTIME_RAM,
        ram_needed=ram_needed,
        largest_ram_region=region.name,
        largest_ram_bytes=region.size,
        fits_flash=flash_needed <= board.flash_bytes,
        fits_ram=ram_needed <= region.size,
    )


def require_fit(report: FitReport, board: Board, model_name: str) -> None:
    """Raise with the numbers when the model does not fit; the RAM verdict comes first."""
    problems = []
    if not report.fits_ram:
        problems.append(
            f"needs {kb(report.ram_needed)} RAM (arena {kb(report.arena_bytes)} + stack "
            f"{kb(report.stack_bytes)} + runtime {kb(report.runtime_ram_estimate)}), largest region "
            f"{kb(report.largest_ram_bytes)} ({report.largest_ram_region})"
        )
    if not report.fits_flash:
        problems.append(
            f"needs {kb(report.flash_needed)} flash (model {kb(report.model_bytes)} + runtime code "
            f"~{kb(report.runtime_code_estimate)}), board has {kb(report.flash_available)}"
        )
    if problems:
        raise EdgeportError(
            f"{model_name} does not fit {board.title} ({board.name}): {'; '.join(problems)}",
            "choose a board with more memory, compress the model (int8, pruning), or pass --no-fit-check",
        )
