"""report.md: one row per variant x target, read back from what the run wrote (the manifests and the bench
reports), so the table says what the files say.

Columns: the .tflite packaged and its size, the tensor arena (kTensorArenaSize), RAM and flash needed
against the board's, the fit verdict, the worst output SQNR of a quantized variant against its float
model, and per runner the median and p99 latency. What a target or run does not have is `-`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeport.manifest import Manifest

NONE = "-"


@dataclass
class Row:
    variant: str
    target: str
    model: str = NONE
    size: str = NONE
    arena: str = NONE
    ram: str = NONE
    flash: str = NONE
    fit: str = NONE
    sqnr: str = NONE
    latency: dict[str, str] | None = None


def kib(n: int) -> str:
    return f"{n / 1024:.1f} KiB"


def sqnr_of(model_dir: Path) -> str:
    """The worst output SQNR of the variant's quantized model against its float one (dB), else '-'."""
    from edgeport.quant.section import QuantSection

    section = QuantSection.find(Manifest.read(model_dir))
    worst = section.fidelity.worst_output_db() if section is not None else None
    if section is None:
        return NONE
    return "exact" if worst is None else f"{worst:.1f} dB"


def package_cells(package_dir: Path) -> dict[str, str]:
    """Model, size, arena, RAM, flash and fit of a package, from its manifest's target section."""
    manifest = Manifest.read(package_dir)
    cortex = manifest.sections.get("cortex_m")
    if cortex:
        fit = cortex["fit"]
        return {
            "model": cortex["model"],
            "size": kib(cortex["model_bytes"]),
            "arena": kib(cortex["arena"]["kTensorArenaSize"]),
            "ram": f"{kib(fit['ram_needed'])} of {kib(fit['largest_ram_bytes'])}",
            "flash": f"{kib(fit['flash_needed'])} of {kib(fit['flash_available'])}",
            "fit": "fits" if fit["fits_flash"] and fit["fits_ram"] else "DOES NOT FIT",
        }
    tflites = [a for a in manifest.artifacts if a.kind == "tflite"]
    if tflites:  # a target without a cortex_m-like section: the model it carries
        return {"model": Path(tflites[0].path).name, "size": kib(tflites[0].size_bytes)}
    return {}


def latencies(root: Path, bench: dict[str, str]) -> dict[str, dict[str, str]]:
    """runner -> variant name -> `median / p99 ms`."""
    found: dict[str, dict[str, str]] = {}
    for runner, path in bench.items():
        report = json.loads((root / path).read_text())
        found[runner] = {
            r["model"]["name"]: f"{r['stats']['median']:.3g} / {r['stats']['p99']:.3g} ms"
            for r in report["results"]
        }
    return found


def rows(root: Path, document: dict[str, Any]) -> list[Row]:
    timing = latencies(root, document.get("bench", {}))
    out = []
    for variant in document["variants"]:
        sqnr = sqnr_of(root / variant["model"])
        for target, entry in variant["targets"].items():
            row = Row(variant["name"], target, sqnr=sqnr, **package_cells(root / entry["package"]))
            row.latency = {runner: per.get(variant["name"], NONE) for runner, per in timing.items()}
            out.append(row)
    return out


def table(found: list[Row], runners: list[str]) -> str:
    head = [
        "variant",
        "target",
        "model",
        "size",
        "arena",
        "RAM needed",
        "flash needed",
        "fit",
        "SQNR vs float",
    ]
    head += [f"{r} median / p99" for r in runners]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in found:
        cells = [
            row.variant,
            row.target,
            row.model,
            row.size,
            row.arena,
            row.ram,
            row.flash,
            row.fit,
            row.sqnr,
        ]
        cells += [(row.latency or {}).get(r, NONE) for r in runners]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(root: Path, document: dict[str, Any]) -> str:
    """report.md for the run written in `root` (run.json's document)."""
    runners = list(document.get("bench", {}))
    parts = [
        "# edgeport run report",
        "",
        f"Config: `{document['config']}`. One row per variant and target; every path is relative to this "
        "folder. Sizes are the packaged .tflite; arena is kTensorArenaSize as measured in TFLite Micro; "
        "RAM and flash needed include edgeport's estimates of the runtime's own (each package's README.md).",
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
        for target, entry in variant["targets"].items():
            parts.append(f"  - {target}: `{entry['package']}`, the same as `{entry['command']}`")
    for runner, path in document.get("bench", {}).items():
        parts.append(f"- bench on {runner}: `{path}`")
    return "\n".join(parts) + "\n"
