"""The `tflm` runner for real (TFLite Micro's Python runtime on the host) on tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.bench.harness import bench
from edgeport.bench.models import resolve_model
from edgeport.bench.runner import RunnerOptions, get_runner
from edgeport.bench.schema import BenchSettings
from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m.bench_tflm import model_inputs
from edgeport.tflite_file import read_tflite
from tests.conftest import shared_path
from tests.targets.synth import big_fc_model, unsupported_op_model


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "fc.tflite"
    path.write_bytes(big_fc_model(16, 8))
    return path


def test_models_run_one_after_the_other_with_arena_and_host_time(tiny):
    hello = shared_path("models", "tflite", "tflm_hello_world_int8.tflite")
    report = bench([tiny, hello], "tflm", BenchSettings(runner="tflm", runs=3, warmup=2))
    assert report.device.kind == "tflm-host" and "tflite-micro" in report.tools
    for result in report.results:
        assert result.time_kind == "host-wall-clock" and len(result.samples_ms) == 3
        assert result.init_ms > 0 and result.first_ms > 0 and all(t > 0 for t in result.samples_ms)
        assert result.memory.arena_bytes > 0 and result.delegation.delegate == "reference"
        assert any("not a board time" in note for note in result.notes)
    # The shared README measured hello_world_int8's RecordingMicroAllocator total at 1,504 bytes; the
    # smallest arena that allocates and invokes is at least that.
    assert report.results[1].memory.arena_bytes >= 1504


def test_a_model_with_an_op_tflm_lacks_is_refused_before_anything_runs(tmp_path, tiny):
    bad = tmp_path / "topk.tflite"
    bad.write_bytes(unsupported_op_model())
    with pytest.raises(EdgeportError, match="topk.tflite: TFLite Micro has no kernel for op TOPK_V2") as err:
        bench([tiny, bad], "tflm", BenchSettings(runner="tflm", runs=2))
    assert "--on host" in str(err.value) and "\n" not in str(err.value)


def test_under_a_config_its_refusals_name_the_config_keys(tmp_path, tiny):
    """`edgeport run` makes the runner with its config's wording: no CLI flag in these messages."""
    from edgeport.run.config import config_words

    def refusal(models: list[Path], **over) -> EdgeportError:
        with pytest.raises(EdgeportError) as err:
            bench(models, "tflm", BenchSettings(runner="tflm", runs=2, **over), spell=config_words)
        assert "--" not in str(err.value)
        return err.value

    bad = tmp_path / "topk.tflite"
    bad.write_bytes(unsupported_op_model())
    assert refusal([tiny, bad]).fix.startswith("measure it on = host (LiteRT)")
    threads = refusal([tiny], threads=2)
    assert threads.problem == "threads = does not apply to on = tflm" and threads.fix == "drop threads ="
    assert refusal([tiny], xnnpack=False).problem == "xnnpack = does not apply to on = tflm"


def test_the_cli_reports_it_in_one_line(run_cli, tmp_path):
    bad = tmp_path / "topk.tflite"
    bad.write_bytes(unsupported_op_model())
    code, stdout, stderr = run_cli("bench", bad, "--on", "tflm", "--json", tmp_path / "r.json")
    assert code == 1 and "TOPK_V2" in stderr and len(stderr.strip().splitlines()) == 1
    assert stdout == "" and not (tmp_path / "r.json").exists()


def test_a_session_hands_out_only_what_it_measured(tiny):
    session = get_runner("tflm").open(
        resolve_model(str(tiny)), BenchSettings(runner="tflm", runs=2, warmup=0)
    )
    assert len(session.run(1)) == 1 and len(session.run(1)) == 1
    with pytest.raises(EdgeportError, match="asked for 1 more runs, 0 were measured"):
        session.run(1)
    session.close()


def test_inputs_are_seeded_and_of_each_inputs_type(tiny):
    model = read_tflite(tiny)
    first, again = model_inputs(model), model_inputs(model)
    assert first[0].dtype.name == "int8" and first[0].shape == (1, 16) and (first[0] == again[0]).all()


def test_tflm_takes_no_argument():
    with pytest.raises(EdgeportError, match="--on tflm takes no argument"):
        get_runner("tflm:x", RunnerOptions())
