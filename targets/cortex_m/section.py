"""The `cortex_m` section of edgeport.json as typed fields: written by the packager, read back by flash
(and by any report) as attributes instead of dictionary keys."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.targets.cortex_m.fit import FitReport

SECTION = "cortex_m"


class ArenaSection(BaseModel):
    measured_bytes: int
    recorded_bytes: int
    head_bytes: int
    tail_bytes: int
    categories: dict[str, int]  # allocator report lines: what -> bytes
    alignment_margin: int
    cmsis_nn_scratch_estimate: int
    kTensorArenaSize: int  # the name of the constant in model_settings.h
    measured_with: str


class SelfTestSection(BaseModel):
    input_seed: int
    int_tolerance: int
    float_tolerance: float


class CortexMSection(BaseModel):
    model: str  # the .tflite packaged (file name)
    model_sha256: str
    model_bytes: int
    crc32: str
    name: str  # C array name
    section: str  # linker section of the array
    board: str
    ops: list[str]
    op_versions: dict[str, int]
    int8_kernels: list[str]
    arena: ArenaSection
    fit: FitReport
    self_test: SelfTestSection
    firmware: str  # the firmware project's folder in OUTDIR
    decode: dict[str, Any] | None = None  # LUT-compressed weights (TFLM_DECODE) only

    def record(self, manifest: Manifest) -> None:
        """Put this section into `manifest` (decode only when there is one)."""
        manifest.sections[SECTION] = self.model_dump(
            mode="json", exclude={"decode"} if self.decode is None else None
        )

    @classmethod
    def of(cls, manifest: Manifest, where: str) -> CortexMSection:
        """The section of a package's manifest; a missing or older one is a one-line error."""
        data = manifest.sections.get(SECTION)
        if not data:
            raise EdgeportError(
                f"{where} has no Cortex-M package", "run `edgeport package --target cortex-m` into it"
            )
        try:
            return cls.model_validate(data)
        except Exception as exc:  # noqa: BLE001 - any mismatch means the same: an unknown section layout
            raise EdgeportError(
                f"the {SECTION} section of {where}/edgeport.json is not one this edgeport reads",
                "re-run `edgeport package --target cortex-m` into it",
            ) from exc
