"""User problems get one-line user errors (exit 1), never an internal error; killed runs leave nothing."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import onnx
import pytest
from onnx import helper

from edgeport.converters.onnx_prepare import check_translatable
from edgeport.errors import EdgeportError
from edgeport.outdir import staged_outdir, staging_owner, sweep_stale_staging
from tests.conftest import ROOT

TINY = ROOT / "tests" / "fixtures" / "tiny_models.py"
SEQUENCE = [f"{TINY}:SequenceHead", "--input-shape", "1,4,16"]


def _staging(parent: Path) -> list[Path]:
    # Not the *.new name a staging folder has until its lock is taken (edgeport/tempdirs.py).
    return [p for p in parent.iterdir() if ".edgeport-staging-" in p.name and p.suffix != ".new"]


# --- output directory ---------------------------------------------------------------------------


def test_output_under_a_file_is_a_user_error(tmp_path: Path, run_cli) -> None:
    (tmp_path / "file").write_text("x")
    code, _, err = run_cli("convert", *SEQUENCE, "-o", tmp_path / "file" / "out")
    assert code == 1, err
    assert "is a file" in err and "internal" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_output_under_proc_is_a_user_error(run_cli) -> None:
    code, _, err = run_cli("convert", *SEQUENCE, "-o", "/proc/edgeport_out")
    assert code == 1, err
    assert "cannot create output directory /proc/edgeport_out" in err and "writable" in err


def test_read_only_file_system_is_a_user_error(tmp_path: Path, monkeypatch) -> None:
    # Root ignores permission bits, so a read-only mount is simulated where the folder is made.
    def read_only(*_args: object, **_kwargs: object) -> str:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("edgeport.outdir.tempfile.mkdtemp", read_only)
    with pytest.raises(EdgeportError, match="Read-only file system.*writable file system"):
        with staged_outdir(tmp_path / "out", force=False):
            pass


def test_disk_full_while_writing_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(EdgeportError, match="No space left"):
        with staged_outdir(tmp_path / "out", force=False):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert list(tmp_path.iterdir()) == []


# --- killed runs ----------------------------------------------------------------------------------


def _start_convert(out: Path) -> subprocess.Popen:
    """A real `edgeport convert` in its own process, returned once its staging folder exists."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeport", "convert", *SEQUENCE, "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 300
    while not _staging(out.parent):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"convert never staged its output: {proc.communicate()[1][-500:]}")
        time.sleep(0.02)
    return proc


def test_sigterm_during_convert_removes_the_staging_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _start_convert(out)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-500:]
    assert "interrupted; nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_sigkill_leftovers_are_swept_by_the_next_run(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    proc = _start_convert(out)
    proc.kill()
    proc.communicate(timeout=300)
    (left,) = _staging(tmp_path)
    assert staging_owner(left, out) == proc.pid
    with staged_outdir(out, force=False) as stage:
        (stage / "model.txt").write_text("ok")
    assert "removed" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_sweep_keeps_live_and_foreign_folders(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    dead = tmp_path / ".out.edgeport-staging-4194999-def456"
    reused = tmp_path / f".out.edgeport-staging-{os.getppid()}-old999"  # a live pid, but nobody's lock
    foreign = [tmp_path / ".out.tmp1234", tmp_path / ".other.edgeport-staging-4194999-x"]
    with staged_outdir(out, force=False) as live:  # this run's own, locked
        for folder in [dead, reused, *foreign]:
            folder.mkdir()
        assert sorted(sweep_stale_staging(out)) == sorted([dead, reused])
        assert live.exists() and all(f.exists() for f in foreign)
    assert capsys.readouterr().err.count("edgeport: removed") == 2


# --- models edgeport cannot convert, found before any work ------------------------------------------


def _onnx_with(node: onnx.NodeProto, *opsets: tuple[str, int]) -> onnx.ModelProto:
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])],
    )
    imports = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, v) for d, v in opsets)]
    return helper.make_model(graph, opset_imports=imports)


def test_custom_domain_op_is_refused_before_conversion(tmp_path: Path, run_cli) -> None:
    model = _onnx_with(
        helper.make_node("FancyOp", ["x"], ["y"], name="fancy_1", domain="com.example"), ("com.example", 1)
    )
    onnx.save(model, tmp_path / "m.onnx")
    code, _, err = run_cli("convert", tmp_path / "m.onnx", "-o", tmp_path / "out")
    assert code == 1, err
    assert "node 'fancy_1' is com.example:FancyOp (custom domain 'com.example')" in err
    assert "no translation" in err and "internal" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_untranslatable_op_inside_a_branch_is_found() -> None:
    branch = helper.make_graph(
        [helper.make_node("Swish", ["x"], ["z"], name="inner_swish")],
        "then",
        [],
        [helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, [1, 4])],
    )
    cond = helper.make_node(
        "Constant", [], ["c"], value=helper.make_tensor("c", onnx.TensorProto.BOOL, [], [1])
    )
    if_node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=branch, else_branch=branch)
    model = _onnx_with(if_node)
    model.graph.node.insert(0, cond)
    with pytest.raises(EdgeportError, match="node 'inner_swish' is Swish \\(standard ONNX\\)"):
        check_translatable(model)


def test_local_functions_are_inlined_not_refused() -> None:
    body = helper.make_function(
        "com.local",
        "MyRelu",
        ["a"],
        ["b"],
        [helper.make_node("Relu", ["a"], ["b"])],
        [helper.make_opsetid("", 17)],
    )
    model = _onnx_with(helper.make_node("MyRelu", ["x"], ["y"], domain="com.local"), ("com.local", 1))
    model.functions.append(body)
    assert [n.op_type for n in check_translatable(model).graph.node] == ["Relu"]


