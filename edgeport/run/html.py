"""report.html: the report's table, plots and provenance in one self-contained page (CSS inline, plots as
inline SVG, nothing loaded from the network), the same rows as report.md (report.py).

Plots (matplotlib, drawn without pyplot's global state, SVG written without a date and with a fixed hash
salt so the same run writes the same bytes): SQNR against size with the Pareto front marked, latency per
variant and runner (median, whisker to p99), the worst layers of each quantized variant, and the channels
per group of each pruned variant before and after.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgeport.run.report import ABOUT, Row, header, quant_section, rows

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f2f2f2; }
td:nth-child(-n+3) { text-align: left; }
td.bad, li.bad { color: #b00; font-weight: bold; }
code { background: #f5f5f5; padding: 0 0.2em; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
.warn { color: #8a5a00; }
"""


def pareto(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (smaller or equal size and higher or equal SQNR, one of
    them strictly), by size."""
    front = []
    for i, (size, quality) in enumerate(points):
        beaten = any(
            s <= size and q >= quality and (s < size or q > quality)
            for j, (s, q) in enumerate(points)
            if j != i
        )
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i])


def _svg(figure: Any) -> str:
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "edgeport", "svg.fonttype": "none"}):
        # No date (the same run, the same bytes) and no RDF block naming matplotlib's site.
        metadata = {"Date": None, "Creator": None, "Format": None, "Type": None}
        figure.savefig(buffer, format="svg", metadata=metadata, bbox_inches="tight")
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML prolog or DOCTYPE


def _figure(width: float = 5.0, height: float = 3.4) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    return figure, figure.subplots()


def size_plot(found: list[Row]) -> str | None:
    """Accuracy on the validation set (when there is one; every variant) or else SQNR vs float (the
    quantized variants; float ones as dotted lines) against model size, the Pareto front marked."""
    by_variant: dict[str, Row] = {}
    for row in found:
        by_variant.setdefault(row.variant, row)
    sized = [r for r in by_variant.values() if r.size_bytes is not None]
    accuracy = [r for r in sized if r.accuracy is not None]
    if accuracy:
        shown, floats = accuracy, []
        values = [100 * r.accuracy[1] for r in accuracy]  # type: ignore[index]
        ylabel, title = f"{accuracy[0].accuracy[0]} on the validation set (%)", "Accuracy against size"  # type: ignore[index]
    else:
        shown = [r for r in sized if r.sqnr_db is not None]
        floats = [r for r in sized if r.sqnr_db is None and not r.exact]
        values = [r.sqnr_db for r in shown]  # type: ignore[misc]
        ylabel, title = "worst output SQNR vs float (dB)", "Fidelity against size"
    if not shown:
        return None
    figure, axes = _figure()
    points = [(r.size_bytes / 1024, v) for r, v in zip(shown, values, strict=True)]  # type: ignore[operator]
    axes.scatter([p[0] for p in points], [p[1] for p in points], color="#1f77b4", zorder=3)
    for row, (x, y) in zip(shown, points, strict=True):
        axes.annotate(row.variant, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    front = [points[i] for i in pareto(points)]
    axes.plot(
        [p[0] for p in front], [p[1] for p in front], "o--", color="#d62728", fillstyle="none", ms=11,
        label="Pareto front",
    )  # fmt: skip
    for row in floats:
        axes.axvline(row.size_bytes / 1024, color="#888", linestyle=":", label=f"{row.variant} (reference)")  # type: ignore[operator]
    axes.set_xlabel("model size (KiB)")
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    return _svg(figure)


def latency_plot(found: list[Row], runners: list[str]) -> str | None:
    """Median latency per variant and runner, whisker up to p99."""
    variants = list(dict.fromkeys(r.variant for r in found))
    first = {v: next(r for r in found if r.variant == v) for v in variants}
    if not runners:
        return None
    figure, axes = _figure(max(4.0, 1.2 * len(variants) * len(runners)), 3.4)
    width = 0.8 / len(runners)
    shown = [m for r in found for m, _ in r.latency_ms.values() if m > 0]
    for k, runner in enumerate(runners):
        xs, medians, whiskers = [], [], []
        for i, variant in enumerate(variants):
            if runner in first[variant].latency_ms:
                median, p99 = first[variant].latency_ms[runner]
                xs.append(i + (k - (len(runners) - 1) / 2) * width)
                medians.append(median)
                whiskers.append(max(0.0, p99 - median))
        axes.bar(xs, medians, width, yerr=[[0] * len(xs), whiskers], capsize=3, label=runner)
    axes.set_xticks(range(len(variants)), variants)
    # Runners differ by orders of magnitude (host LiteRT in microseconds, a Cortex-M estimate in
    # milliseconds): on a linear axis the fast ones would be invisible bars.
    log_scale = bool(shown) and max(shown) / min(shown) > 20
    if log_scale:
        axes.set_yscale("log")
    axes.set_ylabel("latency (ms" + (", log scale" if log_scale else "") + "): median, whisker to p99")
    axes.set_title("Latency per variant and runner")
    axes.legend(fontsize=8)
    axes.grid(axis="y", alpha=0.3)
    return _svg(figure)


def layer_plot(variant: str, section: Any) -> str | None:
    """The worst internal tensors of one quantized variant, by the user's layer name where known."""
    layers = [w for w in section.fidelity.worst_layers if w.sqnr_db is not None]
    if not layers:
        return None
    figure, axes = _figure(5.0, 0.5 + 0.4 * len(layers))
    names = [w.module or w.source_name or w.tflite_name[:40] for w in layers]
    axes.barh(range(len(layers)), [w.sqnr_db for w in layers], color="#2ca02c")
    axes.set_yticks(range(len(layers)), names, fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("SQNR vs float (dB)")
    axes.set_title(f"{variant}: worst layers")
    return _svg(figure)


def channels_plot(variant: str, section: Any) -> str | None:
    """Channels per pruned group before and after, for a variant pruned with --prune (quant/prune)."""
    groups = list(section.groups)
    if not groups:
        return None
    figure, axes = _figure(5.0, 0.6 + 0.35 * len(groups))
    ys = range(len(groups))
    axes.barh([y - 0.2 for y in ys], [g.channels_before for g in groups], 0.4, label="before", color="#bbb")
    axes.barh([y + 0.2 for y in ys], [g.channels_after for g in groups], 0.4, label="after", color="#9467bd")
    axes.set_yticks(list(ys), [g.module for g in groups], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("channels")
    axes.set_title(f"{variant}: channels per pruned group")
    axes.legend(fontsize=8)
    return _svg(figure)


def pruning_section(model_dir: Path) -> Any:
    """The variant's pruning section (quant/prune/section.py), None when it was not pruned."""
    from edgeport.manifest import Manifest
    from edgeport.quant.prune.section import PruningSection

    return PruningSection.find(Manifest.read(model_dir))


def _table(found: list[Row], runners: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header(runners))
    body = []
    for row in found:
        cells = row.cells(runners)
        tds = "".join(
            f"<td{' class=bad' if cell == 'DOES NOT FIT' else ''}>{html.escape(cell)}</td>" for cell in cells
        )
        body.append(f"<tr>{tds}</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def warnings_of(root: Path, variant: dict[str, Any]) -> list[str]:
    """What the variant's conversion warned about: its passes' warnings and the calibration's notes."""
    from edgeport.manifest import Manifest

    manifest = Manifest.read(root / variant["model"])
    found = [str(w) for p in manifest.passes for w in p.report().get("warnings") or []]
    section = quant_section(root / variant["model"])
    if section is not None and section.calibration is not None:
        found += list(section.calibration.notes)
    return found


def render_html(root: Path, document: dict[str, Any]) -> str:
    """report.html for the run written in `root` (run.json's document)."""
    runners = list(document.get("bench", {}))
    found = rows(root, document)
    figures = [size_plot(found), latency_plot(found, runners)]
    for variant in document["variants"]:
        if "error" in variant:
            continue
        section = quant_section(root / variant["model"])
        figures.append(layer_plot(variant["name"], section) if section is not None else None)
        pruned = pruning_section(root / variant["model"])
        figures.append(channels_plot(variant["name"], pruned) if pruned is not None else None)
    plots = "".join(f"<figure>{svg}</figure>" for svg in figures if svg)
    provenance = []
    for variant in document["variants"]:
        model = variant["model"]
        items = [
            f"<li>model: <a href='{html.escape(model)}/edgeport.json'>{html.escape(model)}</a>, the same as "
            f"<code>{html.escape(variant['command'])}</code></li>"
        ]
        if "error" in variant:
            items.append(f"<li class=bad>FAILED: {html.escape(variant['error'])}</li>")
        for target, entry in variant["targets"].items() if "error" not in variant else []:
            package = html.escape(entry["package"])
            if "error" in entry:
                items.append(
                    f"<li class=bad>{html.escape(target)}: FAILED: {html.escape(entry['error'])}</li>"
                )
                continue
            items.append(
                f"<li>{html.escape(target)}: <a href='{package}/edgeport.json'>{package}</a>, "
                f"the same as <code>{html.escape(entry['command'])}</code></li>"
            )
        if "error" not in variant:
            items += [f"<li class=warn>warning: {html.escape(w)}</li>" for w in warnings_of(root, variant)]
        provenance.append(f"<h3>{html.escape(variant['name'])}</h3><ul>{''.join(items)}</ul>")
    bench = "".join(
        f"<li>{html.escape(r)}: <a href='{html.escape(p)}'>{html.escape(p)}</a></li>"
        for r, p in document.get("bench", {}).items()
    )
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8><title>edgeport run report</title>"
        f"<style>{CSS}</style></head><body>\n<h1>edgeport run report</h1>\n"
        f"<p>Config: <a href='{html.escape(document['config'])}'>{html.escape(document['config'])}</a>. "
        f"{html.escape(ABOUT)}</p>\n{_table(found, runners)}\n<h2>Plots</h2>\n{plots or '<p>(none)</p>'}\n"
        f"<h2>Variants</h2>\n{''.join(provenance)}\n"
        + (f"<h2>Bench reports</h2><ul>{bench}</ul>\n" if bench else "")
        + "</body></html>\n"
    )
