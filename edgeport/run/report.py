"""The run's report, read back from what the run wrote (the manifests and the bench reports), so that it
says what the files say: report.md here, report.html (with plots) in html.py, from the same rows.

Columns: the .tflite packaged and its size, the tensor arena (kTensorArenaSize), RAM and flash needed
against the board's, the fit verdict, the worst output SQNR of a quantized variant against its float
model, and per runner the median and p99 latency. What a target or run does not have is `-`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeport.manifest import Manifest

NONE = "-"
HEAD = [
    "variant",
    "target",
    "model",
    "size",
    "MACs",
    "arena",
    "RAM needed",
    "flash needed",
    "fit",
    "SQNR vs float",
    "accuracy",
]


@dataclass
class Row:
    """One variant x target, as numbers (None: not measured / not applicable)."""

    variant: str
    target: str
    model: str = NONE
    size_bytes: int | None = None
    arena_bytes: int | None = None
    ram: tuple[int, int] | None = None  # needed, available
    flash: tuple[int, int] | None = None
    fits: bool | None = None
    sqnr_db: float | None = None
    exact: bool = False  # quantized and no error at all (no finite SQNR)
    latency_ms: dict[str, tuple[float, float]] = field(default_factory=dict)  # runner -> (median, p99)
    macs: int | None = None  # one inference of the variant's float model (quant/cost.py tflite_macs)
    error: str | None = None  # the stage that made this cell failed: its one-line error
    accuracy: tuple[str, float] | None = None  # (metric, fraction) on the validation set

    def cells(self, runners: list[str]) -> list[str]:
        if self.error:
            return [self.variant, self.target, "FAILED"] + [NONE] * (len(HEAD) - 3 + len(runners))

        def of(pair: tuple[int, int] | None) -> str:
            return f"{kib(pair[0])} of {kib(pair[1])}" if pair else NONE

        sqnr = "exact" if self.exact else (f"{self.sqnr_db:.1f} dB" if self.sqnr_db is not None else NONE)
        fit = NONE if self.fits is None else ("fits" if self.fits else "DOES NOT FIT")
        cells = [self.variant, self.target, self.model, kib(self.size_bytes), mega(self.macs)]
        cells.append(kib(self.arena_bytes))
        accuracy = f"{100 * self.accuracy[1]:.1f}% {self.accuracy[0]}" if self.accuracy else NONE
        cells += [of(self.ram), of(self.flash), fit, sqnr, accuracy]
        for runner in runners:
            median_p99 = self.latency_ms.get(runner)
            cells.append(f"{median_p99[0]:.3g} / {median_p99[1]:.3g} ms" if median_p99 else NONE)
        return cells


def kib(n: int | None) -> str:
    return NONE if n is None else f"{n / 1024:.1f} KiB"


def mega(n: int | None) -> str:
    return NONE if n is None else f"{n / 1e6:.2f} M"


def variant_macs(model_dir: Path) -> int | None:
    """MACs of one inference of the variant's float model: a pruned variant has fewer, precision does not
    change them (conv / dense / matmul MACs; any other op counts one per output element)."""
    from edgeport.quant.cost import tflite_macs

    model = model_dir / "model_float32.tflite"
    return tflite_macs(model.read_bytes()) if model.is_file() else None


def quant_section(model_dir: Path) -> Any:
    """The variant's quantization section (quant/section.py), None for a float variant."""
    from edgeport.quant.section import QuantSection

    return QuantSection.find(Manifest.read(model_dir))


def package_facts(package_dir: Path, precision: str = "float32") -> dict[str, Any]:
    """Model, size, arena, RAM, flash and fit of a package, from its manifest's target section.

    A package that carries several models (Android: one per variant) is described by the one of the
    variant's `precision`, else its first."""
    manifest = Manifest.read(package_dir)
    cortex = manifest.sections.get("cortex_m")
    if cortex:
        fit = cortex["fit"]
        return {
            "model": cortex["model"],
            "size_bytes": cortex["model_bytes"],
            "arena_bytes": cortex["arena"]["kTensorArenaSize"],
            "ram": (fit["ram_needed"], fit["largest_ram_bytes"]),
            "flash": (fit["flash_needed"], fit["flash_available"]),
            "fits": fit["fits_flash"] and fit["fits_ram"],
        }
    tflites = [a for a in manifest.artifacts if a.kind == "tflite"]
    tflites = [a for a in tflites if a.precision == precision] or tflites
    if tflites:  # a target without a cortex_m-like section: the model it carries
        return {"model": Path(tflites[0].path).name, "size_bytes": tflites[0].size_bytes}
    return {}


