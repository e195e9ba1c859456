"""`edgeport bench` end to end on the host runner, the JSON it writes, --schema, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeport.bench.schema import BenchReport, json_schema
from edgeport.outdir import write_files
from tests.targets.synth import big_fc_model


@pytest.fixture
def two(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.tflite", tmp_path / "b.tflite"
    a.write_bytes(big_fc_model(16, 8))
    b.write_bytes(big_fc_model(64, 32))
    return a, b


def test_two_models_on_the_host_print_ratios_and_write_valid_json(run_cli, two, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    out = tmp_path / "out.json"
    code, stdout, stderr = run_cli(
        "bench", *two, "--on", "host", "--runs", "5", "--warmup", "1", "--json", out
    )
    assert code == 0, stderr
    assert "vs first" in stdout and "1.00x" in stdout and "a.tflite" in stdout and "b.tflite" in stdout
    assert f"wrote {out}" in stdout
    data = json.loads(out.read_text())
    jsonschema.validate(data, json.loads(json_schema()))
    report = BenchReport.model_validate(data)
    assert [r.model.name for r in report.results] == ["a.tflite", "b.tflite"]
    assert all(len(r.samples_ms) == 5 for r in report.results)
    assert (report.settings.runs, report.settings.warmup, report.settings.runner) == (5, 1, "host")
    assert list(tmp_path.glob(".out.json.*")) == []  # no temporary left behind


def test_schema_prints_the_json_schema(run_cli):
    code, stdout, _ = run_cli("bench", "--schema")
    assert code == 0 and json.loads(stdout)["title"] == "BenchReport"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--on", "nowhere"], "unknown runner 'nowhere'"),
        (["--on", "qemu"], "--on qemu needs a BOARD"),
        ([], "no runner given"),
        (["--on", "host", "--runs", "0"], "--runs"),
        (["--on", "host", "--json", "no/such/dir/out.json"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(run_cli, two, args, message):
    code, stdout, stderr = run_cli("bench", two[0], *args)
    assert code == 1 and message in stderr
    assert len(stderr.strip().splitlines()) == 1 and stdout == ""


def test_missing_model_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "out.json"
    code, _, stderr = run_cli("bench", tmp_path / "missing.tflite", "--on", "host", "--json", out)
    assert code == 1 and "missing.tflite does not exist" in stderr and not out.exists()


def test_no_model_is_one_line(run_cli):
    code, _, stderr = run_cli("bench", "--on", "host")
    assert code == 1 and "no model given" in stderr


def test_write_files_leaves_the_old_file_when_interrupted(tmp_path, monkeypatch):
    target = tmp_path / "r.json"
    write_files({target: "old"})

    def interrupted(*_args):
        raise KeyboardInterrupt

    monkeypatch.setattr("os.replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_files({target: "new"})
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


QEMU = "qemu:mps2-an386"
NO_PORT = "serial:/dev/edgeport-no-such-port"  # opening it would fail: the refusal comes first


@pytest.mark.parametrize(
    "on, flags, refused",
    [
        ("host", ["--delegate", "gpu"], "--delegate"),
        ("tflm", ["--threads", "2"], "--threads"),
        ("tflm", ["--no-xnnpack"], "--no-xnnpack"),
        (QEMU, ["--threads", "2"], "--threads"),
        (QEMU, ["--no-xnnpack"], "--no-xnnpack"),
        (QEMU, ["--delegate", "none"], "--delegate"),
        (NO_PORT, ["--threads", "4"], "--threads"),
        (NO_PORT, ["--delegate", "gpu"], "--delegate"),
        ("host", ["--profile"], "--profile"),  # only the firmware (qemu, serial) has a per-op profiler
        ("tflm", ["--profile"], "--profile"),
    ],
)
def test_a_setting_the_runner_does_not_use_is_refused(run_cli, two, stand_in_tflm, on, flags, refused):
    """Before any model is checked, built or run: the qemu runner would need its tools, the serial one
    its port; one line, exit 1, no report written."""
    out = two[0].parent / "r.json"
    code, stdout, stderr = run_cli(
        "bench", two[0], "--on", on, *flags, "--tflm-root", stand_in_tflm, "--json", out
    )
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert f"{refused} does not apply to --on {on}. Drop {refused}." in stderr
    assert not out.exists() and [p.name for p in stand_in_tflm.iterdir()] == ["tensorflow"]


@pytest.mark.parametrize("on", [QEMU, NO_PORT])
def test_under_edgeport_run_it_is_a_config_problem_before_any_work(run_cli, tmp_path, stand_in_tflm, on):
    """The config names the keys (`threads =`, `on =`), and the run stops before converting anything."""
    (tmp_path / "net.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n")
    config = tmp_path / "edgeport.toml"
    config.write_text(
        '[model]\nsource = "net.py:build"\ninput-shape = "1,4"\n[targets.cortex-m]\nboard = "mps2-an386"\n'
        f'[bench]\non = ["{on}"]\nthreads = 2\ntflm-root = "{stand_in_tflm}"\n'
    )
    before = sorted(tmp_path.rglob("*"))
    code, stdout, stderr = run_cli("run", config, "-o", tmp_path / "out")
    assert code == 1 and stdout == "" and len(stderr.strip().splitlines()) == 1
    assert f"[bench] threads = does not apply to on = {on}. Drop threads =." in stderr
    assert "--" not in stderr and sorted(tmp_path.rglob("*")) == before
