"""The run's orchestration with the stages stubbed (no TensorFlow): a stage that fails is recorded and the
rest of the sweep is written; a sweep where nothing converts writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.run import load_config, run
from tests.run.test_config import GOOD, write


@pytest.fixture
def stubbed(monkeypatch):
    """convert fails for int8 and writes a bare manifest otherwise; package fails for board mps2-an386."""
    import edgeport.pipeline
    from edgeport.targets.cortex_m.target import TARGET

    calls = []

    def convert(options, observer=None):
        calls.append(("convert", options.quantize.mode if options.quantize else "float"))
        if options.quantize is not None and options.quantize.mode == "int8":
            raise EdgeportError("int8 calibration failed", "try another method")
        Path(options.outdir).mkdir(parents=True)
        Manifest().write(options.outdir)

    def package(model, outdir, options, *, force=False, command=""):
        calls.append(("package", options.board))
        if options.board == "mps2-an386":
            raise EdgeportError("the model does not fit mps2-an386", "pick a bigger board")
        Path(outdir).mkdir(parents=True)
        manifest = Manifest()
        manifest.set_command(command)
        manifest.write(outdir)

    monkeypatch.setattr(edgeport.pipeline, "convert_model", convert)
    monkeypatch.setattr(TARGET, "package", package)
    return calls


def test_a_failed_stage_is_recorded_and_the_rest_is_written(tmp_path, stubbed, run_cli):
    text = GOOD.replace('board = "nucleo-h743zi2"', 'board = ["nucleo-h743zi2", "mps2-an386"]')
    config = write(tmp_path, text)
    code, out, err = run_cli("run", config, "-o", tmp_path / "out", "-j", "1", "-q")
    assert code == 1
    assert "2 stages failed: float: package cortex-m-mps2-an386 failed: the model does not fit" in err
    assert "int8: convert failed: int8 calibration failed" in err
    assert "ran 2 variants" in out
    document = json.loads((tmp_path / "out" / "run.json").read_text())
    float_, int8 = document["variants"]
    assert "error" not in float_ and int8["error"].startswith("int8 calibration failed")
    assert "command" in float_["targets"]["cortex-m-nucleo-h743zi2"]
    assert float_["targets"]["cortex-m-mps2-an386"]["error"].startswith("the model does not fit")
    assert not (tmp_path / "out" / "variants" / "int8").exists()
    report = (tmp_path / "out" / "report.md").read_text()
    assert report.count("| FAILED |") == 3  # int8 x both boards, float x mps2-an386
    assert "FAILED: int8 calibration failed" in (tmp_path / "out" / "report.html").read_text()
    # The int8 variant was not packaged at all.
    assert ("package", "nucleo-h743zi2") in stubbed and stubbed.count(("package", "mps2-an386")) == 1


def test_nothing_is_written_when_no_variant_converts(tmp_path, stubbed):
    config = load_config(write(tmp_path, GOOD.replace('quantize = ["none", "int8"]', 'quantize = "int8"')))
    with pytest.raises(EdgeportError, match="no variant converted; int8: int8 calibration failed"):
        run(config, tmp_path / "out", jobs=1, quiet=True)
    assert not (tmp_path / "out").exists() or [p.name for p in (tmp_path / "out").iterdir()] == [".cache"]


def test_verbose_logs_one_json_object_per_stage_event(tmp_path, stubbed, capfd):
    from edgeport.cli import main

    text = GOOD.replace('quantize = ["none", "int8"]\ncalibration-method = "input-stats"\n', "")
    config = write(tmp_path, text)
    assert main(["run", str(config), "-o", str(tmp_path / "out"), "-j", "1", "-v"]) == 0
    events = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    package = next(e for e in events if e.get("stage") == "package:cortex-m")
    assert package["variant"] == "float" and package["cached"] is False and package["error"] is None
    assert package["path"] == "variants/float/cortex-m" and package["message"].startswith("float: package")
    assert any(e.get("stage") == "convert" and e.get("started") for e in events)
