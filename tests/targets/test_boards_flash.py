"""Board table and `edgeport flash`: lookups, dry-run commands, missing tools."""

from __future__ import annotations

import pytest

from edgeport.errors import EdgeportError
from edgeport.targets.cortex_m.boards import BOARDS, get_board
from tests.conftest import shared_path

REQUIRED = [
    "nano33ble",
    "stm32f746g-disco",
    "nucleo-h743zi2",
    "nucleo-l4r5zi",
    "rpi-pico",
    "nrf5340dk",
    "corstone-300",
    "mps2-an386",
    "mps2-an500",
]


def test_board_table_has_the_issue_boards_with_sane_rows():
    names = [b.name for b in BOARDS]
    assert sorted(names) == sorted(REQUIRED) and len(set(names)) == len(names)
    for board in BOARDS:
        assert board.flash_bytes > 0 and board.clock_hz > 0 and board.probes
        assert board.largest_ram.size == max(r.size for r in board.ram)
        regions = sorted(board.ram, key=lambda r: r.base)
        for a, b in zip(regions, regions[1:], strict=False):
            assert a.base + a.size <= b.base, f"{board.name}: overlapping RAM regions"
    assert get_board("mps3-an547").name == "corstone-300"  # aliases work
    assert get_board("RPI_PICO").name == "rpi-pico"


def test_unknown_board_suggests_close_names():
    with pytest.raises(EdgeportError) as err:
        get_board("nucleo-h743")
    assert "nucleo-h743zi2" in str(err.value)


@pytest.fixture
def packaged_an386(tmp_path):
    from edgeport.targets.cortex_m import package

    out = tmp_path / "pkg"
    package(shared_path("models", "tflite", "tflm_hello_world_int8.tflite"), out, board="mps2-an386")
    return out


def test_flash_dry_run_prints_build_and_run_commands(run_cli, packaged_an386):
    code, out, err = run_cli(
        "flash", packaged_an386, "--board", "mps2-an386", "--dry-run", "--tflm-root", "/opt/tflm"
    )
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"make -C {packaged_an386 / 'firmware'} TFLM_ROOT=/opt/tflm"
    assert lines[1].startswith("qemu-system-arm -M mps2-an386 ") and "firmware.elf" in lines[1]


@pytest.mark.parametrize(
    ("board", "probe", "expected"),
    [
        ("stm32f746g-disco", "openocd", "openocd -f board/stm32f7discovery.cfg -c"),
        ("nucleo-h743zi2", "pyocd", "pyocd flash --target stm32h743zitx"),
        ("nrf5340dk", "probe-rs", "probe-rs download --chip nRF5340_xxAA"),
        ("rpi-pico", "uf2", "picotool load -v -x"),
        (
            "nano33ble",
            "arduino-cli",
            "arduino-cli upload --fqbn arduino:mbed_nano:nano33ble --port /dev/ttyACM0",
        ),
    ],
)
def test_probe_commands(board, probe, expected, tmp_path):
    from edgeport.targets.cortex_m.flash import plan

    steps = plan(tmp_path, get_board(board), probe, "/dev/ttyACM0", "/opt/tflm")
    assert any(step.shell().startswith(expected) for step in steps), [s.shell() for s in steps]


def test_flash_with_a_missing_tool_names_the_package(
    run_cli, packaged_an386, monkeypatch, tmp_path, stand_in_tflm
):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    code, _, err = run_cli("flash", packaged_an386, "--board", "mps2-an386", "--tflm-root", stand_in_tflm)
    assert code == 1 and "is not installed" in err and "apt-get install" in err
    assert err.strip().count("\n") == 0


def test_flash_dry_run_needs_no_tflm_tree(run_cli, packaged_an386, monkeypatch):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    code, out, err = run_cli("flash", packaged_an386, "--board", "mps2-an386", "--dry-run")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == f"make -C {packaged_an386 / 'firmware'} 'TFLM_ROOT=<TFLM_ROOT>'"  # shell-quoted
    assert lines[1].startswith("qemu-system-arm -M mps2-an386 ")


