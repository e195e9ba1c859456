"""Residual streams of ONNX sources across option-A shortcuts: a Pad node that pads only the channel axis
with constants (torch.onnx.export writes `F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p))` as Slice and a
Pad whose amounts a chain of Constant ops computes) becomes channel_pads' selection layer on pruning's
copy of quant/onnx_torch.py's evaluator, so each stage's stream is its own group as for the PyTorch
source; one that pads spatial axes too becomes a pad of those and a selection, as the fx path splits it;
the unpruned model keeps its Pad; other Pads stay as they are."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper

from edgeport.cli import main
from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.manifest import Manifest
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import onnx_torch
from edgeport.quant.prune import PruningSection, prune_module
from edgeport.quant.prune.channel_pads import ChannelGather, is_selection, kept_pad_note
from edgeport.quant.prune.onnx_source import prunable_module
from edgeport.tensors import TensorSpec
from tests.onnx_graphs import make_model
from tests.quant.prune_models import (
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
    verified_section,
)
from tests.quant.stream_models import INPUT_SHAPE, option_a_resnet, spatial_pad

SPECS = [TensorSpec("x", INPUT_SHAPE)]
# Every group cut by the same fraction: the stream groups too, whatever their measured sensitivity.
UNIFORM = fast_options(ratio=0.4, allocation="uniform")


def _exported(model: nn.Module, path: Path) -> onnx.ModelProto:
    """`model` as torch.onnx.export writes it (constants folded: BatchNorms inside the Convs)."""
    return export_onnx(model, [torch.zeros(*INPUT_SHAPE)], path, ["x"])


def _selection_names(module: nn.Module) -> list[str]:
    """The names the evaluator's channel pads take as selection layers (on a copy)."""
    names, kept = copy.deepcopy(module).channel_pads_as_selections(random_batch(1))
    assert kept == {}
    return names


def _assert_same_cut(ours, theirs) -> None:  # noqa: ANN001 - two PruneResults
    """The ONNX source's cut is the PyTorch source's: widths, MACs and convolution shapes."""
    widths = sorted((g.channels_before, g.channels_after) for g in ours.section.groups)
    assert widths == sorted((g.channels_before, g.channels_after) for g in theirs.section.groups)
    assert (ours.section.before.macs, ours.section.after.macs) == (
        theirs.section.before.macs,
        theirs.section.after.macs,
    )
    assert _conv_shapes(ours.module) == _conv_shapes(theirs.module)


