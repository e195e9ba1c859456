"""--prune on a quantized (QDQ) ONNX source: the weights a DequantizeLinear of constants computes are the
layers' (the general constant folding of quant/prune/onnx_source.py), each activation QuantizeLinear ->
DequantizeLinear pair is dropped (kept as its Clip where zero is an end of its range: a Relu the
quantizer folded in), and the model is pruned, re-exported and converted as float, with a note."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import helper

from edgeport.cli import main
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.prune.onnx_source import prunable_module
from edgeport.quant.qdq import float_activations, float_note
from edgeport.runtimes.onnxrt import run_onnx
from edgeport.tensors import TensorSpec
from tests.onnx_graphs import make_model
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.quant.qdq_models import SHAPE, calibration_samples, qdq_model, quantized_activation

SPECS = [TensorSpec("x", SHAPE)]
QDQ = ("QuantizeLinear", "DequantizeLinear")


def _relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
def test_a_qdq_model_becomes_a_float_module_of_its_function(per_channel: bool, tmp_path: Path) -> None:
    """Every Conv and the Gemm are layers; the module computes what onnxruntime computes on the QDQ model
    but for the rounding of the activations (the Relus the quantizer removed kept as clamps: without
    them the error is of the outputs' size)."""
    model = onnx.load(str(qdq_model(tmp_path / "q.onnx", per_channel)))
    module = prunable_module(model, SPECS)
    assert sorted(type(m).__name__ for m in module.layers.values()) == ["Conv2d"] * 4 + ["Linear"]
    assert module.dequantized == 5 and "weights of 5 layers dequantized" in module.notes[0]
    # The calibration inputs: within every pair's range, only rounding differs.
    samples = calibration_samples(8, 0)
    reference = [r["output"] for r in run_onnx(model.SerializeToString(), samples)]
    with torch.no_grad():
        ours = [module(torch.from_numpy(s["x"])).numpy() for s in samples]
    assert max(_relative_error(a, b) for a, b in zip(ours, reference, strict=True)) < 0.03
    graph, pairs, clips = float_activations(model)
    assert pairs > clips > 0
    without = onnx.ModelProto()
    without.CopyFrom(graph)
    for node in without.graph.node:  # the clamps (a Relu and a Clip each) taken out too
        if node.op_type in ("Relu", "Clip"):
            node.op_type, node.input[1:] = "Identity", []
    plain = [r["output"] for r in run_onnx(without.SerializeToString(), samples)]
    assert max(_relative_error(a, b) for a, b in zip(plain, reference, strict=True)) > 0.2


def test_a_qdq_source_prunes_and_converts_as_float(tmp_path: Path) -> None:
    """Pruned at 30 % as the float model it dequantizes to: widths cut, nothing kept whole, close to that
    model (SQNR), converted and verified against the pruned float graph, which has no Quantize /
    DequantizeLinear left; the note says so."""
    source = qdq_model(tmp_path / "q.onnx")
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=fast_options()))
    section = verified_section(result)
    assert section.removed() >= 0.3 and section.kept_whole == []
    assert sum(g.channels_after for g in section.groups) < sum(g.channels_before for g in section.groups)
    assert section.fidelity.sqnr_db is not None and section.fidelity.sqnr_db > 20
    converted = onnx.load(str(outdir / "model.onnx"))
    assert not {n.op_type for n in converted.graph.node} & set(QDQ)
    assert [i.name for i in converted.graph.input] == ["x"]
    assert [o.name for o in converted.graph.output] == ["output"]
    notes = [note for report in result.pass_reports for note in report.warnings_()]
    assert any("quantized (QDQ)" in n and "weights of 5 layers dequantized" in n for n in notes)


@pytest.mark.parametrize(
    ("per_channel", "why"),
    [(False, "not only read by DequantizeLinears of its scale"), (True, "per channel")],
    ids=["no_pair", "per_channel"],
)
def test_an_activation_quantize_that_is_no_pair_is_refused_in_one_line(
    per_channel: bool, why: str, tmp_path: Path, capsys
) -> None:
    source = quantized_activation(tmp_path / "m.onnx", per_channel)
    outdir = tmp_path / "out"
    assert main(["convert", str(source), "--prune", "0.3", "-o", str(outdir), "-q"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "QuantizeLinear node 'the_q' quantizes an activation" in lines[0]
    assert why in lines[0] and "Prune the float model before quantizing it" in lines[0]
    assert not outdir.exists()


@pytest.mark.parametrize("opset", [10, 17])
def test_a_pair_is_a_clamp_where_zero_ends_its_range_and_nothing_where_it_spans_zero(opset: int) -> None:
    """x -> pair (uint8, zero point 128: spans zero) -> Conv -> pair (zero point 0: [0, 255 s]) -> y: the
    first pair goes, the second is a Relu and a Clip to 255 s (Clip's bound an attribute before opset
    11)."""
    rng = np.random.default_rng(0)
    arrays = {
        "w": rng.normal(size=(4, 3, 3, 3)),
        "s_in": np.float32(0.05),
        "z_in": np.uint8(128),
        "s_out": np.float32(0.02),
        "z_out": np.uint8(0),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s_in", "z_in"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "s_in", "z_in"], ["xd"]),
        helper.make_node("Conv", ["xd", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("QuantizeLinear", ["c", "s_out", "z_out"], ["cq"]),
        helper.make_node("DequantizeLinear", ["cq", "s_out", "z_out"], ["y"]),
    ]
    model = make_model(nodes, {"x": SHAPE}, ["y"], arrays, opset)
    graph, pairs, clips = float_activations(model)
    assert (pairs, clips) == (2, 1)
    assert [n.op_type for n in graph.graph.node] == ["Identity", "Conv", "Relu", "Clip"]
    module = prunable_module(model, SPECS)  # checked against onnxruntime on `graph` inside
    x = torch.from_numpy(calibration_samples(1, 1)[0]["x"]) * 3
    with torch.no_grad():
        y = module(x)
        want = torch.nn.functional.conv2d(x, module.layers["w"].weight, padding=1).clamp(0, 255 * 0.02)
    assert torch.allclose(y, want, atol=1e-5) and float(y.max()) == pytest.approx(255 * 0.02)


def test_a_weight_quantized_and_dequantized_from_float_is_the_rounded_constant() -> None:
    """Float W -> QuantizeLinear -> DequantizeLinear (per output channel) -> Conv, as exporters write
    fake-quantized weights: a constant chain (no activation pair), its value the rounded W, not run."""
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(4, 3, 3, 3)).astype(np.float32)
    scale = (np.abs(weight).reshape(4, -1).max(1) / 127).astype(np.float32)
    arrays = {"w": weight, "s": scale, "z": np.zeros(4, np.int8)}
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"], axis=0),
        helper.make_node("Conv", ["x", "wd"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"x": SHAPE}, ["y"], arrays)
    assert float_activations(model)[1:] == (0, 0)
    module = prunable_module(model, SPECS)
    rounded = np.clip(np.round(weight / scale[:, None, None, None]), -128, 127) * scale[:, None, None, None]
    assert np.array_equal(module.layers["wd"].weight.detach().numpy(), rounded.astype(np.float32))
    assert not np.array_equal(rounded, weight)
    pruned = "; it was pruned, and is converted, as float"
    assert module.notes == float_note(pruned, "the weights of 1 layer dequantized", 0, 0)
    assert "the weights of 1 layer dequantized;" in module.notes[0]
