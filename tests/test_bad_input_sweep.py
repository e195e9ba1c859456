"""The bad-input sweep over `edgeport bench`, `run`, `init`, `package` and the CLI's own usage errors: each
case a user could give is one line naming the problem and the fix, exit 1, no traceback, nothing written,
and found before any work. Fast: fake inputs show the path, no conversion runs."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.outdir import check_outdir, write_files
from tests.targets.synth import big_fc_model

MODEL = "import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n"
CONFIG = """
[model]
source = "net.py:build"
input-shape = "1,4"
[targets.cortex-m]
board = "mps2-an386"
"""


def one_error_line(code: int, out: str, err: str) -> str:
    """The refusal as the user sees it: exit 1, one stderr line, no traceback, nothing on stdout."""
    assert code == 1, err
    assert out == "" and "Traceback" not in err and "internal error" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeport: error: "), err
    return lines[0]


def read_only(*_args: object, **_kwargs: object) -> None:
    """What creating a file or folder on a read-only file system raises (root ignores permission bits)."""
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


def config(tmp_path: Path, text: str = CONFIG, extra: str = "") -> Path:
    (tmp_path / "net.py").write_text(MODEL)
    path = tmp_path / "edgeport.toml"
    path.write_text(text + extra)
    return path


@pytest.fixture
def tflite(tmp_path: Path) -> Path:
    path = tmp_path / "fc.tflite"
    path.write_bytes(big_fc_model(16, 8))
    return path


# --- the CLI's usage errors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["bench", "m.tflite", "--on", "host", "--runs", "abc"], "'abc' is not a valid integer"),
        (["bench", "m.tflite", "--on", "host", "--nope"], "No such option '--nope'"),
        (["run", "edgeport.toml", "-j", "0"], "0 is not in the range x>=1"),
        (["convrt"], "No such command 'convrt'. Did you mean 'convert'? See `edgeport --help`"),
    ],
)
def test_a_usage_error_is_one_line_pointing_at_the_help(run_cli, args, said):
    line = one_error_line(*run_cli(*args))
    assert said in line and "--help`" in line


# --- edgeport bench --json ------------------------------------------------------------------------


def test_bench_json_under_a_file_is_refused_before_measuring(run_cli, tflite, tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(*run_cli("bench", tflite, "--on", "host", "--json", tmp_path / "file" / "r.json"))
    assert "is a file" in line


def test_bench_json_on_a_read_only_file_system_is_refused_before_measuring(
    run_cli, tflite, tmp_path, monkeypatch
):
    monkeypatch.setattr("edgeport.cli.bench.tempfile.NamedTemporaryFile", read_only)
    monkeypatch.setattr("edgeport.cli.bench.run_bench", lambda *a, **k: pytest.fail("measured anyway"))
    line = one_error_line(*run_cli("bench", tflite, "--on", "host", "--json", tmp_path / "r.json"))
    assert "cannot write in" in line and "Read-only file system" in line and "writable" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fc.tflite"]


# --- edgeport init --------------------------------------------------------------------------------


def test_init_under_a_file(run_cli, tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(*run_cli("init", "-o", tmp_path / "file" / "edgeport.toml"))
    assert "file" in line and "is a file" in line and "parent folders are directories" in line


def test_init_on_a_read_only_file_system_writes_nothing(run_cli, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeport.outdir.tempfile.mkstemp", read_only)
    line = one_error_line(*run_cli("init", "-o", tmp_path / "edgeport.toml"))
    assert "Read-only file system" in line and "writable" in line
    assert list(tmp_path.iterdir()) == []


def test_init_into_a_directory_names_the_file_to_give(run_cli, tmp_path):
    line = one_error_line(*run_cli("init", "-o", tmp_path))
    assert f"{tmp_path} is a directory" in line and f"-o {tmp_path / 'edgeport.toml'}" in line


def test_write_files_writes_all_or_none(tmp_path, monkeypatch):
    made = []
    real = os.replace

    def second_fails(src: str, dst: str) -> None:
        if made:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        made.append(dst)
        real(src, dst)

    monkeypatch.setattr("edgeport.outdir.os.replace", second_fails)
    with pytest.raises(EdgeportError, match="No space left"):
        write_files({tmp_path / "a.toml": "a", tmp_path / "b.py": "b"})
    # The first rename happened; what matters is that no temporary file is left behind.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.setattr("edgeport.outdir.tempfile.mkstemp", read_only)
    with pytest.raises(EdgeportError, match="writable"):
        write_files({tmp_path / "c.toml": "c"})
    assert not (tmp_path / "c.toml").exists()


# --- edgeport run: the config check finds it before any work ---------------------------------------


def test_a_config_without_a_source(run_cli, tmp_path):
    path = config(tmp_path, CONFIG.replace('source = "net.py:build"\n', ""))
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "[model] 'source' is missing" in line and 'add source = "model.py:build"' in line


def test_an_empty_config_says_what_to_add(run_cli, tmp_path):
    line = one_error_line(*run_cli("run", config(tmp_path, ""), "--check"))
    assert "'model' is missing" in line and "add a [model] table" in line


def test_a_directory_or_binary_file_as_the_config(run_cli, tmp_path):
    line = one_error_line(*run_cli("run", tmp_path))
    assert "is a directory" in line
    config(tmp_path)
    line = one_error_line(*run_cli("run", tmp_path))
    assert f"Give {tmp_path / 'edgeport.toml'}." in line
    binary = tmp_path / "binary.toml"
    binary.write_bytes(bytes(range(256)))
    line = one_error_line(*run_cli("run", binary))
    assert "cannot be read as text" in line


def test_an_unknown_board_is_a_config_problem(run_cli, tmp_path):
    path = config(tmp_path, CONFIG.replace("mps2-an386", "nucleo-h7"))
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "[targets.cortex-m] unknown board 'nucleo-h7'" in line and "nucleo-h743zi2" in line


def test_a_bench_runner_that_cannot_be_made_is_a_config_problem(run_cli, tmp_path, monkeypatch):
    monkeypatch.delenv("TFLM_ROOT", raising=False)
    path = config(tmp_path, extra='[bench]\non = ["qemu:nosuch"]\n')
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "[bench] unknown board 'nosuch'" in line and "on = qemu:BOARD" in line
    path = config(tmp_path, extra='[bench]\non = ["qemu:mps2-an386"]\n')
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "TFLite Micro sources are needed" in line and "pass tflm-root = DIR or set TFLM_ROOT" in line


def test_an_unknown_board_is_refused_by_the_options(tmp_path):
    from edgeport.targets import get_target, parse_options

    with pytest.raises(EdgeportError, match="unknown board 'nucleo-h7'"):
        parse_options(get_target("cortex-m"), {"board": "nucleo-h7"})


@pytest.mark.parametrize(
    ("labels", "said"),
    [
        ("0.png 0\n1.png\n", "line 2: '1.png' is not `FILENAME LABEL`"),
        ("0.png 0\n", "1 image(s) in"),  # 1.png has no label
        ("0.png 0\n1.png 1\n2.png 0\n", "names 2.png, which is not in"),
    ],
)
def test_a_labels_file_that_does_not_fit_the_images_is_a_config_problem(run_cli, tmp_path, labels, said):
    from PIL import Image

    images = tmp_path / "val"
    images.mkdir()
    for i in range(2):
        Image.fromarray(np.full((4, 4), 60 * i, np.uint8)).save(images / f"{i}.png")
    (images / "labels.txt").write_text(labels)
    path = config(tmp_path, extra='[validation]\ndata = "val"\n')
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "[validation]" in line and said in line


def test_validation_data_that_does_not_fit_the_input_shape_is_a_config_problem(run_cli, tmp_path):
    np.savez(tmp_path / "val.npz", x=np.zeros((3, 5), np.float32))  # the model takes [1, 4]
    line = one_error_line(
        *run_cli("run", config(tmp_path, extra='[validation]\ndata = "val.npz"\n'), "--check")
    )
    assert "array 'x' holds samples of [5], the model takes [4]" in line
    from PIL import Image

    (tmp_path / "val").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "val" / "0.png")
    (tmp_path / "val" / "labels.txt").write_text("0.png 0\n")
    text = CONFIG.replace('"1,4"', '"1,1,4,4"')  # one gray image
    path = config(tmp_path, text, '[validation]\ndata = "val"\nmean = [0.5, 0.5, 0.5]\n')
    line = one_error_line(*run_cli("run", path, "--check"))
    assert "mean: 3 values, the model's images have 1 channel(s); give one value or 1" in line


def test_a_validation_npz_that_is_not_one_is_a_config_problem(run_cli, tmp_path):
    (tmp_path / "val.npz").write_bytes(b"PK\x03\x04 not a zip")
    line = one_error_line(
        *run_cli("run", config(tmp_path, extra='[validation]\ndata = "val.npz"\n'), "--check")
    )
    assert "is not a readable .npz" in line


def test_top1_without_labels_in_the_npz_is_a_config_problem(run_cli, tmp_path):
    np.savez(tmp_path / "val.npz", x=np.zeros((3, 4), np.float32))
    text = '[validation]\ndata = "val.npz"\nmetric = "top-1"\n'
    line = one_error_line(*run_cli("run", config(tmp_path, extra=text), "--check"))
    assert "has no 'labels' array" in line


# --- an output that cannot be created is refused before any work ----------------------------------


def test_an_outdir_that_cannot_be_created_is_refused_up_front(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(EdgeportError, match="is a file"):
        check_outdir(tmp_path / "file" / "a" / "out", force=False)
    monkeypatch.setattr("edgeport.outdir.tempfile.mkdtemp", read_only)
    with pytest.raises(EdgeportError, match="Read-only file system.*writable file system"):
        check_outdir(tmp_path / "out", force=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_package_to_an_unwritable_place_does_no_work_first(run_cli, tflite, tmp_path, monkeypatch):
    monkeypatch.setattr("edgeport.outdir.tempfile.mkdtemp", read_only)
    monkeypatch.setattr(
        "edgeport.targets.android.packager.write_package", lambda *a, **k: pytest.fail("packaged anyway")
    )
    line = one_error_line(*run_cli("package", tflite, "--target", "android", "-o", tmp_path / "out"))
    assert "cannot create output directory" in line and "writable" in line


def test_android_labels_given_a_directory(tmp_path):
    from edgeport.targets.android.describe import read_labels

    with pytest.raises(EdgeportError) as caught:
        read_labels(tmp_path, "--labels")
    assert str(caught.value) == (
        f"--labels {tmp_path} is a directory. Give the labels file in it, one label per line."
    )


def test_target_files_are_relative_to_the_config_and_checked(run_cli, tmp_path, monkeypatch):
    """[targets.android] labels: checked before any work, and read from the config's folder, not the cwd."""
    from edgeport.run.config import load_config

    text = CONFIG.replace(
        '[targets.cortex-m]\nboard = "mps2-an386"\n', '[targets.android]\nlabels = "l.txt"\n'
    )
    path = config(tmp_path, text)
    line = one_error_line(*run_cli("run", path, "--check"))
    assert (
        "[targets.android] labels: l.txt does not exist (paths are relative to the config's folder)" in line
    )
    (tmp_path / "l.txt").write_text("a\nb\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    (target,) = load_config(path).targets
    assert target.options.labels == [str(tmp_path / "l.txt")]
