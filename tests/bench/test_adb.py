"""The adb runner against a stand-in `adb` (tests/fixtures/fake_adb.py) that replays captured
benchmark_model output: device selection, pushes, flags, samples, cleanup, and every bad input."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import sys
from pathlib import Path

import pytest

from edgeport.bench.runner import BenchModel, RunnerOptions, get_runner
from edgeport.bench.schema import BenchReport, BenchSettings, ModelInfo
from edgeport.errors import EdgeportError
from edgeport.targets.android.bench_adb import (
    DEVICE_BINARY,
    MB,
    benchmark_flags,
    cpu_count,
    delegation_of,
    elf_abi,
    parse_devices,
    select_device,
)
from edgeport.targets.android.benchmark_output import parse_benchmark_output
from tests.targets.synth import big_fc_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
OUTPUTS = FIXTURES / "benchmark_model"
ONE_RUN = [str(OUTPUTS / f"litert_one_run_{i}.txt") for i in (1, 2, 3)]


def elf_header(machine: int) -> bytes:
    """The first 64 bytes of a little-endian 64-bit ELF executable for `machine`."""
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    header[16:20] = struct.pack("<HH", 2, machine)
    return bytes(header)


class FakeAdb:
    def __init__(self, config: Path) -> None:
        self.config = config

    def configure(self, **changes) -> None:
        current = json.loads(self.config.read_text()) if self.config.exists() else {}
        current.update(changes)
        self.config.write_text(json.dumps(current))

    def calls(self) -> list[list[str]]:
        log = self.config.with_suffix(".log")
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def shell_commands(self) -> list[str]:
        return [" ".join(call[3:]) for call in self.calls() if call[2:3] == ["shell"]]

    def device_files(self) -> list[str]:
        return json.loads(self.config.with_suffix(".state").read_text())["files"]


@pytest.fixture
def fake_adb(tmp_path, monkeypatch) -> FakeAdb:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "adb"
    script = shlex.quote(str(FIXTURES / "fake_adb.py"))
    wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {script} "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    fake = FakeAdb(tmp_path / "adb.json")
    monkeypatch.setenv("FAKE_ADB_CONFIG", str(fake.config))
    fake.configure(
        devices=[["emulator-5554", "device"]],
        props={
            "ro.product.model": "Pixel 7",
            "ro.product.cpu.abi": "arm64-v8a",
            "ro.product.cpu.abilist": "arm64-v8a,armeabi-v7a,armeabi",
            "ro.build.version.release": "14",
            "ro.soc.model": "Tensor G2",
        },
        sysfs={
            "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "schedutil",
            "/sys/devices/system/cpu/possible": "0-7",
        },
        device_files=[DEVICE_BINARY],
        outputs=ONE_RUN,
    )
    return fake


@pytest.fixture
def model(tmp_path) -> BenchModel:
    path = tmp_path / "kws.tflite"
    data = bytes(range(256)) * 4  # the runner pushes the bytes; it never parses them
    path.write_bytes(data)
    info = ModelInfo(
        name=path.name, path=str(path), sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data)
    )
    return BenchModel(info=info, tflite=path)


def settings(**kw) -> BenchSettings:
    return BenchSettings(runner="adb", **{"runs": 4, "warmup": 2, "threads": 2, **kw})


def test_device_description(fake_adb):
    device = get_runner("adb").device()
    assert device.kind == "android"
    assert (device.abi, device.android_version, device.cpu_governor, device.serial) == (
        "arm64-v8a",
        "14",
        "schedutil",
        "emulator-5554",
    )
    assert device.description == "Pixel 7, arm64-v8a, Android 14"
    assert (device.cpu, device.cores) == ("Tensor G2", 8)


def test_unreadable_governor_and_cpus_are_left_empty(fake_adb):
    fake_adb.configure(sysfs={})
    device = get_runner("adb").device()
    assert device.cpu_governor == "" and device.cores is None


def test_cpu_count_from_the_kernel_cpu_list():
    assert cpu_count("0-7") == 8
    assert cpu_count("0-3,4-5,7") == 7
    assert cpu_count("0") == 1
    assert cpu_count("cat: /sys/devices/system/cpu/possible: Permission denied") is None


def test_session_samples_flags_memory_delegation_and_cleanup(fake_adb, model):
    runner = get_runner("adb:emulator-5554")
    assert runner.time_kind == "device-timer"
    session = runner.open(model, settings())
    try:
        # The first process (fixture 1) gives init and first inference; samples replay 2, 3, 1, 2.
        assert session.init_ms == pytest.approx(5.120) and session.first_ms == pytest.approx(52.310)
        samples = session.run(2) + session.run(2)
        assert samples == pytest.approx([40.210, 43.952, 41.873, 40.210])
        extras = session.finish()
    finally:
        session.close()
    assert extras.memory.footprint_init_bytes == round(1.25781 * MB)
    assert extras.memory.footprint_overall_bytes == round(3.5 * MB)
    assert (extras.delegation.delegate, extras.delegation.delegated_ops, extras.delegation.total_ops) == (
        "xnnpack",
        12,
        14,
    )
    assert any("prints summaries, not per-run times" in note for note in extras.notes)
    runs = [c for c in fake_adb.shell_commands() if c.startswith(DEVICE_BINARY)]
    assert len(runs) == 5
    for command in runs:
        assert "--num_threads=2" in command and "--num_runs=1" in command and "--min_secs=0" in command
        assert "--use_xnnpack=true" in command and "--enable_op_profiling=false" in command
        assert "--graph=/data/local/tmp/edgeport-bench-" in command
    assert all("--warmup_runs=2" in c for c in runs)
    pushed = [c for c in fake_adb.calls() if c[2:3] == ["push"]]
    assert [Path(c[3]).name for c in pushed] == ["kws.tflite"]  # the device's own binary is used
    assert any(c.startswith("rm -rf /data/local/tmp/edgeport-bench-") for c in fake_adb.shell_commands())
    assert fake_adb.device_files() == [DEVICE_BINARY]  # nothing of ours left on the device


def test_given_binary_is_checked_pushed_and_removed(fake_adb, model, tmp_path):
    fake_adb.configure(device_files=[])
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(elf_header(183) + b"\0" * 64)
    runner = get_runner("adb", RunnerOptions(benchmark_binary=binary))
    session = runner.open(model, settings(runs=1, warmup=0))
    try:
        assert session.run(1) == pytest.approx([40.210])
    finally:
        session.close()
    pushed = [Path(c[4]).name for c in fake_adb.calls() if c[2:3] == ["push"]]
    assert pushed == ["model.tflite", "benchmark_model"]
    commands = fake_adb.shell_commands()
    assert any(c.startswith("chmod 755 /data/local/tmp/edgeport-bench-") for c in commands)
    runs = [
        c for c in commands if "/benchmark_model " in c and c.startswith("/data/local/tmp/edgeport-bench-")
    ]
    assert "--warmup_runs=1" in runs[0] and "--warmup_runs=0" in runs[1]  # the probe warms up at least once
    assert fake_adb.device_files() == []


def test_the_cli_names_the_runner(fake_adb):
    assert get_runner("adb").name == "adb"


# ---- bad input: one line naming the problem and the fix


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_adb_missing(monkeypatch, tmp_path, model):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").open(model, settings())
    assert "apt-get install adb" in one_line(exc)


@pytest.mark.parametrize(
    ("devices", "spec", "problem", "fix"),
    [
        ([], "adb", "no Android device is connected", "start an emulator"),
        (
            [["A1", "device"], ["B2", "device"]],
            "adb",
            "2 Android devices are connected (A1, B2)",
            "--on adb:A1",
        ),
        ([["A1", "device"]], "adb:Z9", "no Android device 'Z9'", "--on adb:SERIAL"),
        ([["A1", "unauthorized"]], "adb", "A1 is unauthorized", "Allow USB debugging"),
        ([["A1", "offline"]], "adb:A1", "A1 is offline", "Reconnect"),
    ],
)
def test_device_selection_errors(fake_adb, model, devices, spec, problem, fix):
    fake_adb.configure(devices=devices)
    with pytest.raises(EdgeportError) as exc:
        get_runner(spec).open(model, settings())
    assert problem in one_line(exc) and fix in one_line(exc)


def test_under_edgeport_run_the_errors_name_the_config_keys(fake_adb, model, tmp_path):
    """The harness makes the runner with the wording it is given (`edgeport run` passes its config's
    keys): the same raise sites say `on =`, `benchmark-binary =` and `timeout-s =`, never a CLI flag."""
    from edgeport.bench.harness import bench
    from edgeport.run.config import config_words

    def refusal(binary: Path | None = None, **over) -> str:
        with pytest.raises(EdgeportError) as exc:
            options = RunnerOptions(benchmark_binary=binary)
            bench([model], "adb", settings(**over), options, spell=config_words)
        return one_line(exc)

    fake_adb.configure(device_files=[])  # before the first call: the fake's device keeps its files
    text = refusal()
    assert "no benchmark-binary =" in text and "benchmark-binary = PATH to" in text and "--" not in text
    script = tmp_path / "script"
    script.write_bytes(b"#!/bin/sh\n")
    assert f"benchmark-binary = {script} is not an executable" in refusal(script)
    binary = tmp_path / "benchmark_model"
    binary.write_bytes(elf_header(183))
    fake_adb.configure(hang=True)
    assert "for a slow model raise timeout-s =" in refusal(binary, timeout_s=1)
    fake_adb.configure(devices=[["A1", "device"], ["B2", "device"]])
    text = refusal()
    assert "one with on = adb:SERIAL, e.g. on = adb:A1" in text and "--" not in text


def test_no_benchmark_binary_anywhere(fake_adb, model):
    fake_adb.configure(device_files=[])
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").open(model, settings())
    assert "no benchmark_model on emulator-5554" in one_line(exc) and "--benchmark-binary" in one_line(exc)
    assert not [c for c in fake_adb.calls() if c[2:3] == ["push"]]  # refused before anything was pushed


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "does not exist"),
        (b"#!/bin/sh\necho hi\n", "is not an executable (no ELF header)"),
        (elf_header(62), "is built for x86_64, the device runs arm64-v8a, armeabi-v7a, armeabi"),
    ],
)
def test_bad_benchmark_binary(fake_adb, model, tmp_path, content, problem):
    binary = tmp_path / "benchmark_model"
    if content is not None:
        binary.write_bytes(content)
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb", RunnerOptions(benchmark_binary=binary)).open(model, settings())
    assert problem in one_line(exc) and "--benchmark-binary" in one_line(exc)


def test_failed_run_is_one_line_and_cleans_up(fake_adb, model):
    fake_adb.configure(outputs=[str(OUTPUTS / "error_mmap.txt")])
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").open(model, settings())
    assert "benchmark_model failed on emulator-5554: ERROR: Failed to mmap model" in one_line(exc)
    assert "`adb -s emulator-5554 shell` run benchmark_model --graph=MODEL --num_threads=2" in one_line(exc)
    assert fake_adb.device_files() == [DEVICE_BINARY]


def test_a_tool_that_ignores_min_secs_is_refused(fake_adb, model):
    fake_adb.configure(outputs=[str(OUTPUTS / "tf2_delta_scientific.txt")])
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").open(model, settings())
    assert "ran 50 timed inferences where edgeport asked for 1" in one_line(exc)


def test_hung_benchmark_is_time_limited(fake_adb, model):
    fake_adb.configure(hang=True)
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").open(model, settings(timeout_s=1))
    assert "did not finish in 1 s" in one_line(exc)
    assert any(c.startswith("rm -rf ") for c in fake_adb.shell_commands())


def test_missing_model(fake_adb, tmp_path):
    missing = tmp_path / "gone.tflite"
    info = ModelInfo(name="gone.tflite", path=str(missing), sha256="0" * 64, size_bytes=0)
    with pytest.raises(EdgeportError) as exc:
        get_runner("adb").check(BenchModel(info=info, tflite=missing))
    assert "does not exist" in one_line(exc)


# ---- the pure parts


def test_parse_devices_states():
    text = (
        "* daemon started successfully\nList of devices attached\nemulator-5554\tdevice\n"
        "0A1B\tunauthorized\n1234\tno permissions (user in plugdev group; are your udev rules wrong?)\n\n"
    )
    assert parse_devices(text) == [
        ("emulator-5554", "device"),
        ("0A1B", "unauthorized"),
        ("1234", "no permissions"),
    ]
    assert select_device(parse_devices(text), "emulator-5554") == "emulator-5554"


@pytest.mark.parametrize(
    ("kw", "present", "absent"),
    [
        ({}, ["--use_xnnpack=true"], ["--use_gpu=true", "--use_nnapi=true"]),
        ({"xnnpack": False}, ["--use_xnnpack=false"], ["--use_gpu=true"]),
        ({"delegate": "none"}, ["--use_xnnpack=false"], ["--use_gpu=true"]),
        ({"delegate": "gpu"}, ["--use_gpu=true", "--use_xnnpack=true"], ["--use_nnapi=true"]),
        ({"delegate": "nnapi", "xnnpack": False}, ["--use_nnapi=true", "--use_xnnpack=false"], []),
        ({"threads": 4}, ["--num_threads=4"], []),
    ],
)
def test_benchmark_flags(kw, present, absent):
    flags = benchmark_flags(BenchSettings(runner="adb", **kw), "/x/m.tflite", warmup=3, runs=1)
    assert flags[:1] == ["--graph=/x/m.tflite"] and "--warmup_runs=3" in flags and "--num_runs=1" in flags
    assert all(f in flags for f in present) and not any(f in flags for f in absent)


def test_elf_abi():
    assert elf_abi(elf_header(183)) == "arm64-v8a"
    assert elf_abi(elf_header(40)) == "armeabi-v7a"
    assert elf_abi(b"MZ\x90\x00") is None


def test_delegation_from_each_wording():
    gpu = parse_benchmark_output((OUTPUTS / "litert_logcat_gpu.txt").read_text())
    delegation, _ = delegation_of(gpu, "gpu")
    assert (delegation.delegate, delegation.delegated_ops, delegation.total_ops) == ("gpu", 31, 31)
    old = parse_benchmark_output((OUTPUTS / "tf2_peak_footprint_xnnpack.txt").read_text())
    delegation, notes = delegation_of(old, "xnnpack")
    assert (delegation.delegated_ops, delegation.total_ops) == (29, None) and notes == []
    delegation, notes = delegation_of(old, "gpu")  # GPU asked for, only XNNPACK took nodes
    assert delegation.delegated_ops is None
    assert notes == [
        "TfLiteXNNPackDelegate took 29 nodes",
        "benchmark_model printed no delegation line for gpu",
    ]
    not_taken = parse_benchmark_output(
        "Though NNAPI delegate is explicitly applied, the model graph will not be executed by the delegate."
    )
    assert delegation_of(not_taken, "nnapi")[0].delegated_ops == 0
    silent = parse_benchmark_output("")
    delegation, notes = delegation_of(silent, "gpu")
    assert delegation.delegated_ops is None and "no delegation line" in notes[-1]


def test_tools_name_adb_and_the_binary(fake_adb, tmp_path):
    tools = get_runner("adb").tools()
    assert tools == {
        "adb": "Android Debug Bridge version 1.0.41, Version 34.0.5-fake",
        "benchmark_model": f"{DEVICE_BINARY} (on the device)",
    }
    binary = tmp_path / "benchmark_model"
    assert get_runner("adb", RunnerOptions(benchmark_binary=binary)).tools()["benchmark_model"] == str(binary)


# ---- through the command line


def test_cli_bench_two_models_on_adb(fake_adb, run_cli, tmp_path):
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    a.write_bytes(big_fc_model(16, 8))
    b.write_bytes(big_fc_model(64, 32))
    out = tmp_path / "adb.json"
    code, stdout, stderr = run_cli(
        "bench", a, b, "--on", "adb", "--runs", "3", "--warmup", "2", "--threads", "4", "--json", out
    )
    assert code == 0, stderr
    assert "a.tflite" in stdout and "b.tflite" in stdout and f"wrote {out}" in stdout
    report = BenchReport.model_validate_json(out.read_text())
    assert report.device.description == "Pixel 7, arm64-v8a, Android 14"
    assert report.device.cpu_governor == "schedutil"
    assert report.tools["benchmark_model"] == f"{DEVICE_BINARY} (on the device)"
    replayed = {40.210, 41.873, 43.952}  # the timed inference of each fixture
    for result in report.results:
        assert result.time_kind == "device-timer" and len(result.samples_ms) == 3
        assert {round(x, 3) for x in result.samples_ms} <= replayed
        assert (result.delegation.delegated_ops, result.delegation.total_ops) == (12, 14)
        assert result.init_ms is not None and result.memory.footprint_overall_bytes is not None
    runs = [c for c in fake_adb.shell_commands() if c.startswith(DEVICE_BINARY)]
    assert len(runs) == 2 + 2 * 3 and all("--num_threads=4" in c for c in runs)
    assert fake_adb.device_files() == [DEVICE_BINARY]


@pytest.mark.parametrize(
    ("spec", "devices", "message"),
    [
        ("adb", [], "no Android device is connected"),
        ("adb:XYZ", [["A1", "device"]], "no Android device 'XYZ'"),
    ],
)
def test_cli_bad_device_is_one_line_exit_1(fake_adb, run_cli, tmp_path, spec, devices, message):
    fake_adb.configure(devices=devices)
    model = tmp_path / "a.tflite"
    model.write_bytes(big_fc_model(16, 8))
    code, stdout, stderr = run_cli("bench", model, "--on", spec, "--json", tmp_path / "r.json")
    assert code == 1 and message in stderr and len(stderr.strip().splitlines()) == 1
    assert stdout == "" and not (tmp_path / "r.json").exists()
