"""The serial runner over a pseudo-terminal pair: the test plays the board, which (re)starts and prints
its firmware lines when the runner opens the port and pulses DTR. Lines are written before the runner
reads them, or by a writer thread that is joined: nothing depends on scheduling."""

from __future__ import annotations

import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from edgeport.bench.runner import BenchModel, RunnerOptions, get_runner
from edgeport.bench.schema import BenchSettings, ModelInfo
from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m import bench_serial
from edgeport.targets.cortex_m.model_data import crc32_of

pytest.importorskip("serial")

CLOCK_HZ = 64_000_000


@pytest.fixture
def model(tmp_path) -> BenchModel:
    path = tmp_path / "kws_int8.tflite"
    data = bytes(random.Random(5).randrange(256) for _ in range(3000))
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    return BenchModel(ModelInfo(name=path.name, path=str(path), sha256=digest, size_bytes=len(data)), path)


@pytest.fixture
def pty_board(monkeypatch):
    """(write, port name): `write(data)` is what the board prints when the runner resets it."""
    master, slave = os.openpty()
    printed: list[bytes] = []
    threads: list[threading.Thread] = []
    original = bench_serial._pulse_reset

    def reset_and_boot(port):
        original(port)  # a pseudo-terminal has no DTR line: the pulse is skipped, as on such bridges
        for data in printed:
            if callable(data):
                thread = threading.Thread(target=data, args=(master,))
                thread.start()
                threads.append(thread)
            else:
                os.write(master, data)

    monkeypatch.setattr(bench_serial, "_pulse_reset", reset_and_boot)
    yield printed, os.ttyname(slave)
    for thread in threads:
        thread.join()
    os.close(master)
    os.close(slave)


def firmware_lines(
    model: Path,
    cycles: list[int],
    warmup: int = 1,
    crc: int | None = None,
    eol="\n",
    profile: list[str] | None = None,
) -> bytes:
    """What the firmware prints after a reset; `profile`: the lines a BENCH_PROFILE=1 build prints after the
    timed inferences (PROFILE_LINES)."""
    crc = crc32_of(model) if crc is None else crc
    size = model.stat().st_size
    lines = [
        "edgeport self-test",
        f"model: {size} bytes, crc32 0x{crc:08x} ({'ok' if crc == crc32_of(model) else 'MISMATCH'})",
        "arena: 5312 of 8192 bytes used",
        f"latency: 912345 cycles (DWT), {912345 // 64} us at 64 MHz",
        "PASS",
        f"edgeport bench: warmup=1 runs={len(cycles)} clock_hz={CLOCK_HZ} source=DWT",
        *(f"inference {i}: {c} cycles" for i, c in enumerate(cycles)),
        *(profile or []),
        "stack: 1820 bytes used",
        "edgeport bench: done",
    ]
    return "".join(line + eol for line in lines).encode()


def seeded_cycles(n: int, seed: int = 3) -> list[int]:
    rng = random.Random(seed)
    return [800_000 + rng.randrange(5_000) for _ in range(n)]


def settings(**kw) -> BenchSettings:
    return BenchSettings(runner="serial:X", **{"runs": 8, "warmup": 1, "timeout_s": 30, **kw})


def test_reads_a_whole_run(pty_board, model):
    printed, port = pty_board
    cycles = seeded_cycles(8)
    printed.append(firmware_lines(model.tflite, cycles, eol="\r\n"))
    runner = get_runner(f"serial:{port}")
    assert runner.time_kind == "device-timer" and not runner.interleaves
    assert runner.device().serial == port
    session = runner.open(model, settings())
    samples = session.run(8)
    extras = session.finish()
    session.close()
    assert samples == pytest.approx([c * 1000 / CLOCK_HZ for c in cycles])
    assert session.first_ms == pytest.approx(912345 * 1000 / CLOCK_HZ) and session.init_ms is None
    assert extras.ticks == cycles
    assert (extras.memory.arena_bytes, extras.memory.stack_bytes) == (5312, 1820)
    assert "DWT cycle counter at 64 MHz" in extras.notes[0]