def _conv_shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return [tuple(m.weight.shape) for m in module.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def test_the_exporter_s_pad_amounts_are_folded_from_its_constant_chain(tmp_path: Path) -> None:
    graph = _exported(option_a_resnet(), tmp_path / "oa.onnx")
    (pad,) = [n for n in graph.graph.node if n.op_type == "Pad"]
    assert pad.input[1] not in {i.name for i in graph.graph.initializer}  # computed, not a constant
    module = prunable_module(graph, SPECS)
    assert module.constant(pad.input[1]).tolist() == [0, 4, 0, 0, 0, 4, 0, 0]
    assert module.constant(pad.input[0]) is None  # the input reaches it
    assert module.shapes(random_batch(1))[pad.input[0]] == (1, 8, 4, 4)


def test_an_onnx_option_a_resnet_prunes_each_stage_stream_as_its_pytorch_source(tmp_path: Path) -> None:
    """One group per stage's stream (the stem's, stage 2's), each passing the cut == zeroed check, cut
    to the widths, MACs and weight shapes pruning the PyTorch module gives; the unpruned module keeps
    its Pad."""
    module = prunable_module(_exported(option_a_resnet(), tmp_path / "oa.onnx"), SPECS)
    ours = prune_module(module, SPECS, {}, UNIFORM)
    theirs = prune_module(option_a_resnet(), SPECS, {}, UNIFORM)
    assert ours.section.kept_whole == [] and theirs.section.kept_whole == []
    (pad,) = _selection_names(module)
    streams = [g for g in ours.section.groups if pad in g.modules]
    assert sorted(g.channels_before for g in streams) == [8, 16]
    assert all(g.channels_after < g.channels_before for g in streams)
    _assert_same_cut(ours, theirs)
    assert [type(m) for m in ours.module.layers.values()].count(ChannelGather) == 1
    assert not any(is_selection(m) for m in [*module.modules(), *ours.module.modules()])
    with torch.no_grad():
        assert ours.module(random_batch(3)).shape == (3, 4)


def test_an_onnx_selection_the_section_lists_is_a_name_exclude_takes(tmp_path: Path) -> None:
    """The evaluator's selection (made on pruning's copy) is listed among its groups' modules (the test
    above); --prune-exclude takes that name, and both streams it joins keep their widths."""
    module = prunable_module(_exported(option_a_resnet(), tmp_path / "oa.onnx"), SPECS)
    (pad,) = _selection_names(module)
    result = prune_module(module, SPECS, {}, fast_options(ratio=0.2, allocation="uniform", exclude=[pad]))
    assert result.section.excluded == [pad]
    assert result.section.groups and not any(pad in g.modules for g in result.section.groups)
    assert result.section.removed("flops") >= 0.2


def test_an_onnx_option_a_source_converts_with_its_streams_cut(tmp_path: Path) -> None:
    source = tmp_path / "oa.onnx"
    (pad,) = _selection_names(prunable_module(_exported(option_a_resnet(), source), SPECS))
    outdir = tmp_path / "out"
    result = convert_model(ConvertOptions(source=str(source), outdir=outdir, prune=UNIFORM))
    section = verified_section(result)
    streams = [g for g in section.groups if pad in g.modules]
    assert len(streams) == 2 and all(g.channels_after < g.channels_before for g in streams)
    assert section.after.onnx_macs == section.after.macs  # the cut pad is a memory op
    assert [i.name for i in onnx.load(str(outdir / "model.onnx")).graph.input] == ["x"]


def test_convert_of_an_onnx_option_a_source_with_prune_verifies(tmp_path: Path, capsys) -> None:
    source = tmp_path / "oa.onnx"
    _exported(option_a_resnet(), source)
    outdir = tmp_path / "out"
    args = ["convert", str(source), "--prune", "0.3", "--prune-recovery", "none", "-o", str(outdir), "-q"]
    assert main(args) == 0, capsys.readouterr().err
    manifest = Manifest.read(outdir)
    assert manifest.verification is not None and manifest.verification.passed
    section = PruningSection.of(manifest, str(outdir))
    assert section.kept_whole == [] and section.removed() >= 0.3


def test_least_squares_recovery_runs_on_an_onnx_source(tmp_path: Path) -> None:
    """Least squares ends a forward at the layer it solves by raising from a hook: the evaluator passes
    that through instead of calling it the node's failure."""
    module = prunable_module(_exported(option_a_resnet(), tmp_path / "oa.onnx"), SPECS)
    options = UNIFORM.model_copy(update={"recovery": "distill", "max_steps": 2})
    result = prune_module(module, SPECS, {}, options)
    assert result.section.recovery.reconstructed_layers > 0
    assert result.section.recovery.steps == 2


def test_a_spatial_pad_stays_a_pad(tmp_path: Path) -> None:
    module = prunable_module(_exported(spatial_pad(), tmp_path / "sp.onnx"), SPECS)
    assert module.channel_pads_as_selections(random_batch(1)) == ([], {})
    result = prune_module(module, SPECS, {}, UNIFORM)
    assert not any(isinstance(m, ChannelGather) or is_selection(m) for m in result.module.modules())
    assert result.section.removed() >= 0.4


def _pad_graph(
    pads: list[int], opset: int = 17, value: float | None = None, axes: list[int] | None = None
) -> onnx.ModelProto:
    """x [1, 4, 6, 6] -> Relu -> Pad(`pads`; an attribute before opset 11) -> 1x1 Conv(3) -> y."""
    full = pads if axes is None else [0] * 8
    for i, axis in enumerate(axes or []):
        full[axis], full[axis + 4] = pads[i], pads[i + len(axes)]
    constants = {"w": np.random.default_rng(0).normal(size=(3, 4 + full[1] + full[5], 1, 1))}
    if opset < 11:
        pad = helper.make_node("Pad", ["r"], ["p"], pads=pads, value=value or 0.0)
    else:
        constants["pads"] = np.array(pads, np.int64)
        if value is not None:
            constants["value"] = np.array(value, np.float32)
        if axes is not None:
            constants["axes"] = np.array(axes, np.int64)
        names = ["r", "pads", "value" if value is not None else "", "axes" if axes is not None else ""]
        while not names[-1]:
            names.pop()
        pad = helper.make_node("Pad", names, ["p"], name="the_pad")
    nodes = [helper.make_node("Relu", ["x"], ["r"]), pad, helper.make_node("Conv", ["p", "w"], ["y"])]
    return make_model(nodes, {"x": [1, 4, 6, 6]}, ["y"], constants, opset)


@pytest.mark.parametrize(
    ("graph", "selections"),
    [
        (_pad_graph([0, 2, 0, 0, 0, 1, 0, 0]), 1),
        (_pad_graph([0, 2, 0, 0, 0, 2, 0, 0], value=0.5), 1),
        (_pad_graph([2, 1], opset=18, axes=[1]), 1),
        (_pad_graph([0, 1, 0, 0, 0, 3, 0, 0], opset=10), 1),
        (_pad_graph([0, 0, 1, 1, 0, 0, 1, 1]), 0),
        (_pad_graph([0, 2, 1, 1, 0, 2, 1, 1]), 1),
        (_pad_graph([0, 1, 0, 2, 0, 3, 1, 0], value=-0.5), 1),
    ],
    ids=[
        "channels",
        "value",
        "opset18_axes",
        "opset10_attribute",
        "spatial",
        "channels_and_spatial",
        "uneven_channels_and_spatial_value",
    ],
)
def test_which_pads_become_selections(graph: onnx.ModelProto, selections: int) -> None:
    module = prunable_module(graph, [TensorSpec("x", [1, 4, 6, 6])])
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = module(x)
    names, kept = module.channel_pads_as_selections(x[:1])
    assert (
        kept == {} and len(names) == selections and all(is_selection(module.get_submodule(n)) for n in names)
    )
    with torch.no_grad():
        assert torch.allclose(module(x), want, rtol=0, atol=1e-6)


COMPUTED = "its amounts are not constants"


def _computed_amounts(tensor: str, out: str) -> list[onnx.NodeProto]:
    """Nodes writing `out`: the pads of H/4 channels either side of `tensor` (rank 4), Concat'ed from
    Shape(`tensor`): computed from the input, not constants (needs _AMOUNT_CONSTANTS)."""
    return [
        helper.make_node("Shape", [tensor], [f"{out}_shape"]),
        helper.make_node("Slice", [f"{out}_shape", "two", "three"], [f"{out}_height"]),
        helper.make_node("Div", [f"{out}_height", "four"], [f"{out}_quarter"]),
        helper.make_node("Concat", ["z1", f"{out}_quarter", "z3", f"{out}_quarter", "z2"], [out], axis=0),
    ]


_AMOUNT_CONSTANTS = {
    **{name: np.array(value, np.int64) for name, value in [("two", [2]), ("three", [3]), ("four", [4])]},
    **{f"z{n}": np.zeros(n, np.int64) for n in (1, 2, 3)},
}


def _padded_stages(widths: list[int], pads: list[str]) -> onnx.ModelProto:
    """x -> Conv(widths[0]) -> Relu, then per stage i: Relu(Conv(widths[i + 1]) + Pad), the Pad widening
    the stream by 2 channels either side, its amounts `pads[i]`: "constant" (an initializer) or
    "computed" (_computed_amounts: H/4 = 2, from the input); the last stream -> Conv(6) -> Relu -> mean
    -> Gemm(4). Node i's Pad is named f"{pads[i]}_pad{i}". Seeded."""
    rng = np.random.default_rng(0)
    conv = {"pads": [1, 1, 1, 1]}
    constants = {**_AMOUNT_CONSTANTS, "constant": np.array([0, 2, 0, 0, 0, 2, 0, 0], np.int64)}
    ins = [INPUT_SHAPE[1], *widths, 6]
    for i, (cin, cout) in enumerate(zip(ins, ins[1:], strict=False)):
        constants[f"w{i}"] = rng.normal(size=(cout, cin, 3, 3)) * 0.3
        constants[f"b{i}"] = rng.normal(size=cout) * 0.1
    constants |= {"wf": rng.normal(size=(6, 4)), "bf": rng.normal(size=4)}
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], **conv),
        helper.make_node("Relu", ["c0"], ["r0"]),
    ]
    for i, amounts in enumerate(pads):
        stream, out = f"r{i}", f"r{i + 1}"
        if amounts == "computed":
            nodes += _computed_amounts(stream, f"amounts{i}")
        nodes += [
            helper.make_node("Conv", [stream, f"w{i + 1}", f"b{i + 1}"], [f"c{i + 1}"], **conv),
            helper.make_node(
                "Pad",
                [stream, "constant" if amounts == "constant" else f"amounts{i}"],
                [f"p{i}"],
                name=f"{amounts}_pad{i}",
            ),
            helper.make_node("Add", [f"c{i + 1}", f"p{i}"], [f"s{i}"]),
            helper.make_node("Relu", [f"s{i}"], [out]),
        ]
    last = len(pads) + 1
    nodes += [
        helper.make_node("Conv", [f"r{len(pads)}", f"w{last}", f"b{last}"], ["c_last"], **conv),
        helper.make_node("Relu", ["c_last"], ["r_last"]),
        helper.make_node("GlobalAveragePool", ["r_last"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "wf", "bf"], ["y"]),
    ]
    return make_model(nodes, {"x": INPUT_SHAPE}, ["y"], constants)


