"""--prune on ONNX sources of the zoo's attention models: a TransformerEncoderLayer exported with a
dynamic batch axis (LayerNormalization, Mod, Erf in its graph) prunes, converts and verifies, its
attention kept whole with a note; one exported with static shapes (as edgeport's own export writes it)
holds its batch size in constants and is refused in one line naming the node, its op and the re-export
that fixes it."""

from __future__ import annotations

import io
from pathlib import Path

import onnx
import pytest
import torch

from edgeport.cli import main
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.pipeline.torch_passes import prune_exporter
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.zoo import zoo_model


def _dynamic_batch_onnx(name: str, path: Path) -> Path:
    """The zoo model exported as users export one for any batch: axis 0 of every input dynamic."""
    zoo = zoo_model(name)
    names = [f"input_{i}" for i in range(len(zoo.input_shapes))]
    buffer = io.BytesIO()
    torch.onnx.export(
        zoo.build(),
        zoo.example_inputs(),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=names,
        output_names=["output"],
        dynamic_axes={n: {0: "batch"} for n in names},
    )
    path.write_bytes(buffer.getvalue())
    return path


def test_encoder_layer_onnx_source_prunes_with_its_attention_kept_whole(tmp_path: Path) -> None:
    source = _dynamic_batch_onnx("encoder_pre_norm_gelu", tmp_path / "encoder.onnx")
    ops = {n.op_type for n in onnx.load(str(source)).graph.node}
    assert {"LayerNormalization", "Mod", "Erf", "Softmax"} <= ops
    outdir = tmp_path / "out"
    result = convert_model(
        ConvertOptions(source=str(source), outdir=outdir, prune=fast_options(round_to=4, min_width=4))
    )
    section = verified_section(result)
    assert section.removed() >= 0.3 and section.after.macs < section.before.macs
    # The heads are sized by constants in the graph's Reshapes: the attention's projection stays whole.
    assert any("self_attn" in note and "kept whole" in note for note in section.kept_whole)
    converted = onnx.load(str(outdir / "model.onnx"))
    assert [i.name for i in converted.graph.input] == ["input_0"]


@pytest.mark.parametrize(("name", "op"), [("vit_tiny", "Concat"), ("mha_batch_first", "Reshape")])
def test_a_static_batch_attention_export_is_refused_in_one_line(
    name: str, op: str, tmp_path: Path, capsys
) -> None:
    zoo = zoo_model(name)
    source = tmp_path / "static.onnx"
    onnx.save(prune_exporter().graph(zoo.build(), zoo.example_inputs(), ["image"]), str(source))
    outdir = tmp_path / "out"
    args = ["convert", str(source), "--prune", "0.3", "--prune-recovery", "none", "-o", str(outdir), "-q"]
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "runs at its exported batch only" in lines[0] and f"({op}): RuntimeError" in lines[0]
    assert "at batch 2 node '/" in lines[0] and "dynamic batch on axis 0" in lines[0]
    assert not outdir.exists()
