"""Bad --prune input the other prune tests do not cover: one line, exit 1, nothing written. A
parameter target out of reach names the most reachable; RATIO outside (0, 1) with a latency target is
refused before anything runs; an unknown --prune-exclude on an ONNX source lists the evaluator's
module names that are close."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeport.cli import main
from edgeport.errors import EdgeportError
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)
from tests.quant.test_prune_onnx_source import two_convs


def _one_line(argv: list[str], outdir: Path, capsys) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert not captured.out and not outdir.exists()
    return lines[0]


def test_unreachable_params_target_names_the_most_reachable() -> None:
    options = PruneOptions(ratio=0.97, target="params", round_to=8, min_width=8, recovery="none", samples=16)
    with pytest.raises(
        EdgeportError, match=r"--prune 0\.97 of the params cannot be reached: at most 0\.\d\d"
    ) as err:
        prune_module(coupled(), [TensorSpec("x", INPUT_SHAPE)], {}, options)
    assert "\n" not in str(err.value) and "Use --prune 0." in str(err.value)


def test_latency_ratio_outside_the_interval_is_refused_before_anything_runs(tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
    argv = ["convert", f"{zoo}:resnet_basic", "--input-shape", "1,3,32,32", "-o", str(outdir), "-q"]
    line = _one_line([*argv, "--prune", "1", "--prune-target", "latency"], outdir, capsys)
    assert "--prune 1 is outside (0, 1)" in line


def test_host_weighing_of_a_params_target_is_refused_naming_both_flags(tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
    argv = ["convert", f"{zoo}:resnet_basic", "--input-shape", "1,3,32,32", "-o", str(outdir), "-q"]
    weigh = ["--prune-weigh", "host"]
    line = _one_line([*argv, "--prune", "0.3", "--prune-target", "params", *weigh], outdir, capsys)
    assert "--prune-weigh host weighs steps that remove MACs, but --prune-target is params" in line
    assert "--prune-target flops" in line
    line = _one_line([*argv, *weigh], outdir, capsys)  # without --prune: refused, not ignored
    assert "--prune-weigh was given without --prune" in line


def test_unknown_exclude_on_an_onnx_source_lists_close_names(tmp_path: Path, capsys) -> None:
    source = two_convs(tmp_path / "m.onnx", pads=[1, 1, 1, 1])
    outdir = tmp_path / "out"
    argv = ["convert", str(source), "--prune", "0.3", "--prune-exclude", "layers.w3", "-o", str(outdir), "-q"]
    line = _one_line(argv, outdir, capsys)
    assert "'layers.w3' names no module" in line and "layers.w1" in line


@pytest.mark.parametrize("source", ["torch", "onnx"])
def test_bad_calibration_is_refused_before_the_prune_starts(
    source: str, tmp_path: Path, capsys, monkeypatch
) -> None:
    import edgeport.quant.prune as prune

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the prune started before --calibration was checked")

    monkeypatch.setattr(prune, "prune_module", never)
    np.save(tmp_path / "cal.npy", np.zeros((4, 3, 9, 9), np.float32))
    outdir = tmp_path / "out"
    if source == "torch":
        zoo = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
        argv = ["convert", f"{zoo}:resnet_basic", "--input-shape", "1,3,32,32"]
        takes = "input 'x' takes (N, 3, 32, 32)"
    else:
        # --input-name renames the ONNX source's input: the data is checked under the new name.
        argv = ["convert", str(two_convs(tmp_path / "m.onnx", pads=[1, 1, 1, 1])), "--input-name", "image"]
        takes = "input 'image' takes (N, 3, 8, 8)"
    argv += ["--quantize", "int8", "--calibration", str(tmp_path / "cal.npy"), "--prune", "0.3"]
    line = _one_line([*argv, "-o", str(outdir), "-q"], outdir, capsys)
    assert f"calibration data cal.npy has shape (4, 3, 9, 9) but {takes}" in line
