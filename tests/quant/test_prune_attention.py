"""A tiny transformer prunes at 30 %: its MLPs narrow, every nn.MultiheadAttention is kept whole and
said so (in the section's kept_whole and the summary line), shapes stay consistent, and the pruned
model converts within the float tolerance."""

from __future__ import annotations

from pathlib import Path

from edgeport.manifest import Manifest
from edgeport.pipeline import FLOAT32_TOLERANCE, ConvertOptions, convert_model
from edgeport.quant.prune import PruneOptions, PruningSection
from tests.quant.prune_models import one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import ZOO

ATTENTION = Path(__file__).resolve().parents[1] / "zoo" / "attention.py"


def test_tiny_vit_prunes_its_mlps_keeps_attention_whole_and_converts(tmp_path: Path) -> None:
    zoo = next(m for m in ZOO if m.name == "vit_tiny")
    outdir = tmp_path / "vit"
    prune = PruneOptions(ratio=0.3, round_to=8, min_width=8, recovery="none", samples=16, held_out=8)
    result = convert_model(
        ConvertOptions(
            source=f"{ATTENTION}:vit_tiny", outdir=outdir, input_shapes=zoo.input_shapes, prune=prune
        )
    )
    ver = result.manifest.verification
    assert ver is not None and ver.passed
    assert all(e.max_rel_error < FLOAT32_TOLERANCE for e in ver.errors if e.stage == "tflite_float32")
    section = PruningSection.of(Manifest.read(outdir), str(outdir))
    # The attention's MACs count (module and exported graph agree), so 30 % is of the whole model.
    assert section.removed() >= 0.3 and section.before.macs == section.before.onnx_macs
    narrowed = {g.module for g in section.groups if g.channels_after < g.channels_before}
    assert narrowed == {"blocks.0.mlp.0", "blocks.1.mlp.0"}
    whole = [k for k in section.kept_whole if ": attention kept whole" in k]
    assert whole and all(k.startswith(("blocks.0.attn", "blocks.1.attn")) for k in whole)
    assert "attention kept whole (blocks." in result.summary().splitlines()[0]
