"""What a pass is, what it reports, and how a registry of them runs (skip by name, errors named).

A pass takes a model (a PyTorch module in torch_passes.py, an ONNX graph in onnx_passes.py) and
returns the new model and a typed report; the reports go into edgeport.json's `passes` list. A pass
that raises does not crash the conversion: the run stops with a conversion error naming the pass,
and `--skip-pass NAME` is the way around it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from edgeport.errors import EdgeportError, exception_line

M = TypeVar("M")


class PassReport(BaseModel):
    """What one pass did: its manifest entry is this model's fields, `name` first."""

    model_config = ConfigDict(populate_by_name=True)

    name: str

    def entry(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def headline(self) -> str:
        """A fragment for the convert summary line, or "" when there is nothing worth saying."""
        return ""

    def warnings_(self) -> list[str]:
        """What the user must be told (printed under the summary; named if verification fails)."""
        return []


class ChangedReport(PassReport):
    """The report of a pass whose only outcome is whether it changed the model."""

    applied: bool


@dataclass(frozen=True)
class Pass(Generic[M]):
    """One registry entry. `run(model)` returns the new model and its report."""

    name: str
    about: str  # one line for `edgeport convert --list-passes`
    run: Callable[[M], tuple[M, PassReport]]
    # onnx2tf options the conversion needs when this pass is skipped (its job would otherwise be
    # redone, differently, inside onnx2tf).
    options_when_skipped: dict[str, Any] = field(default_factory=dict)


def about_module(function: Callable[..., Any]) -> str:
    """The first line of the docstring of the module that defines `function`."""
    doc = sys.modules[function.__module__].__doc__ or ""
    return doc.strip().splitlines()[0].rstrip(".") if doc.strip() else function.__module__


def check_names(skip: Sequence[str], known: Sequence[str]) -> None:
    """Refuse a --skip-pass name that no registry has (one line listing the known names)."""
    unknown = [name for name in skip if name not in known]
    if unknown:
        raise EdgeportError(
            f"--skip-pass {unknown[0]!r} names no pass",
            f"use one of {', '.join(known)} (edgeport convert --list-passes)",
        )


def run_passes(
    registry: Sequence[Pass[M]], model: M, skip: Sequence[str], kind: str
) -> tuple[M, list[PassReport], list[Pass[M]]]:
    """Run the registry in order except the skipped names: (model, reports, skipped passes)."""
    reports: list[PassReport] = []
    skipped: list[Pass[M]] = []
    for entry in registry:
        if entry.name in skip:
            skipped.append(entry)
            continue
        try:
            model, report = entry.run(model)
        except EdgeportError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failing pass is a conversion error that names it
            raise EdgeportError(
                f"the {kind} pass {entry.name!r} failed on this model ({exception_line(exc)})",
                f"rerun with --skip-pass {entry.name} to convert without it, and report the model "
                "(--debug shows the traceback)",
            ) from exc
        reports.append(report)
    return model, reports, skipped