def test_a_pad_whose_amounts_are_computed_keeps_its_stream_whole_with_a_note() -> None:
    """No selection is made of it; pruning says why its stream is kept whole (a note naming it), leaves
    the stream's convolutions and the Pad as they are, and cuts the rest: a model that still runs."""
    module = prunable_module(_padded_stages([4, 8], ["computed"]), SPECS)
    assert copy.deepcopy(module).channel_pads_as_selections(random_batch(1)) == (
        [],
        {"Pad node 'computed_pad0'": COMPUTED},
    )
    result = prune_module(module, SPECS, {}, UNIFORM.model_copy(update={"ratio": 0.2}))
    section = result.section
    assert kept_pad_note("the model, Pad node 'computed_pad0'", COMPUTED) in section.kept_whole
    assert [g.modules for g in section.groups] == [["layers.w2", "layers.wf"]]
    assert all(g.channels_after < g.channels_before for g in section.groups)
    shapes = _conv_shapes(result.module)
    assert shapes[:2] == [(4, INPUT_SHAPE[1], 3, 3), (8, 4, 3, 3)] and shapes[2][0] < 6
    assert shapes[3] == (4, shapes[2][0]) and section.after.macs < section.before.macs
    assert not any(isinstance(m, ChannelGather) or is_selection(m) for m in result.module.modules())
    with torch.no_grad():
        assert result.module(random_batch(3)).shape == (3, 4)


