"""The table `edgeport bench` prints: one row per model, its order statistics, what else was measured,
and its median over the first model's (the comparison a single run makes honest)."""

from __future__ import annotations

import math
from collections.abc import Callable

from rich.table import Table

from edgeport.bench.schema import BenchReport, BenchResult, OpProfile, TicksAre

TIME_KIND_TITLES = {
    "host-wall-clock": "wall clock on this host",
    "device-timer": "the device's own timer",
    "instruction-estimate": "estimated from QEMU instruction counts on the board's clock",
}

# What a profile's ms rest on, by what its ticks are (OpProfile.ticks_are).
TICKS_ARE_TITLES: dict[TicksAre, str] = {
    "instructions": "QEMU's instruction counts at one per cycle of the board's clock (an estimate)",
    "cycles": "the board's own cycle counter (DWT or SysTick) at the clock its firmware states",
}


def format_ms(value: float | None) -> str:
    """Milliseconds to three significant digits, never in exponent notation ('-' when unknown)."""
    if value is None or math.isnan(value):
        return "-"
    if value == 0:
        return "0"
    digits = max(0, 2 - math.floor(math.log10(abs(value))))
    return f"{value:.{digits}f}"


def format_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    if value < 1024:
        return f"{value} B"
    if value < 1024 * 1024:
        return f"{value / 1024:.1f} KiB"
    return f"{value / (1024 * 1024):.1f} MiB"


def format_ratio(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}x"


def _delegation(result: BenchResult) -> str | None:
    d = result.delegation
    if d.delegated_ops is None:
        return None
    return (
        f"{d.delegate} {d.delegated_ops}/{d.total_ops}" if d.total_ops is not None else str(d.delegated_ops)
    )


def _memory(field: str) -> Callable[[BenchResult], str | None]:
    return lambda r: None if getattr(r.memory, field) is None else format_bytes(getattr(r.memory, field))


def _time(field: str) -> Callable[[BenchResult], str | None]:
    return lambda r: None if getattr(r, field) is None else format_ms(getattr(r, field))


# Optional columns: (header, a result's value or None when not measured), shown when any row has one.
OPTIONAL_COLUMNS: list[tuple[str, Callable[[BenchResult], str | None]]] = [
    ("init", _time("init_ms")),
    ("first", _time("first_ms")),
    ("peak RSS", _memory("peak_rss_bytes")),
    ("arena", _memory("arena_bytes")),
    ("flash", _memory("flash_bytes")),
    ("RAM", _memory("ram_bytes")),
    ("stack", _memory("stack_bytes")),
    ("footprint", _memory("footprint_overall_bytes")),
    ("delegated", _delegation),
]


def title(report: BenchReport) -> str:
    kinds = sorted({r.time_kind for r in report.results})
    what = "; ".join(f"{k}: {TIME_KIND_TITLES.get(k, k)}" for k in kinds)
    return (
        f"edgeport bench --on {report.settings.runner} ({report.device.description}), ms, "
        f"{what}, {report.settings.runs} runs after {report.settings.warmup} warmup"
    )


def bench_table(report: BenchReport) -> Table:
    table = Table(title=title(report), title_justify="left")
    table.add_column("model", overflow="fold")
    stats = ("median", "p90", "p99", "min", "max", "std")
    for name in stats:
        table.add_column(name, justify="right")
    optional = [(h, f) for h, f in OPTIONAL_COLUMNS if any(f(r) is not None for r in report.results)]
    for header, _ in optional:
        table.add_column(header, justify="right")
    table.add_column("vs first", justify="right")
    for result, ratio in zip(report.results, report.ratios(), strict=True):
        values = [format_ms(getattr(result.stats, name)) for name in stats]
        extra = [f(result) or "-" for _, f in optional]
        table.add_row(result.model.name, *values, *extra, format_ratio(ratio))
    return table


def notes(report: BenchReport) -> list[str]:
    """Each result's notes, a note every result shares said once."""
    shared = set.intersection(*(set(r.notes) for r in report.results)) if report.results else set()
    lines = [n for n in report.results[0].notes if n in shared] if report.results else []
    for result in report.results:
        lines += [f"{result.model.name}: {n}" for n in result.notes if n not in shared]
    return lines


OUTSIDE = "(outside ops)"


def profile_table(report: BenchReport) -> Table | None:
    """`--profile`: per op type (rows, most time first in the first profiled model) each profiled model's
    op count, ms and share of the profiled inference, and from the second model on its ms over the first's;
    then what the ops leave of the inference. None when no result has a profile."""
    profiles = [(r.model.name, r.profile) for r in report.results if r.profile is not None]
    if not profiles:
        return None
    table = Table(
        title=profile_title([profile for _, profile in profiles]),
        title_justify="left",
        caption="  ".join(f"({k + 1}) {name}" for k, (name, _) in enumerate(profiles)),
        caption_justify="left",
    )
    table.add_column("op")
    order: list[str] = []
    for _, profile in profiles:
        order += [t.op for t in profile.by_type if t.op not in order]
    rows: dict[str, list[str]] = {op: [op] for op in [*order, OUTSIDE]}
    first = {t.op: t.ticks for t in profiles[0][1].by_type}
    first[OUTSIDE] = profiles[0][1].outside_ticks
    for k, (_, profile) in enumerate(profiles):
        for header in ("ops", "ms", "share", *(("vs (1)",) if k else ())):
            table.add_column(header if header.startswith("vs") else f"{header} ({k + 1})", justify="right")
        cells = {t.op: [str(t.count), format_ms(t.ms), _share(t.share)] for t in profile.by_type}
        ticks = {t.op: t.ticks for t in profile.by_type}
        cells[OUTSIDE] = [
            "",
            format_ms(profile.outside_ms),
            _share(profile.outside_ticks / max(1, profile.ticks)),
        ]
        ticks[OUTSIDE] = profile.outside_ticks
        for op, row in rows.items():
            row += cells.get(op, ["-", "-", "-"])
            if k:
                row.append(_ratio(ticks.get(op), first.get(op)))
    for row in rows.values():
        table.add_row(*row)
    return table


def profile_title(profiles: list[OpProfile]) -> str:
    """What the profile table's ms are: one inference, from the ticks its runner counted."""
    kinds = list(dict.fromkeys(profile.ticks_are for profile in profiles))
    return "per-op profile: one inference, ms from " + "; ".join(TICKS_ARE_TITLES[k] for k in kinds)


def _share(value: float) -> str:
    return f"{100 * value:.1f}%"


def _ratio(value: int | None, first: int | None) -> str:
    return "-" if value is None or not first else format_ratio(value / first)