def test_the_board_printing_while_the_runner_reads(pty_board, model):
    printed, port = pty_board
    cycles = seeded_cycles(6, seed=8)
    data = firmware_lines(model.tflite, cycles)

    def board(master):
        for line in data.splitlines(keepends=True):
            os.write(master, line)

    printed.append(board)
    session = get_runner(f"serial:{port}").open(model, settings(runs=6))
    assert session.run(6) == pytest.approx([c * 1000 / CLOCK_HZ for c in cycles])


def test_a_reset_mid_run_starts_over(pty_board, model):
    printed, port = pty_board
    first, second = seeded_cycles(8, seed=1), seeded_cycles(8, seed=2)
    cut = firmware_lines(model.tflite, first).split(b"inference 3:")[0]
    printed += [cut, firmware_lines(model.tflite, second)]
    session = get_runner(f"serial:{port}").open(model, settings())
    assert session.run(8) == pytest.approx([c * 1000 / CLOCK_HZ for c in second])


def test_fewer_runs_than_the_firmware_times(pty_board, model):
    printed, port = pty_board
    cycles = seeded_cycles(10)
    printed.append(firmware_lines(model.tflite, cycles))
    session = get_runner(f"serial:{port}").open(model, settings(runs=4))
    assert session.run(4) == pytest.approx([c * 1000 / CLOCK_HZ for c in cycles[:4]])
    extras = session.finish()
    assert extras.ticks == cycles[:4] and "first 4 of the 10" in extras.notes[-1]


# ---- bad input and broken streams: one line naming the problem and the fix


def one_line(exc: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(exc.value)
    return str(exc.value)


def test_more_runs_than_the_firmware_times(pty_board, model):
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(10)))
    session = get_runner(f"serial:{port}").open(model, settings(runs=50))
    with pytest.raises(EdgeportError) as exc:
        session.run(50)
    assert "times 10 inferences a boot, 50 were asked" in one_line(exc) and "--runs 10" in one_line(exc)
    assert "edgeport flash PACKAGE_DIR --board BOARD --bench-runs 50" in one_line(exc)


def test_truncated_stream(pty_board, model):
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(10)).split(b"inference 3:")[0])
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings(timeout_s=2))
    assert "printed 3 timed inferences but no 'edgeport bench: done' within 2 s" in one_line(exc)
    assert "reset it" in one_line(exc)


def test_silent_port(pty_board, model):
    _, port = pty_board
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}", RunnerOptions(baud=9600)).open(model, settings(timeout_s=0.5))
    text = one_line(exc)
    assert f"no output from {port} in 0.5 s" in text
    assert "--on serial:PORT" in text and "edgeport flash" in text and "--baud, now 9600" in text


def test_wrong_baud_garbage(pty_board, model):
    printed, port = pty_board
    rng = random.Random(17)
    printed.append(bytes(rng.choice(b"\x80\x8f\xe0\xf8\xfe\x1c\x9a\r\n") for _ in range(300)))
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings(timeout_s=2))
    assert "sent 300 bytes but no 'edgeport bench:' timing line" in one_line(exc)
    assert "--baud (115200)" in one_line(exc)


def test_a_port_that_never_stops_talking_still_times_out(pty_board, model):
    printed, port = pty_board
    stop = threading.Event()

    def chatty(master):
        os.set_blocking(master, False)  # a full buffer must not block the thread past the test
        while not stop.is_set():
            try:
                os.write(master, b"[app] sensor 17 ok\n")
            except BlockingIOError:
                pass
            stop.wait(0.005)  # a board's pace, not a busy loop

    printed += [b"[app] boot\n", chatty]  # one line before the reader starts, then more and more
    try:
        with pytest.raises(EdgeportError) as exc:
            get_runner(f"serial:{port}").open(model, settings(timeout_s=1))
    finally:
        stop.set()
    assert "but no 'edgeport bench:' timing line in 1 s" in one_line(exc)


