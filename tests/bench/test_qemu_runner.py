"""The qemu runner's pieces that need no TFLite Micro build: ELF sizes, the tick -> instruction -> time
conversion, the one-line errors, the board and tree checks, and the offline bundle's extraction."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgeport.bench.runner import RunnerOptions, get_runner
from edgeport.errors import EdgeportError
from edgeport.runtimes.qemu import QemuRun
from edgeport.targets.cortex_m.bench_qemu import (
    ElfSizes,
    instructions,
    parse_size,
    run_error,
    tree_from_archive,
)
from edgeport.targets.cortex_m.boards import get_board
from edgeport.targets.cortex_m.flash import TFLM_MAKEFILE, first_error, qemu_icount_shift
from tests.conftest import shared_path

# arm-none-eabi-size (Berkeley format) on a firmware ELF.
SIZE_OUTPUT = """\
   text	   data	    bss	    dec	    hex	filename
 104212	    116	  12864	 117192	  1c9c8	build/firmware.elf
"""


def test_flash_is_text_plus_the_load_image_of_data():
    sizes = parse_size(SIZE_OUTPUT)
    assert sizes == ElfSizes(text=104212, data=116, bss=12864) and sizes.flash == 104212 + 116
    with pytest.raises(EdgeportError, match="unexpected output of arm-none-eabi-size"):
        parse_size("arm-none-eabi-size: 'x.elf': No such file")


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500", "corstone-300"])
def test_ticks_become_instructions_through_the_icount_shift(board, stand_in_tflm):
    the_board = get_board(board)
    shift = qemu_icount_shift(the_board)
    # n instructions take n * 2^shift ns of virtual time, in which SysTick counts the board clock.
    n = 1_000_000
    ticks = int(n * 2**shift * the_board.clock_hz / 1e9)
    assert abs(instructions(ticks, the_board.clock_hz, shift) - n) <= 2
    runner = get_runner(f"qemu:{board}", RunnerOptions(tflm_root=stand_in_tflm))
    assert runner.milliseconds(ticks, the_board.clock_hz) == pytest.approx(
        n * 1000 / the_board.clock_hz, rel=1e-5
    )


def test_a_hang_a_crash_and_a_failed_self_test_are_one_line_each():
    board = get_board("mps2-an386")
    hung = QemuRun(("qemu",), None, ["edgeport self-test", "inference 0: 5 cycles"], "", True)
    error = run_error(hung, "kws.tflite", board, 30)
    assert "did not finish within 30 s (1 timed inferences printed)" in str(error)
    assert "--timeout-s" in str(error)
    crashed = QemuRun(("qemu",), 7, ["edgeport self-test", "FAIL: fault, exception 003"], "", False)
    assert "stopped with status 7: FAIL: fault, exception 003" in str(run_error(crashed, "m", board, 30))
    silent = QemuRun(("qemu",), 1, [], "qemu: could not load kernel", False)
    assert "could not load kernel" in str(run_error(silent, "m", board, 30))
    assert run_error(QemuRun(("qemu",), 0, ["PASS"], "", False), "m", board, 30) is None
    for error in (run_error(hung, "m", board, 30), run_error(crashed, "m", board, 30)):
        assert "\n" not in str(error) and error.fix


def test_a_hung_run_under_a_config_names_its_keys_not_flags(tmp_path, monkeypatch, stand_in_tflm):
    """`edgeport run` makes the runner with its config's wording; a run that hangs says so."""
    from types import SimpleNamespace

    from edgeport.bench.schema import BenchSettings
    from edgeport.run.config import config_words
    from edgeport.targets.cortex_m import bench_qemu

    runner = get_runner("qemu:mps2-an386", RunnerOptions(tflm_root=stand_in_tflm), config_words)
    hung = QemuRun(("qemu",), None, ["edgeport self-test"], "", True)
    monkeypatch.setattr(bench_qemu.qemu, "run_firmware", lambda *args, **kw: hung)
    model = SimpleNamespace(info=SimpleNamespace(name="kws.tflite"))
    session = bench_qemu.QemuSession(runner, model, BenchSettings(runner=runner.name, runs=3))
    session.elf, session.built_runs = tmp_path / "firmware.elf", 3  # built: only the run is asked for
    try:
        with pytest.raises(EdgeportError) as exc:
            session.run(3)
    finally:
        session.close()
    assert exc.value.fix.startswith("raise timeout-s = or lower runs =;") and "--" not in str(exc.value)


def test_first_error_finds_the_compiler_error():
    output = "make: Entering directory\nmain.cc:3:10: fatal error: x.h: No such file\nmake: *** [x] Error 1\n"
    assert first_error(output) == "main.cc:3:10: fatal error: x.h: No such file"
    assert first_error("just this\nand that\n") == "and that"


def test_the_command_refuses_a_board_without_qemu_and_a_missing_tree_in_one_line(run_cli, monkeypatch):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    model = shared_path("models", "tflite", "tflm_hello_world_int8.tflite")
    code, _, err = run_cli("bench", model, "--on", "qemu:nano33ble")
    assert code == 1 and "nano33ble has no QEMU machine" in err and "Traceback" not in err
    code, _, err = run_cli("bench", model, "--on", "qemu:mps2-an386")
    assert code == 1 and "--tflm-root" in err and len(err.strip().splitlines()) == 1


def test_boards_without_a_qemu_machine_and_unknown_boards_list_the_qemu_ones(stand_in_tflm):
    with pytest.raises(EdgeportError, match="nano33ble has no QEMU machine.*mps2-an386"):
        get_runner("qemu:nano33ble")
    with pytest.raises(EdgeportError, match="unknown board 'm4'.*corstone-300, mps2-an386, mps2-an500"):
        get_runner("qemu:m4")
    assert get_runner("qemu:an386", RunnerOptions(tflm_root=stand_in_tflm)).name == "qemu:mps2-an386"


def test_no_tflm_tree_is_one_line_naming_tflm_root(tmp_path, monkeypatch, stand_in_tflm):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    with pytest.raises(EdgeportError, match="--tflm-root"):
        get_runner("qemu:mps2-an386")
    with pytest.raises(EdgeportError, match="is not a TFLite Micro checkout.*--tflm-root"):
        get_runner("qemu:mps2-an386", RunnerOptions(tflm_root=tmp_path))
    assert get_runner("qemu:corstone-300", RunnerOptions(tflm_root=stand_in_tflm)).tree == stand_in_tflm


def _archive(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:xz") as bundle:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            bundle.addfile(info, io.BytesIO(data))
    return path


def test_the_offline_bundle_is_extracted_once_and_reused(tmp_path):
    archive = _archive(tmp_path / "tflm.tar.xz", {f"tflite-micro/{TFLM_MAKEFILE}": "all:\n"})
    cache = tmp_path / "cache"
    tree = tree_from_archive(archive, cache)
    assert (tree / TFLM_MAKEFILE).read_text() == "all:\n" and tree.parent.parent == cache
    (tree / "gen").mkdir()  # a built library stays
    assert tree_from_archive(archive, cache) == tree and (tree / "gen").is_dir()
    assert [p.name for p in cache.iterdir()] == [tree.parent.name]  # no staging dir left behind


def test_a_bundle_without_a_tree_leaves_nothing_behind(tmp_path):
    archive = _archive(tmp_path / "other.tar.xz", {"README.md": "not tflm\n"})
    with pytest.raises(EdgeportError, match="holds no tflite-micro/ tree"):
        tree_from_archive(archive, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