def latencies(root: Path, bench: dict[str, str]) -> dict[str, dict[str, tuple[float, float]]]:
    """runner -> variant name -> (median, p99) ms."""
    found: dict[str, dict[str, tuple[float, float]]] = {}
    for runner, path in bench.items():
        report = json.loads((root / path).read_text())
        found[runner] = {
            r["model"]["name"]: (r["stats"]["median"], r["stats"]["p99"]) for r in report["results"]
        }
    return found


def rows(root: Path, document: dict[str, Any]) -> list[Row]:
    timing = latencies(root, document.get("bench", {}))
    out = []
    for variant in document["variants"]:
        if "error" in variant:
            out += [Row(variant["name"], target, error=variant["error"]) for target in variant["targets"]]
            continue
        section = quant_section(root / variant["model"])
        macs = variant_macs(root / variant["model"])
        worst = section.fidelity.worst_output_db() if section is not None else None
        accuracy = None
        if isinstance(variant.get("evaluation"), str):
            measured = json.loads((root / variant["evaluation"]).read_text())
            accuracy = (measured["metric"], measured["value"])
        for target, entry in variant["targets"].items():
            if "error" in entry:
                out.append(Row(variant["name"], target, error=entry["error"]))
                continue
            precision = section.mode if section is not None else "float32"
            row = Row(variant["name"], target, **package_facts(root / entry["package"], precision))
            row.sqnr_db, row.exact, row.accuracy = worst, section is not None and worst is None, accuracy
            row.macs = macs
            row.latency_ms = {r: per[variant["name"]] for r, per in timing.items() if variant["name"] in per}
            out.append(row)
    return out


def header(runners: list[str]) -> list[str]:
    return HEAD + [f"{r} median / p99" for r in runners]


def table(found: list[Row], runners: list[str]) -> str:
    head = header(runners)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row.cells(runners)) + " |" for row in found]
    return "\n".join(lines)


ABOUT = (
    "One row per variant and target; every path is relative to this folder. Sizes are the packaged "
    ".tflite; MACs are one inference of the variant's float model (other ops count one per output "
    "element); arena is kTensorArenaSize as measured in TFLite Micro; RAM and flash needed include "
    "edgeport's estimates of the runtime's own (each package's README.md)."
)


def render_markdown(root: Path, document: dict[str, Any]) -> str:
    """report.md for the run written in `root` (run.json's document)."""
    runners = list(document.get("bench", {}))
    parts = [
        "# edgeport run report",
        "",
        f"Config: `{document['config']}`. {ABOUT}",
        "",
        table(rows(root, document), runners),
        "",
        "## Where things are",
        "",
    ]
    for variant in document["variants"]:
        values = ", ".join(f"{k} = {v!r}" for k, v in variant["values"].items())
        parts.append(f"- **{variant['name']}**{f' ({values})' if values else ''}: model `{variant['model']}`")
        parts.append(f"  - the same as `{variant['command']}`")
        if "error" in variant:
            parts.append(f"  - FAILED: {variant['error']}")
            continue
        evaluation = variant.get("evaluation")
        if evaluation is not None:
            done = f"`{evaluation}`" if isinstance(evaluation, str) else f"FAILED: {evaluation['error']}"
            parts.append(f"  - evaluation: {done}")
        for target, entry in variant["targets"].items():
            done = f"FAILED: {entry['error']}" if "error" in entry else f"the same as `{entry['command']}`"
            parts.append(f"  - {target}: `{entry['package']}`, {done}")
    for runner, path in document.get("bench", {}).items():
        parts.append(f"- bench on {runner}: `{path}`")
    return "\n".join(parts) + "\n"
