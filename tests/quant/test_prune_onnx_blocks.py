"""Residual blocks of an ONNX source (quant/prune/onnx_blocks.py, onnx_source.py's PrunableGraph):
found on the graph as on the PyTorch model it was exported from, removed as that model's blocks are
(identity), listed in the manifest by their Add node, and gone from the re-exported ONNX and the
.tflite. --prune-exclude takes a block by that name, as it takes a group by the layer it is listed
under."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
from onnx import helper

from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.pipeline.torch_passes import prune_exporter, reexported
from edgeport.quant.prune import prune_module
from edgeport.quant.prune.blocks import block_removed, find_blocks, without_blocks
from edgeport.quant.prune.onnx_blocks import residual_spans
from edgeport.quant.prune.onnx_source import PrunableGraph, prunable_module
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model
from tests.quant.models import _randomize_bns
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    verified_section,
)
from tests.quant.test_prune_bad_input import _one_line
from tests.zoo.attention import HandAttention

SHAPE = [1, 3, 16, 16]
SPECS = [TensorSpec("image", SHAPE)]


class Basic(nn.Module):
    """A ResNet basic block; with `cout` or `stride`, a 1x1 convolution on the shortcut (projection)."""

    def __init__(self, cin: int, cout: int | None = None, stride: int = 1) -> None:
        super().__init__()
        cout = cout or cin
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)
        self.project = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cout != cin else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        out += x if self.project is None else self.project(x)
        return torch.relu(out)


class TinyResNet(nn.Module):
    """Stem, a stage of two blocks, a projected down-sampling block and one more block, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.layer1 = nn.Sequential(Basic(8), Basic(8))
        self.layer2 = nn.Sequential(Basic(8, 16, 2), Basic(16))
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(self.stem(x))).mean((2, 3)))


def tiny_resnet() -> nn.Module:
    torch.manual_seed(0)
    return _randomize_bns(TinyResNet()).eval()


def silent_resnet() -> nn.Module:
    """tiny_resnet() with layer1.0's branch silenced (its last BatchNorm's scale and shift zero):
    removing that block changes nothing."""
    model = tiny_resnet()
    with torch.no_grad():
        model.layer1[0].bn2.weight.zero_()
        model.layer1[0].bn2.bias.zero_()
    return model


def _onnx(model: nn.Module, path: Path) -> Path:
    """`model` as an ONNX file comes (torch.onnx.export, constants folded: BatchNorms in the convs)."""
    export_onnx(model, [torch.zeros(SHAPE)], path, ["image"])
    return path


def _graph(model: nn.Module, path: Path) -> PrunableGraph:
    return prunable_module(onnx.load(str(_onnx(model, path))), SPECS)


def _batch(n: int = 4) -> torch.Tensor:
    return torch.randn(n, *SHAPE[1:], generator=torch.Generator().manual_seed(1))


def test_onnx_blocks_are_the_torch_models_blocks(tmp_path: Path) -> None:
    """One block per basic block, named after its Add node, each holding its two convolutions; the
    projected block is not one, and a stage of blocks is not taken for one."""
    model = tiny_resnet()
    x = _batch(1)
    graph = _graph(model, tmp_path / "r.onnx")
    torch_blocks, onnx_blocks = find_blocks(model, [x]), find_blocks(graph, [x])
    assert [b.name for b in torch_blocks] == ["layer1.0", "layer1.1", "layer2.1"]
    assert [b.name for b in onnx_blocks] == [
        "/layer1/layer1.0/Add",
        "/layer1/layer1.1/Add",
        "/layer2/layer2.1/Add",
    ]
    assert all(len(b.modules) == 2 and all(m.startswith("layers.") for m in b.modules) for b in onnx_blocks)
    # Found again the same; not one holding an excluded module.
    assert find_blocks(graph, [x]) == onnx_blocks
    excluded = [graph.get_submodule(onnx_blocks[1].modules[0])]
    assert find_blocks(graph, [x], excluded) == [onnx_blocks[0], onnx_blocks[2]]


