"""--prune on an ONNX source: pruned through quant/onnx_torch.py's evaluator (Conv/Gemm as modules),
re-exported under the source's names, converted and verified; refused in one line when the evaluator
cannot run the graph or nothing in it can be pruned (exit 1, nothing written)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import helper, numpy_helper

from edgeport.cli import main
from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.manifest import Manifest
from edgeport.onnx_graph import outer_reads
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.pipeline.torch_passes import prune_exporter
from edgeport.quant.onnx_torch import constant_tensors
from edgeport.quant.prune import PruningSection
from edgeport.quant.prune.onnx_source import folded_constants, prunable_module
from edgeport.tensors import TensorSpec
from tests.onnx_graphs import make_model
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.zoo import by_name

PRUNE = fast_options(round_to=4, min_width=4)


def _zoo_onnx(name: str, path: Path) -> Path:
    zoo = by_name(name)
    onnx.save(prune_exporter().graph(zoo.build(), zoo.example_inputs(), ["image"]), str(path))
    return path


def test_onnx_source_prunes_converts_and_keeps_its_names(tmp_path: Path) -> None:
    source = _zoo_onnx("ds_cnn_kws", tmp_path / "kws.onnx")
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=PRUNE))
    section = verified_section(result)
    assert section.removed() >= 0.3 and section.kept_whole == []
    assert section.after.onnx_macs == section.after.macs < section.before.macs
    converted = onnx.load(str(outdir / "model.onnx"))
    assert [i.name for i in converted.graph.input] == ["image"]
    assert [o.name for o in converted.graph.output] == ["output"]
    assert "pruned 3" in result.summary().splitlines()[0]


def _conv_then(op: str, path: Path, **attrs: object) -> Path:
    """x -> Conv(8) -> `op` -> y: a graph with one op the evaluator may lack."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node(op, ["c"], ["y"], **attrs),
    ]
    weight = np.random.default_rng(0).normal(size=(8, 3, 3, 3))
    onnx.save(make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], {"w": weight}), str(path))
    return path


@pytest.mark.parametrize(
    ("op", "attrs", "message"),
    [
        ("Hardmax", {"axis": 1}, "ONNX-to-PyTorch evaluator, which cannot run this graph: op Hardmax"),
        ("Relu", {}, "nothing in this model can be pruned"),
    ],
)
def test_onnx_source_refusals_are_one_line(
    op: str, attrs: dict, message: str, tmp_path: Path, capsys
) -> None:
    source = _conv_then(op, tmp_path / "m.onnx", **attrs)
    outdir = tmp_path / "out"
    assert main(["convert", str(source), "--prune", "0.3", "-o", str(outdir), "-q"]) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], captured.err
    assert not outdir.exists()


def test_an_op_the_evaluator_fails_on_is_named_in_one_line(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Failing at one sample too, it is the evaluator's failure (not the batch), named with its node."""
    from edgeport.quant import onnx_torch

    def broken(ev: object, a: dict, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(7, -1)

    monkeypatch.setitem(onnx_torch._OPS, "Relu", broken)
    source = _conv_then("Relu", tmp_path / "m.onnx", name="the_relu")
    assert main(["convert", str(source), "--prune", "0.3", "-o", str(tmp_path / "out"), "-q"]) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "evaluator, which fails on this graph: node 'the_relu' (Relu)" in lines[0]


class _TokenMlp(nn.Module):
    """Linears on a 3-D input: the exporter writes each as MatMul + Add, not Gemm."""

    def __init__(self) -> None:
        super().__init__()
        self.up, self.down = nn.Linear(12, 32), nn.Linear(32, 12)
        self.head = nn.Linear(12, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.down(torch.relu(self.up(x)))))


def test_matmul_add_linears_prune_and_convert(tmp_path: Path) -> None:
    from edgeport.converters.torch_to_onnx import export_onnx

    torch.manual_seed(0)
    # As an ONNX file comes: constants folded (the weights' transposes are initializers).
    graph = export_onnx(_TokenMlp().eval(), [torch.zeros(1, 7, 12)], tmp_path / "mlp.onnx", ["tokens"])
    assert {n.op_type for n in graph.graph.node} >= {"MatMul", "Add"} and "Gemm" not in {
        n.op_type for n in graph.graph.node
    }
    module = prunable_module(graph, [TensorSpec("tokens", [1, 7, 12])])
    assert sorted(type(m).__name__ for m in module.layers.values()) == ["Linear"] * 3
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(tmp_path / "mlp.onnx"), outdir=outdir, prune=PRUNE))
    section = verified_section(result)
    assert section.removed() >= 0.3 and section.kept_whole == []
    (up,) = [g for g in section.groups if g.channels_before == 32]
    assert up.channels_after < 32