def test_another_model_is_flashed(pty_board, model):
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(8), crc=0x1234ABCD))
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings())
    assert "runs another model" in one_line(exc) and "edgeport flash" in one_line(exc)


def test_failed_self_test(pty_board, model):
    printed, port = pty_board
    good = firmware_lines(model.tflite, seeded_cycles(8)).decode()
    printed.append(good.replace("PASS\n", "FAIL: output differs from the host reference\n").encode())
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings())
    assert "failed its self-test: FAIL: output differs from the host reference" in one_line(exc)


def test_a_line_lost_to_noise(pty_board, model):
    printed, port = pty_board
    good = firmware_lines(model.tflite, seeded_cycles(8)).decode()
    printed.append(good.replace("inference 4:", "inferen\x93e 4:").encode())  # a corrupted byte
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings())
    assert "printed inference 5 where inference 4 was due" in one_line(exc)
    assert "check its speed" in one_line(exc)


def test_port_that_does_not_exist(model, tmp_path):
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{tmp_path}/ttyACM9").open(model, settings())
    assert "cannot open serial port" in one_line(exc) and "dialout" in one_line(exc)


def test_serial_needs_a_port():
    with pytest.raises(EdgeportError) as exc:
        get_runner("serial")
    assert "--on serial:PORT" in one_line(exc)


def test_missing_model_is_refused_before_the_port_is_opened(tmp_path):
    missing = tmp_path / "gone.tflite"
    info = ModelInfo(name=missing.name, path=str(missing), sha256="0" * 64, size_bytes=0)
    with pytest.raises(EdgeportError) as exc:
        get_runner("serial:/dev/ttyACM0").check(BenchModel(info, missing))
    assert "does not exist" in one_line(exc)


def test_cli_bench_on_serial(pty_board, run_cli, tmp_path):
    from edgeport.bench.schema import BenchReport
    from tests.targets.synth import big_fc_model

    printed, port = pty_board
    model = tmp_path / "fc.tflite"
    model.write_bytes(big_fc_model(16, 8))
    cycles = seeded_cycles(8, seed=4)
    printed.append(firmware_lines(model, cycles))
    out = tmp_path / "serial.json"
    code, stdout, stderr = run_cli("bench", model, "--on", f"serial:{port}", "--runs", "8", "--json", out)
    assert code == 0, stderr
    (result,) = BenchReport.model_validate_json(out.read_text()).results
    assert result.time_kind == "device-timer" and result.ticks == cycles
    assert result.samples_ms == pytest.approx([c * 1000 / CLOCK_HZ for c in cycles])
    assert "fc.tflite" in stdout


def test_cli_without_runs_times_what_the_firmware_printed(pty_board, run_cli, tmp_path):
    """The firmware fixes its counts when it is built: without --runs, its runs and warmup are the run's."""
    from edgeport.bench.schema import BenchReport
    from tests.targets.synth import big_fc_model

    printed, port = pty_board
    model = tmp_path / "fc.tflite"
    model.write_bytes(big_fc_model(16, 8))
    cycles = seeded_cycles(12, seed=6)
    printed.append(firmware_lines(model, cycles))
    out = tmp_path / "serial.json"
    code, _, stderr = run_cli("bench", model, "--on", f"serial:{port}", "--json", out)
    assert code == 0, stderr
    report = BenchReport.model_validate_json(out.read_text())
    assert (report.settings.runs, report.settings.warmup) == (12, 1)
    assert report.results[0].ticks == cycles and report.results[0].stats.count == 12


def test_a_warmup_the_firmware_was_not_built_with_is_refused(pty_board, model):
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(10)))
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings(warmup=3))
    assert "--warmup 3" in one_line(exc) and "warms up with 1" in one_line(exc)
    assert "--bench-warmup 3" in one_line(exc)


