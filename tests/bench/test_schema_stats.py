"""The result schema: order statistics, the JSON round trip and the exported JSON Schema; the table."""

from __future__ import annotations

import io
import json
import math

import pytest

from edgeport.bench.schema import (
    SCHEMA_VERSION,
    BenchReport,
    BenchResult,
    BenchSettings,
    DeviceInfo,
    Memory,
    ModelInfo,
    json_schema,
    summarize,
)
from edgeport.bench.table import bench_table, format_bytes, format_ms, format_ratio, notes, title


def test_summarize_uses_observed_values_for_percentiles():
    samples = [float(x) for x in range(1, 101)]  # 1..100
    stats = summarize(samples[::-1])
    assert (stats.count, stats.min, stats.max) == (100, 1.0, 100.0)
    assert stats.median == 50.5  # even count: the two middle values' mean
    assert (stats.p90, stats.p99) == (90.0, 99.0)  # nearest rank
    assert stats.mean == 50.5
    assert stats.std == pytest.approx(math.sqrt((100**2 - 1) / 12))


def test_summarize_odd_count_and_single_sample():
    assert summarize([3.0, 1.0, 2.0]).median == 2.0
    one = summarize([7.0])
    assert (one.median, one.p90, one.p99, one.std) == (7.0, 7.0, 7.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])


def report(medians: list[float], **result_fields) -> BenchReport:
    results = [
        BenchResult(
            model=ModelInfo(name=f"m{i}.tflite", path=f"m{i}.tflite", sha256="0" * 64, size_bytes=100 + i),
            runner="host",
            time_kind="host-wall-clock",
            samples_ms=[m, m],
            stats=summarize([m, m]),
            **result_fields,
        )
        for i, m in enumerate(medians)
    ]
    return BenchReport(
        settings=BenchSettings(runner="host", runs=2),
        device=DeviceInfo(kind="host", description="x86_64 Linux, 2 cores"),
        results=results,
    )


def test_report_round_trips_through_json_and_validates_against_its_schema():
    jsonschema = pytest.importorskip("jsonschema")
    original = report([2.0, 3.0], memory=Memory(peak_rss_bytes=1234), notes=["a note"])
    text = original.to_json()
    assert BenchReport.model_validate_json(text) == original
    data = json.loads(text)
    assert data["schema_version"] == SCHEMA_VERSION
    jsonschema.validate(data, json.loads(json_schema()))
    data["results"][0]["stats"].pop("median")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, json.loads(json_schema()))


def test_ratios_are_to_the_first_median():
    assert report([2.0, 3.0, 1.0]).ratios() == [1.0, 1.5, 0.5]
    assert math.isnan(report([0.0, 1.0]).ratios()[1])


def test_formatting():
    assert [format_ms(v) for v in (0.00348, 0.0487, 1.234, 12.34, 1234.5)] == [
        "0.00348",
        "0.0487",
        "1.23",
        "12.3",
        "1234",  # three significant digits, never an exponent
    ]
    assert (format_ms(None), format_ms(0.0), format_ms(math.nan)) == ("-", "0", "-")
    assert [format_bytes(v) for v in (None, 1000, 2048, 3 * 1024 * 1024)] == [
        "-",
        "1000 B",
        "2.0 KiB",
        "3.0 MiB",
    ]
    assert (format_ratio(1.5), format_ratio(math.nan)) == ("1.50x", "-")


def _rendered(table) -> str:
    from rich.console import Console

    console = Console(width=250, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_table_shows_measured_columns_only_and_the_ratio():
    text = _rendered(bench_table(report([2.0, 3.0], memory=Memory(arena_bytes=2048))))
    header = next(line for line in text.splitlines() if "median" in line)
    for column in ("model", "median", "p90", "p99", "min", "max", "std", "arena", "vs first"):
        assert column in header
    cells = [cell.strip() for cell in header.split("┃")]
    for absent in ("peak RSS", "flash", "init", "first", "delegated"):
        assert absent not in cells
    assert "1.50x" in text and "2.0 KiB" in text
    assert "host-wall-clock" in title(report([1.0]))


def test_notes_shared_by_every_result_are_said_once():
    both = report([1.0, 2.0], notes=["same"])
    both.results[1].notes.append("own")
    assert notes(both) == ["same", "m1.tflite: own"]


def _profiled_report_dict(ticks_are: str) -> dict:
    from edgeport.bench.profile import op_profile

    profile = op_profile([(0, "CONV_2D", 30), (1, "ADD", 10)], 0, 45, 0.001, ticks_are)
    return json.loads(report([2.0], profile=profile).to_json())


def test_a_version_1_report_reads_its_profile_as_instructions():
    # Version 1 had no ticks_are: QEMU was the only profiling runner, so its ticks were instructions.
    data = _profiled_report_dict("cycles")
    del data["results"][0]["profile"]["ticks_are"]
    with pytest.raises(ValueError, match="ticks_are"):
        BenchReport.model_validate(data)  # the current version requires it
    data["schema_version"] = 1
    read = BenchReport.model_validate(data)
    assert read.results[0].profile.ticks_are == "instructions"
    assert read.schema_version == SCHEMA_VERSION
    assert read.results[0].profile.ticks == 45