def _stub_tools(bin_dir, ran):
    """make, the cross compiler and QEMU as scripts that record being run: no test reaches a real one."""
    bin_dir.mkdir()
    for tool in ("make", "arm-none-eabi-gcc", "qemu-system-arm"):
        stub = bin_dir / tool
        stub.write_text(f"#!/bin/sh\necho {tool} >> {ran}\n")
        stub.chmod(0o755)


def test_real_build_refuses_a_directory_that_is_not_a_tflm_tree(
    run_cli, packaged_an386, monkeypatch, tmp_path
):
    ran = tmp_path / "ran.txt"
    _stub_tools(tmp_path / "bin", ran)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    empty = tmp_path / "empty-tflm"
    empty.mkdir()
    for root_args in (["--tflm-root", empty], []):  # an empty tree given, and the same tree via TFLM_ROOT
        monkeypatch.setenv("TFLM_ROOT", str(empty))
        code, out, err = run_cli("flash", packaged_an386, "--board", "mps2-an386", *root_args)
        assert code == 1 and out == ""
        assert err.strip().count("\n") == 0 and "is not a TFLite Micro checkout" in err
        assert "tensorflow/lite/micro/tools/make/Makefile" in err and str(empty) in err
    monkeypatch.delenv("TFLM_ROOT")
    code, _, err = run_cli("flash", packaged_an386, "--board", "mps2-an386")
    assert code == 1 and "TFLite Micro sources are needed" in err and "--tflm-root" in err
    assert not ran.exists()  # refused before any tool ran


def test_real_build_with_a_tflm_tree_runs_the_planned_steps(
    run_cli, packaged_an386, monkeypatch, tmp_path, stand_in_tflm
):
    ran = tmp_path / "ran.txt"
    _stub_tools(tmp_path / "bin", ran)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    code, out, err = run_cli("flash", packaged_an386, "--board", "mps2-an386", "--tflm-root", stand_in_tflm)
    assert code == 0, err
    assert ran.read_text().split() == ["make", "qemu-system-arm"]
    assert out.split() == ["done:", "build", "done:", "run"]


def test_flash_refuses_a_different_board_or_probe(run_cli, packaged_an386):
    code, _, err = run_cli("flash", packaged_an386, "--board", "nano33ble", "--dry-run", "--tflm-root", "/x")
    assert code == 1 and "packaged for mps2-an386" in err
    code, _, err = run_cli(
        "flash", packaged_an386, "--board", "mps2-an386", "--probe", "openocd", "--dry-run"
    )
    assert code == 1 and "qemu" in err


def test_flash_refuses_a_directory_that_is_not_a_package(run_cli, tmp_path):
    out = tmp_path / "pkg"
    out.mkdir()
    code, _, err = run_cli("flash", out, "--board", "mps2-an386", "--dry-run")
    assert code == 1 and "is not an `edgeport package` output (no edgeport.json)" in err
    (out / "edgeport.json").write_text("{damaged")
    code, _, err = run_cli("flash", out, "--board", "mps2-an386", "--dry-run")
    assert code == 1 and "not a valid edgeport manifest" in err and err.strip().count("\n") == 0


def test_build_command_passes_only_the_settings_given():
    from pathlib import Path

    from edgeport.targets.cortex_m.flash import build_command

    fw = Path("pkg/firmware")
    assert build_command(fw, "/t") == ("make", "-C", "pkg/firmware", "TFLM_ROOT=/t")
    assert build_command(fw, "/t", warmup=0, runs=30, kernels="cmsis_nn", jobs=2) == (
        "make",
        "-j2",
        "-C",
        "pkg/firmware",
        "TFLM_ROOT=/t",
        "KERNELS=cmsis_nn",
        "BENCH_WARMUP=0",
        "BENCH_RUNS=30",
    )


