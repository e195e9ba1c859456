"""`edgeport convert --prune`: zoo models prune at 30 % and still convert within the float tolerance,
the manifest's `pruning` section, the summary line, and the refusals (one line, exit 1, nothing
written)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.cli import main
from edgeport.manifest import Manifest
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.prune import PruneOptions, PruningSection
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.zoo import by_name

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
# Zoo models with the couplings that matter: residual blocks with 1x1 projections, and inverted
# residuals with depthwise convolutions.
PRUNED_ZOO = ("resnet_basic", "mobilenet_v2")


def _prune(**over: object) -> PruneOptions:
    return fast_options(**{"round_to": 4, "min_width": 4, **over})


@pytest.mark.parametrize("name", PRUNED_ZOO)
def test_zoo_model_prunes_and_converts_within_tolerance(name: str, tmp_path: Path) -> None:
    model = by_name(name)
    outdir = tmp_path / name
    result = convert_model(
        ConvertOptions(source=f"{ZOO}:{name}", outdir=outdir, input_shapes=model.input_shapes, prune=_prune())
    )
    section = verified_section(result)
    assert section.removed() >= 0.3
    assert section.after.params < section.before.params
    assert section.fidelity.sqnr_db is not None
    assert "pruned 3" in result.summary().splitlines()[0]


def test_recovery_in_convert(tmp_path: Path) -> None:
    model = by_name("resnet_basic")
    options = _prune(ratio=0.3, recovery="distill", max_steps=10)
    convert_model(
        ConvertOptions(
            source=f"{ZOO}:resnet_basic",
            outdir=tmp_path / "o",
            input_shapes=model.input_shapes,
            prune=options,
        )
    )
    section = PruningSection.of(Manifest.read(tmp_path / "o"), "o")
    assert section.recovery.steps == 10 and section.recovery.loss_end is not None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prune", "1.5"], "--prune 1.5 is outside (0, 1)"),
        (["--prune-criterion", "red"], "--prune-criterion was given without --prune"),
        (["--prune", "0.3", "--prune-exclude", "stem.9"], "'stem.9' names no module"),
        (["--prune", "0.97", "--prune-recovery", "none"], "cannot be reached"),  # found before recovery
    ],
)
def test_cli_refusals_are_one_line(flags: list[str], message: str, tmp_path: Path, capsys) -> None:
    outdir = tmp_path / "out"
    args = ["convert", f"{ZOO}:resnet_basic", "--input-shape", "1,3,32,32", "-o", str(outdir), "-q"]
    assert main([*args, *flags]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], captured.err
    assert not captured.out and not outdir.exists()


def test_pruned_int8_model_needs_a_smaller_tflm_arena(tmp_path: Path) -> None:
    """Pruned + --quantize int8, then the arena `package --target cortex-m` measures (TFLite Micro's
    allocator, one run): smaller than the unpruned int8 model's, and the file too."""
    from edgeport.quant.modes import QuantOptions
    from edgeport.targets.cortex_m.arena import measure
    from edgeport.tflite_file import read_tflite

    model = by_name("resnet_basic")
    sizes = {}
    for label, prune in (("full", None), ("pruned", _prune(ratio=0.4))):
        outdir = tmp_path / label
        convert_model(
            ConvertOptions(
                source=f"{ZOO}:resnet_basic",
                outdir=outdir,
                input_shapes=model.input_shapes,
                quantize=QuantOptions(mode="int8", samples=8, distill_steps=5),
                prune=prune,
            )
        )
        path = outdir / "model_int8.tflite"
        sizes[label] = (measure(path, read_tflite(path)).measured_bytes, path.stat().st_size)
    assert sizes["pruned"][0] < sizes["full"][0], sizes
    assert sizes["pruned"][1] < sizes["full"][1], sizes
