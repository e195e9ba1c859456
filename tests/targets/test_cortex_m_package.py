"""The `edgeport package --target cortex-m` user paths: fit check, bad input, determinism, big models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeport.targets.cortex_m.boards import get_board
from tests.conftest import shared_path
from tests.targets import synth
from tests.targets.conftest import parse_c_array

PERSON = ("models", "tflite", "tflm_person_detect.tflite")


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_person_detect_fits_a_256_kb_board(run_cli, tmp_path):
    board = get_board("nano33ble")
    assert board.largest_ram.size == 256 * 1024
    code, out, err = run_cli(
        "package", shared_path(*PERSON), "--target", "cortex-m", "--board", board.name, "-o", tmp_path / "out"
    )
    assert code == 0, err
    section = json.loads((tmp_path / "out" / "edgeport.json").read_text())["sections"]["cortex_m"]
    assert section["fit"]["fits_ram"] and section["fit"]["fits_flash"]
    assert section["fit"]["ram_needed"] <= board.largest_ram.size
    assert section["arena"]["kTensorArenaSize"] >= section["arena"]["measured_bytes"]
    assert "fits" in out


def test_mobilenet_size_model_on_cortex_m0_fails_with_numbers(run_cli, tmp_path):
    model = _write(tmp_path, "mobilenet_stem.tflite", synth.mobilenet_stem_model())
    board = get_board("rpi-pico")
    assert board.core.startswith("cortex-m0")
    code, out, err = run_cli("package", model, "--board", board.name, "-o", tmp_path / "out")
    assert code == 1
    assert not (tmp_path / "out").exists()
    line = err.strip()
    assert "\n" not in line
    # The numbers are real: the arena the interpreter needs for 112x112x32 + 112x112x64 activations.
    assert "largest region 256 KB" in line
    needed_kb = int(line.split("needs ")[1].split(" KB RAM")[0])
    assert needed_kb * 1024 > (112 * 112 * 32 + 112 * 112 * 64)
    # --no-fit-check writes the package anyway and records the verdict.
    code, out, err = run_cli(
        "package", model, "--board", board.name, "-o", tmp_path / "out", "--no-fit-check"
    )
    assert code == 0, err
    section = json.loads((tmp_path / "out" / "edgeport.json").read_text())["sections"]["cortex_m"]
    assert section["fit"]["fits_ram"] is False and section["fit"]["checked"] is False
    assert section["fit"]["ram_needed"] // 1024 + 1 >= needed_kb


def test_model_too_big_for_flash_names_the_flash_numbers(run_cli, tmp_path):
    model = _write(tmp_path, "big.tflite", synth.big_fc_model(2048, 1280))  # 2.5 MB of weights
    code, _, err = run_cli("package", model, "--board", "nucleo-h743zi2", "-o", tmp_path / "out")
    assert code == 1 and "flash" in err and "board has 2048 KB" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "case",
    [
        "not_a_flatbuffer",
        "truncated",
        "zero_bytes",
        "fails_verifier",
        "unknown_board",
        "bad_name",
        "bad_section",
    ],
)
def test_bad_input_is_one_line_exit_1_and_nothing_written(run_cli, tmp_path, case):
    person = shared_path(*PERSON)
    args = ["--board", "mps2-an386"]
    if case == "not_a_flatbuffer":
        model = _write(tmp_path, "m.tflite", b"this is a text file, not a model\n" * 10)
    elif case == "truncated":
        model = _write(tmp_path, "m.tflite", person.read_bytes()[: person.stat().st_size // 3])
    elif case == "zero_bytes":
        model = _write(tmp_path, "m.tflite", b"")
    elif case == "fails_verifier":
        model = _write(tmp_path, "m.tflite", synth.bad_index_model())
    else:
        model = person
        args = {
            "unknown_board": ["--board", "rpi-pico-w2"],
            "bad_name": ["--board", "mps2-an386", "--name", "2fast-model"],
            "bad_section": ["--board", "mps2-an386", "--section", "no dot"],
        }[case]
    out_dir = tmp_path / "out"
    code, out, err = run_cli("package", model, "-o", out_dir, *args)
    assert code == 1
    assert err.startswith("edgeport: error: ") and err.strip().count("\n") == 0
    assert not out_dir.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    if case == "unknown_board":
        assert "rpi-pico" in err  # the close name is suggested
    if case == "fails_verifier":
        assert "tensor 7" in err


def test_unsupported_op_names_op_node_and_a_fix(run_cli, tmp_path):
    model = _write(tmp_path, "topk.tflite", synth.unsupported_op_model())
    code, _, err = run_cli("package", model, "--board", "mps2-an386", "-o", tmp_path / "out")
    assert code == 1
    assert "TOPK_V2" in err and "node 1" in err and "ARG_MAX" in err
    assert not (tmp_path / "out").exists()


def test_two_runs_are_byte_identical(tmp_path):
    from edgeport.targets.cortex_m import package

    person = shared_path(*PERSON)
    package(person, tmp_path / "a", board="stm32f746g-disco", section=".model_data")
    package(person, tmp_path / "b", board="stm32f746g-disco", section=".model_data")
    first, second = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert first.keys() == second.keys() and "model_data.cc" in first
    assert first == second


def test_4mb_model_streams_and_round_trips(tmp_path):
    from edgeport.targets.cortex_m import model_data

    data = synth.big_fc_model(2048, 2048)
    assert len(data) > 4 * 1024 * 1024
    model = _write(tmp_path, "big.tflite", data)
    out = tmp_path / "out"
    out.mkdir()
    written = model_data.write_model_data(model, out, "g_big", None, "test")
    assert written.size_bytes == len(data)
    assert parse_c_array(written.source.read_text(), "g_big") == data


def test_whole_4mb_package_on_a_board_with_room(run_cli, tmp_path):
    model = _write(tmp_path, "big.tflite", synth.big_fc_model(2048, 2048))
    code, out, err = run_cli(
        "package", model, "--board", "mps2-an386", "-o", tmp_path / "out", "--name", "big", "--no-fit-check"
    )
    assert code == 0, err
    assert (tmp_path / "out" / "model_data.cc").stat().st_size > 4 * 1024 * 1024 * 5


def test_convert_output_directory_uses_its_int8_model(run_cli, tmp_path):
    from edgeport.manifest import Artifact, Manifest

    src = tmp_path / "converted"
    src.mkdir()
    (src / "model_float32.tflite").write_bytes(
        shared_path("models", "tflite", "tflm_hello_world_float.tflite").read_bytes()
    )
    (src / "model_int8.tflite").write_bytes(
        shared_path("models", "tflite", "tflm_hello_world_int8.tflite").read_bytes()
    )
    manifest = Manifest(source={"kind": "test"})
    for precision in ("float32", "int8"):
        manifest.artifacts.append(
            Artifact(
                path=f"model_{precision}.tflite", kind="tflite", precision=precision, sha256="x", size_bytes=1
            )
        )
    manifest.write(src)
    code, out, err = run_cli("package", src, "--board", "mps2-an386", "-o", tmp_path / "out")
    assert code == 0, err
    written = json.loads((tmp_path / "out" / "edgeport.json").read_text())
    assert written["sections"]["cortex_m"]["model"] == "model_int8.tflite"
    assert written["source"] == {"kind": "test"}  # the conversion's provenance travels with the package
    # Updating the convert directory in place keeps its files and adds the package.
    code, out, err = run_cli("package", src, "--board", "mps2-an386", "-o", src, "--force")
    assert code == 0, err
    assert (src / "model_float32.tflite").is_file() and (src / "model_data.cc").is_file()
    paths = [a["path"] for a in json.loads((src / "edgeport.json").read_text())["artifacts"]]
    assert "model_int8.tflite" in paths and "model_data.cc" in paths


def test_existing_output_directory_is_refused_without_force(run_cli, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, _, err = run_cli("package", shared_path(*PERSON), "--board", "mps2-an386", "-o", out)
    assert code == 1 and "--force" in err
    assert (out / "keep.txt").read_text() == "mine"