@pytest.mark.parametrize("opset", ["5", "21"])
def test_opset_outside_the_exporter_range_is_a_user_error(tmp_path: Path, run_cli, opset: str) -> None:
    code, _, err = run_cli("convert", *SEQUENCE, "--opset", opset, "-o", tmp_path / "out")
    assert code == 1, err
    assert f"--opset {opset} is outside the range" in err and "9 to 20" in err
    assert list(tmp_path.iterdir()) == []


# --- the TFLite converter's messages --------------------------------------------------------------

# Excerpts of TensorFlow 2.19's own messages: an op without a builtin kernel (tf.linalg.det), and an
# ordinary shape error that prints tensor values and a tf.reshape call.
FLEX_MESSAGE = """Could not translate MLIR to FlatBuffer./m.py:7:1: error: 'tf.MatrixDeterminant' op is \
neither a custom op nor a flex op
/m.py:7:1: note: Error code: ERROR_NEEDS_FLEX_OPS
<unknown>:0: error: failed while converting: 'main':
Some ops are not supported by the native TFLite runtime, you can enable TF kernels fallback using TF Select.
TF Select ops: MatrixDeterminant
Details:
\ttf.MatrixDeterminant(tensor<1x3x3xf32>) -> (tensor<1xf32>) : {T = f32, device = ""}"""
SHAPE_MESSAGE = """Exception encountered when calling layer "tf.reshape" (type TFOpLambda).
Cannot reshape a tensor with 1440 elements to shape [1,48,32] (1536 elements) for '{{node tf.reshape(}}'
Call arguments received by layer "tf.reshape": shape=tf.Tensor([ 1 48 32], shape=(3,), dtype=int32)"""


class _FailingConverter:
    def __init__(self, message: str) -> None:
        self.message = message
        self.target_spec = types.SimpleNamespace()

    def convert(self) -> bytes:
        raise RuntimeError(self.message)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (FLEX_MESSAGE, "the model needs MatrixDeterminant, which TFLite has no builtin kernel for"),
        (SHAPE_MESSAGE, 'the TFLite converter failed: Exception encountered when calling layer "tf.reshape"'),
    ],
    ids=["flex_op", "shape_error"],
)
def test_only_real_unsupported_op_messages_name_an_op(monkeypatch, message: str, expected: str) -> None:
    import tensorflow as tf

    from edgeport.converters.onnx_to_tflite import keras_to_tflite

    monkeypatch.setattr(
        tf.lite.TFLiteConverter, "from_keras_model", lambda _model: _FailingConverter(message)
    )
    with pytest.raises(EdgeportError) as info:
        keras_to_tflite(object())
    assert str(info.value).startswith(expected)


# --- OUTDIR that cannot be renamed (a mount point) or whose parent is read-only (a container volume) ----


def test_outdir_that_cannot_be_renamed_gets_its_contents_replaced(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    real_rename = Path.rename

    def rename(self: Path, target: Path) -> Path:
        if self == out:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))  # what renaming a mount point gives
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    with staged_outdir(out, force=True) as stage:
        (stage / "model.onnx").write_text("new")
        (stage / "sub").mkdir()
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "sub"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_read_only_parent_stages_inside_an_existing_outdir(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    real_mkdtemp = tempfile.mkdtemp

    def mkdtemp(prefix: str, dir: Path, suffix: str = "") -> str:  # noqa: A002 - tempfile's own keyword
        if Path(dir) == out.parent:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkdtemp(prefix=prefix, suffix=suffix, dir=dir)

    monkeypatch.setattr("edgeport.outdir.tempfile.mkdtemp", mkdtemp)
    with staged_outdir(out, force=False) as stage:
        assert stage.parent == out
        (stage / "model.onnx").write_text("new")
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    with pytest.raises(EdgeportError, match="Read-only file system"):
        with staged_outdir(tmp_path / "absent", force=False):
            pass


@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home"])
def test_force_never_replaces_the_directory_the_user_works_in(
    tmp_path: Path, monkeypatch, where: str
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    (work / "notes.txt").write_text("precious")
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(work))
    out = {"cwd": Path("."), "parent_of_cwd": tmp_path, "home": work}[where]
    with pytest.raises(EdgeportError, match="the output replaces that directory as a whole"):
        with staged_outdir(out, force=True):
            pass
    assert (work / "notes.txt").read_text() == "precious"


# --- SOURCE files of other kinds --------------------------------------------------------------------


def test_foreign_model_files_are_named(tmp_path: Path, run_cli) -> None:
    (tmp_path / "m.tflite").write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(40))
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(40))
    (tmp_path / "notes.txt").write_text("not a model at all")
    (tmp_path / "saved").mkdir()
    (tmp_path / "saved" / "saved_model.pb").write_bytes(b"\x08\x01")
    expected = {
        "saved": "is a TensorFlow SavedModel",
        "m.tflite": "is already a TFLite model",
        "m.h5": "is a TensorFlow / Keras model",
        "notes.txt": "is not a model file edgeport knows",
    }
    for name, message in expected.items():
        code, _, err = run_cli("convert", tmp_path / name, "-o", tmp_path / "out")
        assert code == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_onnx_without_its_suffix_is_read_as_onnx(tmp_path: Path) -> None:
    from edgeport.converters.sources import load_source

    model = _onnx_with(helper.make_node("Relu", ["x"], ["y"]))
    model.ir_version = 8
    onnx.save(model, tmp_path / "model.bin")
    assert load_source(str(tmp_path / "model.bin")).kind == "onnx"
