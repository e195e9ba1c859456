"""`edgeport bench --on qemu:BOARD` for real: TFLite Micro (the offline bundle, or EDGEPORT_TFLM_ROOT) built
for the board, the firmware run in QEMU, its timing lines read back into the report."""

from __future__ import annotations

import json

import pytest

from edgeport.bench.schema import BenchReport
from edgeport.targets.cortex_m.boards import get_board
from edgeport.targets.cortex_m.fit import DEFAULT_STACK
from edgeport.tflite_file import read_tflite
from tests.conftest import shared_path

RUNS = 3


@pytest.mark.parametrize("board", ["mps2-an386", "corstone-300"])  # Cortex-M4 and Cortex-M55
def test_bench_on_qemu_reports_instruction_estimates_and_memory(board, tflm_root, run_cli, tmp_path):
    model = shared_path("models", "tflite", "mlperf_tiny_kws_dscnn_int8.tflite")
    out = tmp_path / "report.json"
    code, stdout, stderr = run_cli(
        "bench", model, "--on", f"qemu:{board}", "--tflm-root", tflm_root, "--runs", RUNS, "--warmup", 1,
        "--timeout-s", 900, "--json", out,
    )  # fmt: skip
    assert code == 0, stderr
    report = BenchReport.model_validate(json.loads(out.read_text()))
    the_board = get_board(board)
    assert report.device.kind == "qemu" and report.device.clock_hz == the_board.clock_hz
    (result,) = report.results
    assert result.runner == f"qemu:{board}" and result.time_kind == "instruction-estimate"
    assert len(result.samples_ms) == len(result.ticks) == RUNS and result.stats.count == RUNS
    # Each time is its instruction count at one instruction per cycle of the board's clock.
    for ms, ticks in zip(result.samples_ms, result.ticks, strict=True):
        assert ms == pytest.approx(ticks * 1000 / the_board.clock_hz)
    # 2.7 M multiply-accumulates: far more than 1e5 instructions; the same input every time, so
    # the emulated counts of the timed inferences hardly differ.
    assert min(result.ticks) > 100_000 and max(result.ticks) <= 1.1 * min(result.ticks)
    assert result.first_ms is not None and result.first_ms > 0
    memory = result.memory
    assert 0 < memory.stack_bytes < DEFAULT_STACK
    assert 0 < memory.arena_bytes and memory.ram_bytes >= memory.arena_bytes + memory.stack_bytes
    assert model.stat().st_size < memory.flash_bytes < the_board.flash_bytes
    assert result.delegation.delegate == "cmsis-nn"
    assert any("instruction-estimate" in note for note in result.notes)
    assert "qemu:" + board in stdout and "instruction" in stdout  # the table and its notes


def test_profile_on_qemu_times_every_op_of_the_model(tflm_root, run_cli, tmp_path):
    """--profile: the firmware built with TFLite Micro's MicroProfiler (on the Cortex-M7 machine, the one the
    pruning benchmark uses) reports each op of the model, in graph order, with instructions of its own."""
    model = shared_path("models", "tflite", "mlperf_tiny_kws_dscnn_int8.tflite")
    out = tmp_path / "report.json"
    code, stdout, stderr = run_cli(
        "bench", model, "--on", "qemu:mps2-an500", "--tflm-root", tflm_root, "--runs", 2, "--warmup", 0,
        "--timeout-s", 900, "--profile", "--json", out,
    )  # fmt: skip
    assert code == 0, stderr
    (result,) = BenchReport.model_validate(json.loads(out.read_text())).results
    profile = result.profile
    assert profile is not None and profile.inference == 1 and profile.ticks == result.ticks[1]
    assert [op.op for op in profile.ops] == read_tflite(model).ops  # every op, in the order it ran
    assert [op.index for op in profile.ops] == list(range(len(profile.ops)))
    assert all(op.ticks > 0 for op in profile.ops)
    assert {t.op for t in profile.by_type} == set(read_tflite(model).ops)
    shares = sum(t.share for t in profile.by_type) + profile.outside_ticks / profile.ticks
    assert shares == pytest.approx(1.0, abs=0.01) and 0 <= profile.outside_ticks < profile.ticks
    assert "per-op profile" in stdout and "CONV_2D" in stdout and "MicroProfiler" in stdout