def test_under_edgeport_run_the_errors_name_the_config_keys(pty_board, model):
    """The harness makes the runner with the wording it is given (`edgeport run` passes its config's
    keys): the same raise sites say `on =`, `baud =`, `warmup =` and `runs =`, never a CLI flag."""
    from edgeport.bench.harness import bench
    from edgeport.run.config import config_words

    printed, port = pty_board

    def refusal(**over) -> str:
        with pytest.raises(EdgeportError) as exc:
            bench([model], f"serial:{port}", settings(**over), RunnerOptions(baud=9600), spell=config_words)
        return one_line(exc)

    text = refusal(timeout_s=0.5)  # nothing printed
    assert "the port (on = serial:PORT)" in text and "the speed (baud =, now 9600)" in text
    assert "--" not in text
    printed.append(firmware_lines(model.tflite, seeded_cycles(10)))
    text = refusal(warmup=3)
    assert "warmup = 3: the firmware" in text and "out warmup =, or rebuild" in text
    assert "--bench-warmup 3" in text  # the command that rebuilds it is the CLI's
    text = refusal(runs=11)
    assert "out runs = (or pass runs = 10)" in text and "--bench-runs 11" in text


def test_runs_of_prefers_the_users_runs_then_the_sessions():
    from types import SimpleNamespace

    from edgeport.bench.harness import runs_of, settings_as_run

    fixed = SimpleNamespace(fixed_runs=12)
    assert runs_of(fixed, BenchSettings(runner="serial:X")) == 12
    assert runs_of(fixed, BenchSettings(runner="serial:X", runs=4)) == 4
    assert runs_of(SimpleNamespace(), BenchSettings(runner="host")) == 50
    both = settings_as_run(BenchSettings(runner="serial:X"), [(1, 12)])
    assert (both.runs, both.warmup) == (12, 1)
    differ = settings_as_run(BenchSettings(runner="qemu:x"), [(None, 50), (None, 50)])
    assert (differ.runs, differ.warmup) == (50, 5)


# ---- --profile: a firmware flashed with `edgeport flash --bench-profile`

# What a BENCH_PROFILE=1 build prints after its 8 timed inferences: MicroProfiler::LogCsv of the last one
# between the firmware's own lines; MicroPrintf ends each line with \r\n, so the port shows blank lines.
PROFILE_LINES = [
    "edgeport profile: inference 7\r",
    '"Event","Tag","Ticks"\r',
    "\r",
    "0,CONV_2D,412003\r",
    "\r",
    "1,DEPTHWISE_CONV_2D,150211\r",
    "2,CONV_2D,201740\r",
    "3,FULLY_CONNECTED,9012\r",
    "4,SOFTMAX,311\r",
    "edgeport profile: end\r",
]
PROFILED_OPS = [
    (0, "CONV_2D", 412003),
    (1, "DEPTHWISE_CONV_2D", 150211),
    (2, "CONV_2D", 201740),
    (3, "FULLY_CONNECTED", 9012),
    (4, "SOFTMAX", 311),
]


def test_profile_reads_the_ops_of_the_last_timed_inference_in_board_cycles(pty_board, model):
    printed, port = pty_board
    cycles = seeded_cycles(8, seed=11)
    printed.append(firmware_lines(model.tflite, cycles, profile=PROFILE_LINES))
    runner = get_runner(f"serial:{port}")
    assert "profile" in runner.uses
    session = runner.open(model, settings(profile=True))
    session.run(8)
    profile = session.finish().profile
    assert profile is not None and (profile.inference, profile.ticks) == (7, cycles[7])
    assert [(op.index, op.op, op.ticks) for op in profile.ops] == PROFILED_OPS  # the DWT counts as printed
    ms_per_cycle = 1000 / CLOCK_HZ  # the clock the firmware's header states, which its counter counts
    assert [op.ms for op in profile.ops] == pytest.approx([t * ms_per_cycle for _, _, t in PROFILED_OPS])
    assert [(t.op, t.count, t.ticks) for t in profile.by_type] == [
        ("CONV_2D", 2, 412003 + 201740),
        ("DEPTHWISE_CONV_2D", 1, 150211),
        ("FULLY_CONNECTED", 1, 9012),
        ("SOFTMAX", 1, 311),
    ]
    assert profile.outside_ticks == cycles[7] - sum(t for _, _, t in PROFILED_OPS)
    assert "read from DWT: cycles per op" in profile.source and profile.ticks_are == "cycles"