class _BicubicUpsampler(nn.Module):
    """Conv -> bicubic upsampling -> Conv: the exporter writes a cubic Resize between the two."""

    def __init__(self) -> None:
        super().__init__()
        self.first, self.second = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = nn.functional.interpolate(torch.relu(self.first(x)), scale_factor=2, mode="bicubic")
        return self.second(up)


def test_a_cubic_resize_source_prunes_and_converts(tmp_path: Path) -> None:
    # The evaluator runs cubic Resize (it refused the mode before); the re-export traces through it.
    torch.manual_seed(0)
    graph = export_onnx(_BicubicUpsampler().eval(), [torch.zeros(1, 3, 8, 8)], tmp_path / "up.onnx", ["x"])
    assert any(n.op_type == "Resize" and b"cubic" in str(n.attribute).encode() for n in graph.graph.node)
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(tmp_path / "up.onnx"), outdir=outdir, prune=PRUNE))
    section = verified_section(result)
    (first,) = [g for g in section.groups if g.channels_before == 16]
    assert first.channels_after < 16 and section.after.macs < section.before.macs


def two_convs(path: Path, kernel: int = 3, **first: object) -> Path:
    """x -> Conv(8, `kernel` x `kernel`, attributes `first`) -> Relu -> Conv(4, 3x3, pads 1) -> y,
    saved at `path`."""
    rng = np.random.default_rng(0)
    weights = {"w1": rng.normal(size=(8, 3, kernel, kernel)), "w2": rng.normal(size=(4, 8, 3, 3))}
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], **first),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    onnx.save(make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], weights), str(path))
    return path


@pytest.mark.parametrize(
    "pads",
    [{"pads": [0, 0, 1, 1]}, {"auto_pad": "SAME_UPPER"}, {"auto_pad": "SAME_LOWER"}],
    ids=["explicit", "same_upper", "same_lower"],
)
def test_asymmetric_pad_conv_is_a_prunable_module(pads: dict, tmp_path: Path) -> None:
    # "same" for an even kernel: asymmetric
    model = onnx.load(str(two_convs(tmp_path / "pad.onnx", kernel=2, **pads)))
    module = prunable_module(model, [TensorSpec("x", [1, 3, 8, 8])])
    assert isinstance(module.layers["w1"], nn.Sequential)
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(tmp_path / "pad.onnx"), outdir=outdir, prune=PRUNE))
    ver = result.manifest.verification
    assert ver is not None and ver.passed
    section = PruningSection.of(Manifest.read(outdir), str(outdir))
    assert [(g.module, g.channels_before, g.channels_after) for g in section.groups] == [
        ("layers.w1.conv", 8, 4)
    ]


