"""Cortex-M as a registered target: its package options, boards, ops and runners (see targets/base.py).

Kept light to import (the CLI makes its flags from the options): the packager, TFLite Micro and the op
tables load only when a package is made or the ops are asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgeport.targets.base import Packaged
from edgeport.targets.cortex_m.boards import BOARDS, Board, get_board

DEFAULT_NAME = "g_model"


class CortexMOptions(BaseModel):
    """`edgeport package --target cortex-m` options; each field is a flag (fit_check: --no-fit-check)."""

    model_config = ConfigDict(extra="forbid")

    board: str = Field(description="Board to check the fit against and build for (see --list-boards).")
    name: str = Field(DEFAULT_NAME, description="C identifier of the model array.")
    section: str | None = Field(None, description="Linker section for the model array, e.g. .model_data.")
    fit_check: bool = Field(
        True, description="Check that the model fits the board (--no-fit-check: write the package anyway)."
    )

    @field_validator("board")
    @classmethod
    def _known_board(cls, board: str) -> str:
        get_board(board)  # an unknown board is refused with the close names before any work (run's check)
        return board


class CortexMTarget:
    name = "cortex-m"
    title = "Arm Cortex-M microcontrollers, TensorFlow Lite Micro"
    options = CortexMOptions
    # TFLite Micro's kernels on the host (the arena measurement and self-test reference), then the firmware
    # booted in QEMU on the boards that have a QEMU machine.
    runners = ("tflm", "qemu")

    def boards(self) -> Sequence[Board]:
        return BOARDS

    def supported_ops(self) -> dict[str, list[str]]:
        from edgeport.targets.cortex_m.op_resolver import supported_ops

        return supported_ops()

    def package(
        self, model: Path, outdir: Path, options: BaseModel, *, force: bool = False, command: str = ""
    ) -> Packaged:
        from edgeport.targets.cortex_m.packager import package

        if not isinstance(options, CortexMOptions):
            raise TypeError(f"cortex-m takes CortexMOptions, not {type(options).__name__}")
        return package(
            model,
            outdir,
            board=options.board,
            name=options.name,
            section=options.section,
            fit_check=options.fit_check,
            force=force,
            command=command,
        )


TARGET = CortexMTarget()
