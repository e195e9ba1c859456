"""The spine: staged output directories, the error policy, the .tflite reader."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.outdir import staged_outdir
from edgeport.tflite_file import parse_tflite, read_tflite
from tests.conftest import shared_path


def test_staged_outdir_moves_into_place_on_success(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_outdir(out, force=False) as stage:
        (stage / "a.txt").write_text("x")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staged_outdir_leaves_nothing_on_failure(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with staged_outdir(out, force=False) as stage:
            (stage / "half.bin").write_bytes(b"1")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_staged_outdir_refuses_non_empty_without_force(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(EdgeportError, match="--force"):
        with staged_outdir(out, force=False):
            pass
    assert (out / "keep.txt").read_text() == "precious"
    with pytest.raises(RuntimeError):
        with staged_outdir(out, force=True) as stage:
            (stage / "new.txt").write_text("n")
            raise RuntimeError("failed after --force")
    assert (out / "keep.txt").read_text() == "precious", "a failed --force run must not lose the old output"


def test_read_tflite_reports_ops_and_io() -> None:
    model = read_tflite(shared_path("models", "tflite", "tflm_person_detect.tflite"))
    assert model.op_counts == {
        "AVERAGE_POOL_2D": 1,
        "CONV_2D": 14,
        "DEPTHWISE_CONV_2D": 14,
        "RESHAPE": 1,
        "SOFTMAX": 1,
    }
    (inp,) = model.inputs
    assert inp.shape == [1, 96, 96, 1] and inp.dtype == "int8" and inp.quantization is not None


@pytest.mark.parametrize("data", [b"", b"not a model at all", b"\x10\x00\x00\x00TFL3" + b"\xff" * 8])
def test_parse_tflite_rejects_garbage(data: bytes) -> None:
    with pytest.raises(EdgeportError):
        parse_tflite(data, "bad.tflite")


def test_cli_help_and_unknown_command(run_cli) -> None:
    code, out, _ = run_cli("--help")
    assert code == 0 and "convert" in out
    code, _, err = run_cli("no-such-command")
    assert code == 1 and "no-such-command" in err


def test_internal_error_exits_2_without_traceback_unless_debug(run_cli, monkeypatch, tmp_path: Path) -> None:
    import edgeport.pipeline

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(edgeport.pipeline, "convert_model", broken)
    code, _, err = run_cli("convert", "x.onnx", "-o", tmp_path / "o")
    assert code == 2 and "internal error" in err and "simulated bug" in err and "Traceback" not in err
    with pytest.raises(RuntimeError, match="simulated bug"):
        run_cli("--debug", "convert", "x.onnx", "-o", tmp_path / "o")


def test_every_command_has_help(run_cli) -> None:
    for command in ("convert", "package", "flash"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "Usage:" in out and "--help" in out


def test_debug_is_accepted_after_the_command_too(run_cli, monkeypatch, tmp_path: Path) -> None:
    import edgeport.pipeline
    from edgeport.cli import debug_first

    assert debug_first(["convert", "m.onnx", "--debug", "-o", "o"]) == [
        "--debug",
        "convert",
        "m.onnx",
        "-o",
        "o",
    ]
    assert debug_first(["convert", "--", "--debug"]) == ["convert", "--", "--debug"]

    def broken(*_args, **_kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(edgeport.pipeline, "convert_model", broken)
    with pytest.raises(RuntimeError, match="simulated bug"):
        run_cli("convert", "x.onnx", "-o", tmp_path / "o", "--debug")


def test_help_lists_whole_command_summaries_and_examples(run_cli) -> None:
    from edgeport.cli.convert import convert

    code, out, _ = run_cli("--help")
    assert code == 0 and "Example" in out and "edgeport convert examples/kws_dscnn.py:build" in out
    commands = out[out.index("Commands:") :]
    assert "..." not in commands, commands
    assert " ".join(convert.short_help.split()) in " ".join(commands.split())
    code, out, _ = run_cli("convert", "--help")
    assert code == 0 and "Example:" in out and "--skip-pass" in out and "--list-passes" in out