def test_the_serial_and_qemu_runners_turn_printed_lines_into_a_profile_with_one_function():
    """One definition: both runners read the stream with BenchLineParser and convert its profile with
    lines_op_profile; only the tick conversion and the unit differ (a board's cycles, QEMU's instructions)."""
    from edgeport.targets.cortex_m import bench_lines, bench_qemu

    assert bench_serial.lines_op_profile is bench_lines.lines_op_profile
    assert bench_qemu.lines_op_profile is bench_lines.lines_op_profile
    assert bench_serial.BenchLineParser is bench_lines.BenchLineParser


def test_without_profile_a_profiling_firmware_is_timed_and_says_the_profiler_is_in(pty_board, model):
    printed, port = pty_board
    cycles = seeded_cycles(8, seed=12)
    printed.append(firmware_lines(model.tflite, cycles, profile=PROFILE_LINES))
    session = get_runner(f"serial:{port}").open(model, settings())
    assert session.run(8) == pytest.approx([c * 1000 / CLOCK_HZ for c in cycles])
    extras = session.finish()
    assert extras.profile is None and "--bench-profile" in extras.notes[-1]
    assert "--profile reports it" in extras.notes[-1]


def test_profile_on_a_firmware_built_without_the_profiler_names_the_reflash(pty_board, model):
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(8)))
    with pytest.raises(EdgeportError) as exc:
        get_runner(f"serial:{port}").open(model, settings(profile=True))
    assert "--profile: the firmware on" in one_line(exc) and "printed no op profile" in one_line(exc)
    assert "edgeport flash PACKAGE_DIR --board BOARD --bench-profile" in one_line(exc)


def test_profile_with_fewer_runs_than_the_profiled_inference_is_refused(pty_board, model):
    """The firmware profiles its last timed inference: --runs below it would report a profile of an
    inference that is not among the samples."""
    printed, port = pty_board
    printed.append(firmware_lines(model.tflite, seeded_cycles(8), profile=PROFILE_LINES))
    session = get_runner(f"serial:{port}").open(model, settings(profile=True))
    with pytest.raises(EdgeportError) as exc:
        session.run(4)
    assert "profiles timed inference 8 of 8, which --runs 4 leaves out" in one_line(exc)
    assert "Leave out --runs (or pass --runs 8)" in one_line(exc)


def test_cli_bench_on_serial_with_profile(pty_board, run_cli, tmp_path):
    from edgeport.bench.schema import BenchReport
    from tests.targets.synth import big_fc_model

    printed, port = pty_board
    model = tmp_path / "fc.tflite"
    model.write_bytes(big_fc_model(16, 8))
    cycles = seeded_cycles(8, seed=13)
    printed.append(firmware_lines(model, cycles, profile=PROFILE_LINES))
    out = tmp_path / "serial.json"
    code, stdout, stderr = run_cli("bench", model, "--on", f"serial:{port}", "--profile", "--json", out)
    assert code == 0, stderr
    (result,) = BenchReport.model_validate_json(out.read_text()).results
    assert result.profile is not None and result.profile.inference == 7
    assert result.profile.ticks == result.ticks[7] == cycles[7]
    assert [op.op for op in result.profile.ops] == [name for _, name, _ in PROFILED_OPS]
    assert result.profile.ticks_are == "cycles"  # what a tick is, for --json readers
    assert "per-op profile" in stdout and "DEPTHWISE_CONV_2D" in stdout
    words = " ".join(stdout.split())  # the table's title, however the console wraps it
    assert (
        "per-op profile: one inference, ms from the board's own cycle counter (DWT or SysTick) at the clock "
        "its firmware states"
    ) in words
    assert "instruction" not in words  # QEMU's unit: not a board's