def test_a_computed_pad_beside_a_constant_one_gets_its_own_note() -> None:
    """The constant channel Pad still becomes a selection (its input stream, the stem's, is cut); the
    computed one is named in its own note, though the graph made a selection, and its stream is kept."""
    module = prunable_module(_padded_stages([4, 8, 12], ["constant", "computed"]), SPECS)
    names, kept = copy.deepcopy(module).channel_pads_as_selections(random_batch(1))
    assert names == ["layers.constant_pad0"] and kept == {"Pad node 'computed_pad1'": COMPUTED}
    result = prune_module(module, SPECS, {}, UNIFORM.model_copy(update={"ratio": 0.2}))
    section = result.section
    assert kept_pad_note("the model, Pad node 'computed_pad1'", COMPUTED) in section.kept_whole
    assert not any("constant_pad0" in note for note in section.kept_whole)
    (stem,) = [g for g in section.groups if "layers.constant_pad0" in g.modules]
    assert "layers.w0" in stem.modules and stem.channels_after < stem.channels_before == 4
    assert [type(m) for m in result.module.layers.values()].count(ChannelGather) == 1
    assert [shape[0] for shape in _conv_shapes(result.module)[1:3]] == [8, 12]  # the padded streams
    with torch.no_grad():
        assert result.module(random_batch(3)).shape == (3, 4)