def test_flash_bench_counts_go_into_the_build(run_cli, packaged_an386):
    code, out, err = run_cli(
        "flash", packaged_an386, "--board", "mps2-an386", "--dry-run", "--tflm-root", "/opt/tflm",
        "--bench-runs", "30", "--bench-warmup", "2",
    )  # fmt: skip
    assert code == 0, err
    fw = packaged_an386 / "firmware"
    assert out.splitlines()[0] == f"make -C {fw} TFLM_ROOT=/opt/tflm BENCH_WARMUP=2 BENCH_RUNS=30"
    code, out, err = run_cli(
        "flash", packaged_an386, "--board", "mps2-an386", "--dry-run", "--bench-runs", "0"
    )
    assert code == 1 and out == "" and err.strip().count("\n") == 0 and "--bench-runs" in err


def test_flash_bench_counts_refuse_to_reuse_an_earlier_elf(run_cli, packaged_an386, monkeypatch, tmp_path):
    """Without sources, flash takes an ELF built earlier; with --bench-runs that ELF has other counts, with
    --bench-profile it may lack the profiler."""
    ran = tmp_path / "ran.txt"
    _stub_tools(tmp_path / "bin", ran)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    elf = packaged_an386 / "firmware" / "build" / "firmware.elf"
    elf.parent.mkdir()
    elf.write_bytes(b"\x7fELF")
    for flags in (["--bench-runs", "30"], ["--bench-profile"]):
        code, out, err = run_cli("flash", packaged_an386, "--board", "mps2-an386", *flags)
        assert code == 1 and "TFLite Micro sources are needed" in err and not ran.exists()
    code, out, err = run_cli("flash", packaged_an386, "--board", "mps2-an386")
    assert code == 0, err
    assert ran.read_text().split() == ["qemu-system-arm"]  # the earlier ELF, run as it is


def test_flash_bench_profile_builds_the_flashed_firmware_with_the_profiler(
    run_cli, packaged_an386, monkeypatch, tmp_path, stand_in_tflm
):
    """--bench-profile: the make that builds the ELF it flashes gets BENCH_PROFILE=1 (what `edgeport bench
    --on serial --profile` reads); without it the Makefile's default (no profiler) is left alone."""
    fw = packaged_an386 / "firmware"
    code, out, err = run_cli(
        "flash", packaged_an386, "--board", "mps2-an386", "--dry-run", "--tflm-root", "/opt/tflm",
        "--bench-runs", "20", "--bench-profile",
    )  # fmt: skip
    assert code == 0, err
    assert out.splitlines()[0] == f"make -C {fw} TFLM_ROOT=/opt/tflm BENCH_RUNS=20 BENCH_PROFILE=1"
    made = tmp_path / "make-args.txt"
    bin_dir = tmp_path / "bin"
    _stub_tools(bin_dir, tmp_path / "ran.txt")
    (bin_dir / "make").write_text(f'#!/bin/sh\necho "$*" >> {made}\n')  # records its arguments
    monkeypatch.setenv("PATH", str(bin_dir))
    for flags in (["--bench-profile"], []):
        code, _, err = run_cli(
            "flash", packaged_an386, "--board", "mps2-an386", "--tflm-root", stand_in_tflm, *flags
        )
        assert code == 0, err
    with_profile, without = made.read_text().splitlines()
    assert with_profile == f"-C {fw} TFLM_ROOT={stand_in_tflm} BENCH_PROFILE=1"
    assert without == f"-C {fw} TFLM_ROOT={stand_in_tflm}"


def test_the_tflm_tree_is_the_option_else_the_environment(monkeypatch, tmp_path):
    from edgeport.targets.cortex_m.flash import plan, tflm_root_or_env

    monkeypatch.setenv("TFLM_ROOT", "/from/env")
    assert tflm_root_or_env("/given") == "/given" and tflm_root_or_env(tmp_path) == str(tmp_path)
    assert tflm_root_or_env(None) == tflm_root_or_env("") == "/from/env"
    (step, *_) = plan(tmp_path, get_board("mps2-an386"), None, None, None)
    assert "TFLM_ROOT=/from/env" in step.argv
    monkeypatch.delenv("TFLM_ROOT")
    assert tflm_root_or_env(None) is None
    (step, *_) = plan(tmp_path, get_board("mps2-an386"), None, None, None)
    assert "TFLM_ROOT=<TFLM_ROOT>" in step.argv  # a dry run without a tree names it