def transposed_token_mlp(path: Path) -> Path:
    """tokens [1, 7, 12] -> MatMul(Transpose(W1 [32, 12])) + b1 -> Relu -> MatMul(Transpose(W2 [5, 32]))
    -> y: Linears as an exporter writes them without folding constants (W as the Linear holds it)."""
    rng = np.random.default_rng(0)
    arrays = {
        "up.weight": rng.normal(size=(32, 12)),
        "up.bias": rng.normal(size=32),
        "head.weight": rng.normal(size=(5, 32)) / 4,
    }
    nodes = [
        helper.make_node("Transpose", ["up.weight"], ["up_t"], perm=[1, 0]),
        helper.make_node("MatMul", ["tokens", "up_t"], ["up_mm"]),
        helper.make_node("Add", ["up_mm", "up.bias"], ["up_out"]),
        helper.make_node("Relu", ["up_out"], ["r"]),
        helper.make_node("Transpose", ["head.weight"], ["head_t"]),  # perm defaults to reversed
        helper.make_node("MatMul", ["r", "head_t"], ["y"]),
    ]
    onnx.save(make_model(nodes, {"tokens": [1, 7, 12]}, ["y"], arrays), str(path))
    return path


def test_matmul_of_a_transposed_weight_is_a_linear_and_prunes(tmp_path: Path) -> None:
    source = transposed_token_mlp(tmp_path / "mlp.onnx")
    module = prunable_module(onnx.load(str(source)), [TensorSpec("tokens", [1, 7, 12])])
    assert {k: (m.in_features, m.out_features, m.bias is not None) for k, m in module.layers.items()} == {
        "up": (12, 32, True),
        "head": (32, 5, False),
    }
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=PRUNE))
    section = verified_section(result)
    assert [(g.module, g.channels_before) for g in section.groups] == [("layers.up", 32)]
    assert section.groups[0].channels_after < 32 and section.kept_whole == []
    assert "Transpose" not in {n.op_type for n in onnx.load(str(outdir / "model.onnx")).graph.node}


def _initializers_as_constant_nodes(path: Path) -> Path:
    """The graph at `path` with its initializers written as Constant nodes, as Paddle exports weights."""
    model = onnx.load(str(path))
    constants = [helper.make_node("Constant", [], [t.name], value=t) for t in model.graph.initializer]
    nodes = [*constants, *model.graph.node]
    del model.graph.initializer[:]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(path))
    return path


def test_weights_in_constant_nodes_prune(tmp_path: Path) -> None:
    source = _initializers_as_constant_nodes(two_convs(tmp_path / "convs.onnx", pads=[1, 1, 1, 1]))
    assert not onnx.load(str(source)).graph.initializer
    module = prunable_module(onnx.load(str(source)), [TensorSpec("x", [1, 3, 8, 8])])
    assert {k: type(m).__name__ for k, m in module.layers.items()} == {"w1": "Conv2d", "w2": "Conv2d"}
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=PRUNE))
    section = verified_section(result)
    assert [(g.module, g.channels_before) for g in section.groups] == [("layers.w1", 8)]
    assert section.groups[0].channels_after < 8


def test_a_constant_reshaped_with_a_leading_one_is_not_taken_for_the_batch(tmp_path: Path) -> None:
    """A per-channel constant [2] reshaped to [1, 2, 1, 1] (PP-OCR's squeeze-excite offsets): with 2
    channels, as many as the check's batch, the leading 1 is not the batch."""
    rng = np.random.default_rng(0)
    constants = {
        "w1": rng.normal(size=(2, 3, 3, 3)),
        "w2": rng.normal(size=(4, 2, 3, 3)),
        "offset": np.array([0.5, -0.5]),
        "shape": np.array([1, 2, 1, 1], np.int64),
    }
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["offset", "shape"], ["o"]),
        helper.make_node("Add", ["a", "o"], ["b"]),
        helper.make_node("Relu", ["b"], ["r"]),
        helper.make_node("Conv", ["r", "w2"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = make_model(nodes, {"x": [1, 3, 8, 8]}, ["y"], constants)
    module = prunable_module(model, [TensorSpec("x", [1, 3, 8, 8])])  # checked at batch 2 inside
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert module(x).shape == (2, 4, 8, 8)


def test_constant_tensors_and_the_nodes_folded_into_layers() -> None:
    """Constant: what no graph input reaches, however computed (Identity chains, a DequantizeLinear of
    integers). Folded (not run): a node whose outputs only layers that took them, or folded nodes, read."""
    nodes = [
        helper.make_node("Identity", ["b"], ["b1"]),
        helper.make_node("Identity", ["b1"], ["b2"]),
        helper.make_node("Relu", ["b1"], ["r"]),  # b1 is read by an op too: it runs
        helper.make_node("DequantizeLinear", ["q", "s"], ["w"]),
        helper.make_node("Identity", ["x"], ["x1"]),
        helper.make_node("Conv", ["x1", "w", "b2"], ["y"]),
    ]
    arrays = {"b": np.zeros(2, np.float32), "q": np.ones((2, 1, 1, 1), np.int8), "s": np.float32(0.5)}
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 2, 2])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in arrays.items()],
    )
    assert constant_tensors(graph) == {"b", "q", "s", "b1", "b2", "r", "w"}
    assert folded_constants(nodes, Counter({"w": 1, "b2": 1}), {"y"}) == {"b2", "w"}
    assert folded_constants(nodes, Counter({"w": 1, "b2": 1}), {"y", "w"}) == {"b2"}


