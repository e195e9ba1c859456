"""What a target is: the interface `edgeport package --target NAME` (and later `bench`, `run`) talks to.

A target lives in its own sub-package (targets/cortex_m, targets/android, ...) and is listed in the registry
(targets/__init__.py). It declares its package options as a pydantic model: the CLI makes its flags from the
model's fields, so an option is defined once, where the target uses it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from pydantic import BaseModel

if TYPE_CHECKING:  # the CLI reads targets to make its flags: keep that import light
    from edgeport.manifest import Manifest


class TargetBoard(Protocol):
    """A board a target builds for: its key for --board, and one line for --list-boards."""

    name: str

    def describe(self) -> str: ...


class Packaged(Protocol):
    """What `package()` returns: where it wrote, the manifest it wrote, and a one-line summary."""

    outdir: Path
    manifest: Manifest

    def summary(self) -> str: ...


@runtime_checkable
class Target(Protocol):
    name: str  # the --target value
    title: str
    # The package options (extra fields forbidden). A field `board` means the target needs one of boards().
    # Targets that name a field alike share its flag, so the field must have the same type in each.
    options: type[BaseModel]
    # The modules of edgeport.runtimes that run this target's packages, the host first, the device last.
    runners: tuple[str, ...]

    def boards(self) -> Sequence[TargetBoard]:
        """The boards the target builds for (empty if it has no board concept)."""
        ...

    def supported_ops(self) -> dict[str, list[str]]:
        """The ops the target's runtime has kernels for: {"builtin": [...], "custom": [...]}."""
        ...

    def package(
        self, model: Path, outdir: Path, options: BaseModel, *, force: bool = False, command: str = ""
    ) -> Packaged:
        """Package MODEL (.tflite or convert output directory) into OUTDIR, all or nothing
        (edgeport.packaging.write_package)."""
        ...