class PaddedShortcut(nn.Module):
    """A stem to 4 channels, then a block to 8 whose 3x3 convolution grows the map by two (padding 2) and
    whose shortcut pads channels and spatial axes at once, `F.pad(x, (1, 1, 1, 1, 2, 2))`, then a block at
    8 on that stream. Seeded; every convolution has its own bias."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=2)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.linear = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        y = F.relu(self.conv2(x) + F.pad(x, (1, 1, 1, 1, 2, 2)))
        y = F.relu(self.conv3(y) + y)
        return self.linear(y.mean((2, 3)))


def test_a_pad_of_channels_and_spatial_axes_prunes_its_stream_as_the_fx_path_does(tmp_path: Path) -> None:
    """Split into a spatial pad and a selection (the same split as the PyTorch source's fx trace): the
    stem's and the stream's groups are cut, nothing is kept whole, the widths, MACs and weight shapes are
    the PyTorch source's, and the cut model keeps the source's output shape."""
    module = prunable_module(_exported(PaddedShortcut(), tmp_path / "ps.onnx"), SPECS)
    names = _selection_names(module)
    assert len(names) == 1 and names[0].endswith(".select")
    ours = prune_module(module, SPECS, {}, UNIFORM)
    theirs = prune_module(PaddedShortcut(), SPECS, {}, UNIFORM)
    assert ours.section.kept_whole == [] and theirs.section.kept_whole == []
    streams = sorted(g.channels_before for g in ours.section.groups if names[0] in g.modules)
    assert streams == [4, 8] and all(g.channels_after < g.channels_before for g in ours.section.groups)
    _assert_same_cut(ours, theirs)
    gathers = [m for m in ours.module.modules() if isinstance(m, ChannelGather)]
    assert len(gathers) == 1 and not any(is_selection(m) for m in ours.module.modules())
    with torch.no_grad():
        assert ours.module(random_batch(3)).shape == (3, 4)


def test_an_onnx_source_with_that_pad_converts_with_its_stream_cut(tmp_path: Path) -> None:
    source = tmp_path / "ps.onnx"
    (pad,) = _selection_names(prunable_module(_exported(PaddedShortcut(), source), SPECS))
    result = convert_model(ConvertOptions(source=str(source), outdir=tmp_path / "out", prune=UNIFORM))
    section = verified_section(result)
    assert section.kept_whole == []
    streams = [g for g in section.groups if pad in g.modules]
    assert len(streams) == 2 and all(g.channels_after < g.channels_before for g in streams)
    assert section.after.onnx_macs == section.after.macs  # the pad and the cut selection are memory ops


def test_batchnorm_parameters_in_constant_nodes_of_any_form() -> None:
    """BatchNormalization reads its parameters from Constant nodes as from initializers, a tensor
    `value` or `value_floats`; the evaluator's result is onnxruntime's."""
    rng = np.random.default_rng(0)
    params = {
        "scale": rng.uniform(0.5, 1.5, 4),
        "bias": rng.normal(size=4),
        "mean": rng.normal(size=4),
        "var": rng.uniform(0.5, 1.5, 4),
    }
    constants = [
        helper.make_node("Constant", [], ["scale"], value_floats=params["scale"].tolist()),
        helper.make_node(
            "Constant", [], ["bias"], value=numpy_helper.from_array(params["bias"].astype(np.float32))
        ),
    ]
    bn = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])
    stats = {n: params[n] for n in ("mean", "var")}
    model = make_model([*constants, bn], {"x": [1, 4, 3, 3]}, ["y"], stats)
    module = onnx_torch.onnx_to_torch(model)
    assert len(module.batchnorms) == 1
    samples = [{"x": rng.normal(size=(1, 4, 3, 3)).astype(np.float32)} for _ in range(2)]
    assert onnx_torch.check_against_onnxruntime(module, model, samples) < onnx_torch.CHECK_TOLERANCE