def test_an_onnx_block_removed_computes_the_torch_block_removed(tmp_path: Path) -> None:
    model = tiny_resnet()
    graph = _graph(model, tmp_path / "r.onnx")
    x = _batch()
    pairs = list(zip(find_blocks(model, [x[:1]]), find_blocks(graph, [x[:1]]), strict=True))
    with torch.no_grad():
        full = model(x)
        for torch_block, onnx_block in pairs:
            with block_removed(model, torch_block), block_removed(graph, onnx_block):
                without = model(x)
                assert torch.allclose(graph(x), without, atol=1e-5)
                assert not torch.allclose(without, full, atol=1e-3)
        assert torch.allclose(graph(x), full, atol=1e-5)  # each put back


def test_a_removed_onnx_block_leaves_the_reexported_graph(tmp_path: Path) -> None:
    """without_blocks drops the block's layers (their parameters) and its nodes from the export."""
    graph = _graph(tiny_resnet(), tmp_path / "r.onnx")
    block = find_blocks(graph, [_batch(1)])[0]
    params = sum(p.numel() for p in graph.parameters())
    without_blocks(graph, [block])
    assert sum(p.numel() for p in graph.parameters()) == params - 2 * 8 * 8 * 9 - 2 * 8  # 2 convs + biases
    ops = Counter(n.op_type for n in reexported(graph, SPECS, prune_exporter()).graph.node)
    assert (ops["Conv"], ops["Add"], ops["Relu"]) == (8, 3, 7)  # of 10, 4 and 9


class RMSNorm(nn.Module):
    """x / rms(x) * weight (the evaluator has no LayerNormalization op; this exports to ops it runs)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(1 + 0.1 * torch.randn(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class PreNormLayer(nn.Module):
    """A pre-norm transformer layer: x = x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int = 30, heads: int = 5) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2 = RMSNorm(dim), HandAttention(dim, heads), RMSNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyTransformer(nn.Module):
    """An embedding, two pre-norm layers, a head."""

    def __init__(self, dim: int = 30) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.layers = nn.Sequential(PreNormLayer(dim), PreNormLayer(dim))
        self.head = nn.Linear(dim, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.embed(x)))


