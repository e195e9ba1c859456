"""The `host` runner for real (LiteRT in a child process per model) on tiny models; its pure helpers."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from edgeport.bench.harness import bench
from edgeport.bench.hostinfo import cpu_model, host_device
from edgeport.bench.models import resolve_model
from edgeport.bench.runner import RunnerOptions, get_runner
from edgeport.bench.schema import BenchSettings
from edgeport.errors import EdgeportError
from edgeport.runtimes.litert import delegated_nodes
from edgeport.targets.android.bench_host import input_values, peak_rss_bytes
from tests.conftest import shared_path
from tests.targets.synth import Graph, T, big_fc_model, fully_connected


@pytest.fixture
def tiny(tmp_path) -> Path:
    path = tmp_path / "fc.tflite"
    path.write_bytes(big_fc_model(16, 8))
    return path


def test_two_models_measured_in_their_own_processes(tiny):
    float_model = shared_path("models", "tflite", "tflm_hello_world_float.tflite")
    settings = BenchSettings(runner="host", runs=4, warmup=1)
    report = bench([tiny, float_model], "host", settings)
    assert report.device.kind == "host" and report.device.cores and "ai-edge-litert" in report.tools
    for result, nodes in zip(report.results, (1, 3), strict=True):
        assert result.time_kind == "host-wall-clock" and len(result.samples_ms) == 4
        assert all(t > 0 for t in result.samples_ms) and result.init_ms > 0 and result.first_ms > 0
        assert result.memory.peak_rss_bytes > 10 * 2**20  # a Python process with LiteRT loaded
        assert result.delegation.delegate == "xnnpack" and result.delegation.total_ops == nodes
        assert 0 <= result.delegation.delegated_ops <= nodes
    # XNNPACK takes every node of the float sine model (three FULLY_CONNECTED)
    assert report.results[1].delegation.delegated_ops == 3


def test_xnnpack_off_runs_the_builtin_kernels(tiny):
    report = bench([tiny], "host", BenchSettings(runner="host", runs=2, warmup=0, xnnpack=False, threads=2))
    delegation = report.results[0].delegation
    assert (delegation.delegate, delegation.delegated_ops, delegation.total_ops) == ("none", 0, 1)
    assert report.settings.threads == 2


def custom_op_model() -> bytes:
    g = Graph()
    x = g.tensor([1, 16], T.INT8)
    y = fully_connected(g, x, 16, 8)
    z = g.tensor([1, 8], T.INT8)
    g.op(32, [y], [z], custom="EdgeportNoSuchOp")  # BuiltinOperator.CUSTOM
    return g.build([x], [z])


def test_a_model_litert_cannot_run_is_one_line(tmp_path):
    path = tmp_path / "custom.tflite"
    path.write_bytes(custom_op_model())
    with pytest.raises(EdgeportError, match="custom.tflite: LiteRT cannot run the model") as err:
        bench([path], "host", BenchSettings(runner="host", runs=2))
    assert "\n" not in str(err.value)


def test_a_child_that_dies_is_a_one_line_error_and_is_reaped(tiny):
    runner = get_runner("host")
    session = runner.open(resolve_model(str(tiny)), BenchSettings(runner="host", runs=2, warmup=0))
    try:
        session._proc.kill()
        with pytest.raises(EdgeportError, match=r"crashed \(signal 9\)"):
            session.run(2)
    finally:
        session.close()
    assert session._proc.returncode is not None


def test_cannot_run_fixes_name_the_runner_as_the_cli_or_the_config_writes_it(tmp_path, tiny):
    """The check's refusal and a session's errors (a crash, no answer in time) alike: `--on tflm` and
    `--timeout-s` from `edgeport bench`, `on = tflm` and `timeout-s =` under `edgeport run`."""
    from edgeport.run.config import config_words

    path = tmp_path / "custom.tflite"
    path.write_bytes(custom_op_model())
    for spell, on, timeout in ((None, "--on", "--timeout-s"), (config_words, "on =", "timeout-s =")):
        words = {} if spell is None else {"spell": spell}
        with pytest.raises(EdgeportError) as refused:
            bench([path], "host", BenchSettings(runner="host", runs=2), **words)
        assert refused.value.fix.startswith(f"a model made for TFLite Micro alone can be measured {on} tflm ")
        runner = get_runner("host", **words)
        for fault in (signal.SIGKILL, signal.SIGSTOP):  # a stopped child never answers
            session = runner.open(resolve_model(str(tiny)), BenchSettings(runner="host", runs=2, warmup=0))
            try:
                os.kill(session._proc.pid, fault)
                if fault == signal.SIGSTOP:
                    session.timeout_s = 0.2  # a killed child's end is read at once, however long it takes
                with pytest.raises(EdgeportError) as failed:
                    session.run(2)
            finally:
                session.close()
            wanted = f"{on} tflm or {on} qemu:BOARD" if fault == signal.SIGKILL else f"raise {timeout}, "
            assert wanted in failed.value.fix
            assert ("--" in failed.value.fix) == (spell is None)


def test_under_a_config_an_unused_setting_names_its_key(tiny):
    from edgeport.run.config import config_words

    with pytest.raises(EdgeportError) as err:
        bench([tiny], "host", BenchSettings(runner="host", runs=2, delegate="gpu"), spell=config_words)
    assert err.value.problem == "delegate = does not apply to on = host"
    assert err.value.fix == "drop delegate ="


def test_host_takes_no_argument():
    with pytest.raises(EdgeportError, match="--on host takes no argument"):
        get_runner("host:x", RunnerOptions())


def test_delegated_nodes_walks_each_partition_back_to_its_inputs():
    def op(index, name, inputs, outputs):
        return {"index": index, "op_name": name, "inputs": inputs, "outputs": outputs}

    ops = [
        op(0, "CONV_2D", [0, 10], [1]),
        op(1, "RESHAPE", [1], [2]),
        op(2, "FULLY_CONNECTED", [2, 11], [3]),
        op(3, "SOFTMAX", [3], [4]),
        op(4, "DELEGATE", [0, 10], [1]),  # took CONV_2D
        op(5, "DELEGATE", [2, 11], [3]),  # took FULLY_CONNECTED
    ]
    assert delegated_nodes(ops) == (2, 4)
    assert delegated_nodes(ops[:4]) == (0, 4)
    whole = [*ops[:4], op(4, "DELEGATE", [0, 10, 11], [4])]
    assert delegated_nodes(whole) == (4, 4)


def test_host_helpers():
    assert cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n") == "AMD EPYC 7B13"
    assert cpu_model("Hardware\t: BCM2835\n") == "BCM2835" and cpu_model("") == ""
    assert peak_rss_bytes("Name:\tpython\nVmHWM:\t   2048 kB\n") == 2048 * 1024
    assert peak_rss_bytes() > 0
    assert host_device().cores
    details = [{"name": "x", "shape": [1, 4], "dtype": np.int8}]
    first, again = input_values(details, 0), input_values(details, 0)
    assert first[0].dtype.name == "int8" and first[0].shape == (1, 4) and (first[0] == again[0]).all()


def test_closing_a_session_mid_request_kills_its_child(tiny):
    session = get_runner("host").open(resolve_model(str(tiny)), BenchSettings(runner="host", warmup=0))
    session._send("run 100000000")  # minutes of work: the close below interrupts it
    session.close()
    assert session._proc.returncode == -9


def test_closing_an_idle_session_lets_its_child_exit(tiny):
    session = get_runner("host").open(resolve_model(str(tiny)), BenchSettings(runner="host", warmup=0))
    assert len(session.run(2)) == 2
    session.close()
    assert session._proc.returncode == 0


def test_a_model_only_tflite_micro_loads_is_refused_at_check(tiny):
    person = shared_path("models", "tflite", "tflm_person_detect.tflite")  # per-channel axis LiteRT refuses
    with pytest.raises(EdgeportError, match="tflm_person_detect.tflite: LiteRT cannot run the model") as err:
        get_runner("host").check(resolve_model(str(person)))
    assert "--on tflm" in str(err.value) and "\n" not in str(err.value)