def _branch(name: str, nodes: list[onnx.NodeProto], output: str) -> onnx.GraphProto:
    return helper.make_graph(
        nodes, name, [], [helper.make_tensor_value_info(output, onnx.TensorProto.FLOAT, None)]
    )


def test_a_tensor_a_subgraph_computes_from_a_graph_input_is_not_constant() -> None:
    """An If on a constant condition is constant only when its branches read constants (what they define
    themselves aside), at any depth: `from_x` reads graph input x in a branch, `nested` in a branch's
    own If; `from_b` reads initializer b and its own tensor t."""
    reads_x = _branch("reads_x", [helper.make_node("Identity", ["x"], ["o1"])], "o1")
    reads_b = _branch(
        "reads_b", [helper.make_node("Relu", ["b"], ["t"]), helper.make_node("Identity", ["t"], ["o2"])], "o2"
    )
    inner = helper.make_node("If", ["cond"], ["o3"], then_branch=reads_x, else_branch=reads_b)
    nodes = [
        helper.make_node("If", ["cond"], ["from_x"], then_branch=reads_x, else_branch=reads_b),
        helper.make_node("If", ["cond"], ["from_b"], then_branch=reads_b, else_branch=reads_b),
        helper.make_node(
            "If", ["cond"], ["nested"], then_branch=_branch("outer", [inner], "o3"), else_branch=reads_b
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [
            helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
            for n in ("from_x", "from_b", "nested")
        ],
        [
            numpy_helper.from_array(np.array(True), "cond"),
            numpy_helper.from_array(np.ones(2, np.float32), "b"),
        ],
    )
    assert [outer_reads(n) for n in nodes] == [
        {"x", "b"},
        {"b"},
        {"x", "b", "cond"},
    ]  # the inner If's cond too
    assert constant_tensors(graph) == {"cond", "b", "from_b"}


class EqualBiases(nn.Module):
    """Two convolutions with the same (zero) bias: torch.onnx.export writes the second as an Identity of
    the first's initializer."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        with torch.no_grad():
            self.conv1.bias.zero_()
            self.conv2.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def test_a_bias_read_through_an_identity_is_a_layer_s_and_prunes(tmp_path: Path) -> None:
    source = tmp_path / "equal.onnx"
    graph = export_onnx(EqualBiases(), [torch.zeros(1, 3, 8, 8)], source, ["x"])
    assert "Identity" in {n.op_type for n in graph.graph.node}
    module = prunable_module(graph, [TensorSpec("x", [1, 3, 8, 8])])
    assert sorted(type(m).__name__ for m in module.layers.values()) == ["Conv2d", "Conv2d"]
    outdir = tmp_path / "out"
    section = verified_section(convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=PRUNE)))
    assert [g.channels_before for g in section.groups] == [8] and section.groups[0].channels_after < 8
    assert section.kept_whole == []
