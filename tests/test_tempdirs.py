"""Temp dirs of killed runs are swept; live ones, others' and a dead pid's reuse are told apart (issue 10)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgeport.tempdirs import (
    make_tempdir,
    remove_tempdir,
    sweep_stale_tempdirs,
    tempdir,
    tempdir_owner,
)

ROOT = Path(__file__).resolve().parents[1]


def _child(code: str, marker: Path) -> tuple[subprocess.Popen, Path]:
    """Run `code` in a new Python process; return it with the path it writes to `marker` once ready."""
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 300  # generous: a loaded machine, and TensorFlow's import
    while not marker.exists() or not marker.read_text().endswith("\n"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"child never got ready: {proc.communicate()[1][-800:]}")
        time.sleep(0.05)
    return proc, Path(marker.read_text().strip())


def test_name_names_the_owner_and_removal_releases(tmp_path: Path) -> None:
    path = make_tempdir("savedmodel", tmp_path)
    assert path.parent == tmp_path and path.is_dir()
    assert path.name.startswith(f"edgeport-savedmodel-pid{os.getpid()}-")
    assert tempdir_owner(path) == os.getpid()
    (path / "weights").write_bytes(b"x" * 1000)
    remove_tempdir(path)
    remove_tempdir(path)  # twice: the model's finalizer and an explicit clean-up may both run
    assert list(tmp_path.iterdir()) == []
    with tempdir("lut", tmp_path) as work:
        assert work.is_dir()
    assert not work.exists()


def test_tag_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tag"):
        make_tempdir("Saved_Model", tmp_path)


def test_live_dirs_are_kept_unlocked_ones_swept_whatever_their_pid(tmp_path: Path, capsys) -> None:
    live = make_tempdir("savedmodel", tmp_path)
    # Our own pid, but no lock: what a killed process leaves when a later process reuses its pid.
    reused = tmp_path / f"edgeport-savedmodel-pid{os.getpid()}-abcd1234"
    dead = tmp_path / "edgeport-localize-pid4194999-xyz98765"
    for folder in (reused, dead):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"\0" * 100)
    assert sweep_stale_tempdirs(tmp_path) == sorted([dead, reused])
    assert live.is_dir()
    assert capsys.readouterr().err.count("edgeport: removed") == 2
    remove_tempdir(live)


def test_sweep_leaves_what_is_not_a_named_edgeport_dir(tmp_path: Path) -> None:
    kept = [
        tmp_path / "edgeport-tflm-1289fcda0d5c",  # the TFLM library cache: no owner in its name
        tmp_path / "edgeport-savedmodel-7ej81856",  # an older run's name: nobody can tell its owner
        tmp_path / "edgeport-savedmodel-pid12-abcd1234.new",  # being made: not locked yet
        tmp_path / "tmpq1w2e3r4",
    ]
    for folder in kept:
        folder.mkdir()
    (tmp_path / "edgeport-bench-pid12-file0000").write_text("a file")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "edgeport-bench-pid12-link0000").symlink_to(target)
    assert sweep_stale_tempdirs(tmp_path) == []
    assert all(p.exists() for p in kept) and target.is_dir()
    assert sweep_stale_tempdirs(tmp_path / "absent") == []


def test_first_dir_of_a_process_sweeps(tmp_path: Path) -> None:
    stale = tmp_path / "edgeport-savedmodel-pid4194999-abcd1234"
    stale.mkdir()
    fresh = make_tempdir("savedmodel", tmp_path)
    assert not stale.exists()
    remove_tempdir(fresh)


def test_sigkilled_owner_leaves_a_dir_the_next_sweep_removes(tmp_path: Path) -> None:
    marker = tmp_path / "ready"
    code = f"""
        import time
        from pathlib import Path
        from edgeport.tempdirs import make_tempdir
        path = make_tempdir("savedmodel", Path({str(tmp_path)!r}))
        (path / "variables.data").write_bytes(b"0" * 4096)
        Path({str(marker)!r}).write_text(str(path) + "\\n")
        time.sleep(600)
    """
    proc, path = _child(code, marker)
    assert tempdir_owner(path) == proc.pid
    assert sweep_stale_tempdirs(tmp_path) == []  # alive: kept
    proc.kill()
    proc.communicate(timeout=60)
    assert path.is_dir()  # SIGKILL: nothing could clean up
    assert sweep_stale_tempdirs(tmp_path) == [path]


def test_sigterm_during_a_conversion_removes_the_savedmodel_dir(tmp_path: Path) -> None:
    # The converter's own export (a tiny Keras model), then SIGTERM while the conversion would go on.
    marker = tmp_path / "ready"
    code = f"""
        import os, time
        os.environ["TMPDIR"] = {str(tmp_path)!r}
        from pathlib import Path
        import tf_keras
        from tensorflow.lite.python import lite
        from edgeport.keras_export import _save_model
        from edgeport.outdir import terminate_as_interrupt
        tf_keras.utils.set_random_seed(0)
        model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,))])
        with terminate_as_interrupt():
            path = _save_model(lite, model)
            Path({str(marker)!r}).write_text(str(path) + "\\n")
            time.sleep(600)
    """
    proc, path = _child(code, marker)
    assert path.parent == tmp_path and tempdir_owner(path) == proc.pid
    assert (path / "saved_model.pb").exists()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert "Terminated: SIGTERM" in err, err[-800:]
    assert not path.exists()


def test_the_converters_own_export_dir_holds_links_not_weights(monkeypatch) -> None:
    # lite.py exports into its own mkdtemp, which a killed run leaves as an anonymous tmpXXXX: it gets
    # links to the shared export (a tempdirs dir), so no copy of the weights can be left there.
    import shutil

    import tf_keras
    from tensorflow.lite.python import lite

    from edgeport.converters.onnx_to_tflite import keras_to_tflite

    seen: list[list[bool]] = []
    real_rmtree = shutil.rmtree

    def rmtree(path, *args, **kwargs):
        if Path(path).is_dir() and tempdir_owner(Path(path)) is None:
            seen.append([entry.is_symlink() for entry in os.scandir(path)])
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(lite.shutil, "rmtree", rmtree)
    tf_keras.utils.set_random_seed(0)
    model = tf_keras.Sequential([tf_keras.layers.Dense(3, input_shape=(4,))])
    first = keras_to_tflite(model)
    assert keras_to_tflite(model) == first  # the second conversion reads the same export
    assert len(seen) == 2 and all(seen) and all(all(links) for links in seen)


def test_bench_working_dirs_are_swept_tempdirs() -> None:
    from edgeport.bench.models import _keep
    from edgeport.targets.cortex_m.bench_qemu import QemuSession

    kept = _keep(b"model", "m.tflite")  # lives until exit (atexit)
    assert kept.read_bytes() == b"model" and tempdir_owner(kept.parent.parent) == os.getpid()
    session = QemuSession(None, None, None)  # type: ignore[arg-type] - only its working dir is used
    assert tempdir_owner(session.workdir) == os.getpid()
    session.close()
    assert not session.workdir.exists()


def test_sigterm_during_edgeport_convert_leaves_no_temp_dir(tmp_path: Path) -> None:
    # The whole command: SIGTERM once the conversion has made its SavedModel export. A tiny model may
    # finish before the signal lands; either way no edgeport temp dir may be left.
    from tests.test_bad_input import SEQUENCE

    temp = tmp_path / "temp"
    temp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgeport", "convert", *SEQUENCE, "-o", str(tmp_path / "out")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "TMPDIR": str(temp)},
    )
    deadline = time.monotonic() + 300
    while not any(tempdir_owner(p) == proc.pid for p in temp.iterdir()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"convert never exported a SavedModel: {proc.communicate()[1][-800:]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode in (0, 1), err[-800:]
    assert [p.name for p in temp.iterdir() if tempdir_owner(p) is not None] == []


def test_outdir_staging_uses_the_same_lock(tmp_path: Path, capsys) -> None:
    # A run writing into OUTDIR is alive as long as its staging folder's lock is held, whatever its pid.
    from edgeport.outdir import staged_outdir, staging_owner, sweep_stale_staging

    marker, out = tmp_path / "ready", tmp_path / "out"
    code = f"""
        import time
        from pathlib import Path
        from edgeport.outdir import staged_outdir
        with staged_outdir(Path({str(out)!r}), force=False) as stage:
            (stage / "model.tflite").write_bytes(b"0" * 4096)
            Path({str(marker)!r}).write_text(str(stage) + "\\n")
            time.sleep(600)
    """
    proc, staging = _child(code, marker)
    assert staging.parent == tmp_path and staging_owner(staging, out) == proc.pid
    assert sweep_stale_staging(out) == []  # alive: kept
    proc.kill()
    proc.communicate(timeout=60)
    assert staging.is_dir()  # SIGKILL: nothing could clean up
    with staged_outdir(out, force=False) as stage:  # the next run into OUTDIR sweeps it
        (stage / "model.tflite").write_bytes(b"1")
    assert f"removed {staging}" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "ready"]
    assert (out / "model.tflite").read_bytes() == b"1"


def test_a_finished_staging_folder_releases_its_lock(tmp_path: Path) -> None:
    from edgeport.outdir import staged_outdir
    from edgeport.tempdirs import remove_if_abandoned

    with staged_outdir(tmp_path / "out", force=False) as stage:
        assert not remove_if_abandoned(stage)  # held, by this process too
    assert remove_if_abandoned(tmp_path / "out")  # the moved folder's lock was given up
    with pytest.raises(RuntimeError), staged_outdir(tmp_path / "other", force=False) as stage:
        raise RuntimeError("a failed run")
    assert not stage.exists() and list(tmp_path.iterdir()) == []