def test_a_pre_norm_transformer_layer_is_one_onnx_block_as_in_torch(tmp_path: Path) -> None:
    """Both residual Adds of a layer are in its scope (/layers/layers.0/Add, .../Add_1): one block, as
    the PyTorch layer module is, named after its last Add, holding the layer's six Linears (attention's
    q, k, v, out; the MLP's two) and nothing else, and removed it computes the PyTorch layer removed."""
    torch.manual_seed(0)
    model = TinyTransformer().eval()
    shape = [1, 7, 8]
    path = tmp_path / "t.onnx"
    export_onnx(model, [torch.zeros(shape)], path, ["tokens"])
    graph = prunable_module(onnx.load(str(path)), [TensorSpec("tokens", shape)])
    x = torch.randn(4, *shape[1:], generator=torch.Generator().manual_seed(1))
    torch_blocks, onnx_blocks = find_blocks(model, [x[:1]]), find_blocks(graph, [x[:1]])
    assert [b.name for b in torch_blocks] == ["layers.0", "layers.1"]
    assert [b.name for b in onnx_blocks] == ["/layers/layers.0/Add_1", "/layers/layers.1/Add_1"]
    linears = {n: m.weight for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        full = model(x)
        for torch_block, onnx_block in zip(torch_blocks, onnx_blocks, strict=True):
            # Each ONNX layer the block holds is one of the PyTorch block's Linears (the same weight).
            held = {
                next(
                    n
                    for n, w in linears.items()
                    if w.shape == layer.weight.shape and torch.equal(w, layer.weight)
                )
                for layer in (graph.get_submodule(m) for m in onnx_block.modules)
            }
            assert held == {n for n in linears if torch_block.holds(n)} and len(held) == 6
            with block_removed(model, torch_block), block_removed(graph, onnx_block):
                without = model(x)
                assert torch.allclose(graph(x), without, atol=1e-5)
                assert not torch.allclose(without, full, atol=1e-3)
        assert torch.allclose(graph(x), full, atol=1e-5)  # each put back


def _spans(nodes: list[onnx.NodeProto], inits: dict[str, np.ndarray]) -> list[tuple[str, str, int]]:
    model = make_model(nodes, {"x": [1, 4, 4, 4]}, [nodes[-1].output[0]], inits)
    evaluator = PrunableGraph(model)
    shapes = evaluator.shapes(torch.zeros(1, 4, 4, 4))
    found = residual_spans(evaluator._nodes, evaluator._constant_tensors, shapes, evaluator.output_names)
    return [(s.input, s.output, len(s.nodes)) for s in found]


def _conv(x: str, w: str, y: str) -> onnx.NodeProto:
    return helper.make_node("Conv", [x, w], [y], pads=[1, 1, 1, 1])


def _chain(first: str, second: str, stem: bool = True) -> list[onnx.NodeProto]:
    """s = conv(x) (x itself without `stem`), h = s + f(s), y = h + g(h), the Adds named `first` and
    `second`."""
    s = "s" if stem else "x"
    return [
        *([_conv("x", "w2", "s")] if stem else []),
        _conv(s, "w0", "f"),
        helper.make_node("Add", [s, "f"], ["h"], name=first),
        _conv("h", "w1", "g"),
        helper.make_node("Add", ["g", "h"], ["y"], name=second),
    ]


WEIGHTS = {f"w{i}": np.random.default_rng(i).normal(size=(4, 4, 3, 3)) for i in range(3)}


@pytest.mark.parametrize(
    ("nodes", "expected"),
    [
        # relu(x + conv(x)) after a conv: the block takes its ReLU.
        (
            [
                _conv("x", "w0", "a"),
                _conv("a", "w1", "b"),
                helper.make_node("Add", ["a", "b"], ["s"]),
                helper.make_node("Relu", ["s"], ["y"]),
            ],
            [("a", "y", 3)],
        ),
        # A chain (pre-norm transformer layer): h = x + f(x), y = h + g(h), both Adds in one module's
        # scope: one block, as the module is in PyTorch.
        (_chain("/layer/Add", "/layer/Add_1"), [("s", "y", 4)]),
        # Each Add in a module of its own (a residual wrapper per sublayer; blocks in a stage): two.
        (_chain("/layers.0/Add", "/layers.1/Add"), [("s", "h", 2), ("h", "y", 2)]),
        # Adds of the model's own forward (the root's scope) or unnamed: nothing says they are one module.
        (_chain("/Add", "/Add_1"), [("s", "h", 2), ("h", "y", 2)]),
        (_chain("", ""), [("s", "h", 2), ("h", "y", 2)]),
        # One scope, but h also read past the second Add: the two are no span together.
        (
            [*_chain("/layer/Add", "/layer/Add_1"), helper.make_node("Mul", ["y", "h"], ["z"])],
            [("s", "h", 2), ("h", "y", 2)],
        ),
        # The module from the graph's input to its output is the model itself: no block, nor its halves.
        (_chain("/layer/Add", "/layer/Add_1", stem=False), []),
        # Projection shortcut: conv(x) + conv'(x) is not x plus a branch.
        (
            [_conv("x", "w0", "f"), _conv("x", "w1", "g"), helper.make_node("Add", ["f", "g"], ["y"])],
            [],
        ),
        # Scaled shortcut: conv(x) + 2x.
        (
            [
                _conv("x", "w0", "f"),
                helper.make_node("Mul", ["x", "two"], ["d"]),
                helper.make_node("Add", ["f", "d"], ["y"]),
            ],
            [],
        ),
        # A tensor inside read outside: the branch's output also feeds the Mul after the block.
        (
            [
                _conv("x", "w0", "a"),
                _conv("a", "w1", "b"),
                helper.make_node("Add", ["a", "b"], ["s"]),
                helper.make_node("Mul", ["s", "b"], ["y"]),
            ],
            [],
        ),
        # From the graph's input to its output: the model itself, not a block of it.
        ([_conv("x", "w0", "f"), helper.make_node("Add", ["x", "f"], ["y"])], []),
    ],
    ids=[
        "relu_after",
        "chain_one_module",
        "chain_two_modules",
        "chain_root",
        "chain_unnamed",
        "chain_read_past",
        "chain_whole_model",
        "projection",
        "scaled",
        "read_outside",
        "whole_model",
    ],
)
def test_residual_spans(nodes: list[onnx.NodeProto], expected: list) -> None:
    assert _spans(nodes, {**WEIGHTS, "two": np.array(2.0, dtype=np.float32)}) == expected


def test_pruning_an_onnx_source_removes_a_block_whole(tmp_path: Path) -> None:
    """convert SOURCE.onnx --prune: the silent block costs nothing to remove, so pruning removes it,
    lists it by its Add node, and its convolutions and Add leave the re-exported ONNX and the .tflite."""
    source = _onnx(silent_resnet(), tmp_path / "r.onnx")
    before = Counter(n.op_type for n in onnx.load(str(source)).graph.node)
    result = convert_model(
        ConvertOptions(source=str(source), outdir=tmp_path / "out", prune=fast_options(ratio=0.1))
    )
    section = verified_section(result)
    assert section.blocks_removed == ["/layer1/layer1.0/Add"]
    after = Counter(n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node)
    assert (after["Conv"], after["Add"]) == (before["Conv"] - 2, before["Add"] - 1)
    ops = read_tflite(tmp_path / "out" / "model_float32.tflite").op_counts
    assert (ops["CONV_2D"], ops["ADD"]) == (before["Conv"] - 2, before["Add"] - 1)


def test_no_prune_blocks_keeps_an_onnx_sources_blocks(tmp_path: Path) -> None:
    graph = _graph(silent_resnet(), tmp_path / "r.onnx")
    result = prune_module(graph, SPECS, {}, fast_options(ratio=0.1, blocks=False))
    assert result.section.blocks_removed == [] and not result.module.bypassed
    with torch.no_grad():
        assert result.module(_batch()).shape == (4, 10)


def test_an_onnx_block_excluded_by_its_add_node_is_kept(tmp_path: Path) -> None:
    """--prune-exclude takes a block by the name the manifest lists it under (its Add node): the
    silent block, removed without it, stays, and its convolutions keep their channels (excluding a
    block keeps the modules it holds whole, as a PyTorch block module's name does)."""
    source = _onnx(silent_resnet(), tmp_path / "r.onnx")
    graph = prunable_module(onnx.load(str(source)), SPECS)
    block = find_blocks(graph, [_batch(1)])[0]
    assert block.name == "/layer1/layer1.0/Add"
    prune = fast_options(ratio=0.1, exclude=[block.name])
    result = convert_model(ConvertOptions(source=str(source), outdir=tmp_path / "out", prune=prune))
    section = verified_section(result)
    assert section.blocks_removed == [] and section.excluded == [block.name]
    listed = {m for row in section.groups for m in row.modules}
    assert listed and not listed & set(block.modules)
    after = Counter(n.op_type for n in onnx.load(str(tmp_path / "out" / "model.onnx")).graph.node)
    before = Counter(n.op_type for n in onnx.load(str(source)).graph.node)
    assert (after["Conv"], after["Add"]) == (before["Conv"], before["Add"])


def test_an_onnx_group_excluded_by_its_listed_name_keeps_its_width(tmp_path: Path) -> None:
    """A channel group of an ONNX source is listed by its root layer's name, which --prune-exclude
    takes: the group narrowed without it keeps its width with it."""
    graph = _graph(tiny_resnet(), tmp_path / "r.onnx")
    cut = prune_module(graph, SPECS, {}, fast_options(ratio=0.3, blocks=False)).section.groups
    narrowed = next(row for row in cut if row.channels_after < row.channels_before)
    result = prune_module(graph, SPECS, {}, fast_options(ratio=0.3, blocks=False, exclude=[narrowed.module]))
    assert all(row.module != narrowed.module for row in result.section.groups)
    for name in narrowed.modules:
        kept, unpruned = result.module.get_submodule(name).weight, graph.get_submodule(name).weight
        assert kept.shape == unpruned.shape


def test_a_misspelt_add_node_is_refused_naming_the_block(tmp_path: Path, capsys) -> None:
    source = _onnx(tiny_resnet(), tmp_path / "r.onnx")
    outdir = tmp_path / "out"
    argv = ["convert", str(source), "--prune", "0.3", "--prune-exclude", "/layer2/layer2.1/Ad"]
    line = _one_line([*argv, "-o", str(outdir), "-q"], outdir, capsys)
    assert "'/layer2/layer2.1/Ad' names no module or residual block" in line
    assert "Close names: /layer2/layer2.1/Add," in line
