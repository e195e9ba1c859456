"""The benchmark_model output parser on every wording the tool has printed (fixtures say which version)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from edgeport.targets.android.benchmark_output import (
    RunStats,
    delegate_kind,
    parse_benchmark_output,
    parse_stats_line,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmark_model"


def parse_fixture(name: str):
    return parse_benchmark_output((FIXTURES / name).read_text())


def test_every_fixture_says_which_tool_version_printed_it():
    for path in sorted(FIXTURES.glob("*.txt")):
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and any(w in first for w in ("TensorFlow", "LiteRT")), path.name


def test_tf1_no_stats_totals_and_warmup_first():
    out = parse_fixture("tf1_no_stats.txt")
    assert out.timings_wording == "v1"
    assert (out.init_us, out.warmup_avg_us, out.inference_avg_us) == (9933, 76605.9, 66767.6)
    assert out.first_us == 127425  # the TF 1.x totals have none: the warm-up's first run
    assert [r.count for r in out.runs] == [7, 15]
    assert out.timed == RunStats(15, 66753, 66800, 66699, 66838, 66767.6, 39)
    assert out.footprint_wording is None and out.replacements == [] and out.complete


def test_tf1_android_app_grep_has_totals_only():
    out = parse_fixture("tf1_android_app_logcat.txt")
    assert (out.warmup_avg_us, out.init_us, out.inference_avg_us) == (91471, 4108, 80660.1)
    assert out.runs == [] and out.timed is None and out.first_us is None


def test_tf2_peak_footprint_and_old_delegate_line():
    out = parse_fixture("tf2_peak_footprint_xnnpack.txt")
    assert out.timings_wording == "v2"
    assert (out.init_us, out.first_us, out.warmup_avg_us, out.inference_avg_us) == (
        18738,
        140706,
        85791.2,
        74481.6,
    )
    assert out.footprint_wording == "peak"
    assert (out.footprint_init_mb, out.footprint_overall_mb) == (6.44141, 64.8633)
    (rep,) = out.replacements
    assert (rep.delegate, rep.replaced, rep.total, rep.partitions) == ("TfLiteXNNPackDelegate", 29, None, 4)
    (applied,) = out.applied
    assert (applied.delegate, applied.extent, applied.kernels) == ("XNNPACK", "partially", 2)
    assert out.timed.p5 is None and out.timed.median is None


def test_tf2_scientific_notation_and_single_warmup_run():
    out = parse_fixture("tf2_delta_scientific.txt")
    assert out.inference_avg_us == pytest.approx(2.95034e6)
    assert out.warmup_avg_us == pytest.approx(3.51239e6)
    warm, timed = out.runs
    assert warm.count == 1 and warm.curr == 3512391 and warm.all_same
    assert timed.avg == pytest.approx(2950340.0) and timed.std == 109798 and timed.max == 3189954
    assert out.footprint_wording == "delta"
    assert (out.footprint_init_mb, out.footprint_overall_mb) == (4.21094, 46.0859)


def test_litert_percentiles_prefixes_and_peak_monitor():
    out = parse_fixture("litert_percentiles_peak.txt")
    timed = out.timed
    assert (timed.count, timed.p5, timed.median, timed.p95) == (337, 2647, 2781, 3169)
    assert (timed.min, timed.max, timed.avg, timed.std) == (2605, 20356, 2942.27, 1190)
    assert out.peak_monitor_mb == 46.9102
    assert (out.footprint_init_mb, out.footprint_overall_mb) == (39.4531, 40.8281)
    (rep,) = out.replacements
    assert (rep.replaced, rep.total, rep.partitions) == (29, 31, 4)
    assert out.error_lines == []


def test_litert_logcat_gpu_fully_delegated():
    out = parse_fixture("litert_logcat_gpu.txt")
    (rep,) = out.replacements
    assert delegate_kind(rep.delegate) == "gpu" and (rep.replaced, rep.total) == (31, 31)
    assert out.applied[0].extent == "completely"
    warm, timed = out.runs
    assert warm.count == 1 and warm.median == 2732148
    assert timed.count == 10 and timed.avg == pytest.approx(2.71985e6) and timed.median == 2709263
    assert out.init_us == 458883 and out.footprint_overall_mb == 337


def test_all_same_runs():
    out = parse_fixture("tf2_all_same.txt")
    warm, timed = out.runs
    assert warm.count == 3 and warm.all_same and warm.min == warm.max == 1000
    assert timed == RunStats(5, 1000, 1000, 1000, 1000, 1000, 0.0, all_same=True)


def test_one_run_fixtures_have_one_timed_sample():
    for i, curr in ((1, 41873), (2, 40210), (3, 43952)):
        out = parse_fixture(f"litert_one_run_{i}.txt")
        assert out.timed.count == 1 and out.timed.curr == curr == out.inference_avg_us
        assert out.runs[0].count == 2


def test_failed_run_keeps_the_error_lines():
    out = parse_fixture("error_mmap.txt")
    assert not out.complete and out.runs == []
    assert out.error_lines[-1] == "ERROR: Benchmarking failed."
    assert "Failed to mmap model" in out.error_lines[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("count=0", RunStats(count=0)),
        ("INFO: count=0 p5=0 median=0 p95=0", RunStats(count=0)),
        ("count=2 curr=7(all same) p5=7 median=7 p95=7", RunStats(2, 7, 7, 7, 7, 7, 0.0, 7, 7, 7, True)),
        ("count=3 first=1.5e+06 curr=2e6 min=1E6 max=2e+06 avg=1.5e+06 std=408248", None),
        ("Running benchmark for at least 1 iterations", "none"),
    ],
)
def test_stats_line_forms(line, expected):
    parsed = parse_stats_line(line)
    if expected == "none":
        assert parsed is None
    elif expected is None:
        assert parsed.count == 3 and parsed.first == 1.5e6 and parsed.min == 1e6 and parsed.max == 2e6
    else:
        assert parsed == expected


def test_nan_average_of_empty_warmup_is_parsed():
    out = parse_benchmark_output(
        "Inference timings in us: Init: 100, First inference: 0, Warmup (avg): -nan, Inference (avg): 2000"
    )
    assert math.isnan(out.warmup_avg_us) and out.inference_avg_us == 2000


def test_delegate_kinds():
    assert delegate_kind("TfLiteXNNPackDelegate") == "xnnpack"
    assert delegate_kind("TfLiteNnapiDelegate") == "nnapi"
    assert delegate_kind("GPU") == "gpu"
    assert delegate_kind("TfLiteHexagonDelegate") == "tflitehexagondelegate"
