"""Pruning an ONNX source: the graph as a PyTorch module (quant/onnx_torch.py's evaluator) whose
convolutions and fully-connected layers are real nn.Conv / nn.Linear modules, so torch-pruning's
dependency graph sees and cuts them; the pipeline (edgeport/pipeline/torch_passes.py) exports it back
to ONNX with the source's input and output names.

Which nodes become modules: Conv with constant weights and explicit pads, none, or auto_pad (resolved for
the fixed input shapes; asymmetric pads as a zero pad before it), Gemm with a constant 2-D weight (alpha =
beta = 1, no transposed input), and MatMul with a constant 2-D weight, or with a constant 2-D W through a
Transpose (MatMul(x, Transpose(W)): how exporters write a Linear when they do not fold constants), as a
Linear taking the constant bias of the Add that is its only reader (how exporters write a Linear on a 3-D
input); BatchNormalization already is one in the evaluator. Constant weights are what no graph input
reaches, however computed: initializers, Constant nodes (as Paddle exports them), Identities of those (how
torch.onnx.export writes an initializer equal to an earlier one), Casts or Reshapes of those; the nodes
computing only them do not run. A quantized (QDQ) model is pruned as the float model it dequantizes to
(quant/qdq.py's float_graph, as convert's dequantize_qdq pass makes it: its DequantizeLinear-computed
weights initializers, each activation QuantizeLinear -> DequantizeLinear pair gone, kept as its clamp
where a Relu the quantizer folded in applied), checked against onnxruntime on that float graph, and handed
on float with a note; convert's --quantize quantizes the pruned model again. A Pad that pads the channel
axis with constants (an option-A shortcut; torch.onnx.export writes its amounts as ops on Constants,
folded here) becomes channel_pads.py's selection layer on pruning's copy, after a pad of the other axes
when it pads those too (split as the fx path splits it), so each stage's residual stream is its own group
as for a PyTorch source; one whose amounts are computed from the input stays a Pad, named in a note (its
stream kept whole). Other nodes stay functional on their constant weights: a channel feeding one cannot
change width, which the removal check (cut on a copy == zeroed) sees, so its group is kept whole. A graph
the evaluator cannot run is refused in one line naming the op; one it runs at its exported batch only
(a static-shape export writes the batch size into constants: attention's batch x heads) in one line
naming the node that fails at batch 2 and the re-export with a dynamic batch on axis 0 that fixes it.

Residual blocks are spans of the graph's nodes (onnx_blocks.py), each named after its residual Add
node; one removed runs as an Identity from its input to its output in place of its nodes (none of
them traced, so the re-exported graph has none of them), and the modules it held are dropped
(blocks.py's GraphBlocks).
"""

from __future__ import annotations

import functools
import re
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import onnx
import torch
import torch.nn as nn
from onnx import helper

from edgeport.errors import EdgeportError
from edgeport.quant.onnx_torch import (
    CHECK_TOLERANCE,
    Evaluator,
    UnsupportedOnnxGraph,
    check_against_onnxruntime,
    constant_tensors,
    pad_amounts,
    spatial_pads,
    torch_pad,
)
from edgeport.quant.prune.blocks import Block
from edgeport.quant.prune.channel_pads import selection, split_channel_pad
from edgeport.quant.prune.onnx_blocks import Span, residual_spans
from edgeport.quant.qdq import NotAPair, float_graph, float_note
from edgeport.runtimes.onnxrt import run_source
from edgeport.tensors import TensorSpec, random_inputs

_CONVS = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}
_PADS = {3: nn.ConstantPad1d, 4: nn.ConstantPad2d, 5: nn.ConstantPad3d}


def _conv(attrs: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
    rank = weight.dim()
    nd = rank - 2
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    if rank not in _CONVS or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    symmetric = pads[:nd] == pads[nd:]
    groups = int(attrs.get("group", 1))
    conv = _CONVS[rank](
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(attrs.get("strides", [1] * nd)),
        padding=tuple(pads[:nd]) if symmetric else 0,
        dilation=tuple(attrs.get("dilations", [1] * nd)),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    if symmetric:
        return conv
    # Asymmetric pads: zeros first, as the evaluator runs it (the conv inside is what prunes).
    return nn.Sequential(OrderedDict(pad=_PADS[rank](tuple(torch_pad(pads)), 0.0), conv=conv))


def _same_pads(attrs: dict, weight: torch.Tensor, size: Sequence[int] | None) -> dict | None:
    """A Conv's attributes with auto_pad SAME_UPPER/SAME_LOWER resolved into pads for its input's
    spatial `size` (fixed: the inputs' shapes are); None when the size is not known."""
    if attrs.get("auto_pad", "NOTSET") not in ("SAME_UPPER", "SAME_LOWER"):
        return attrs
    nd = weight.dim() - 2
    if size is None or len(size) != nd:
        return None
    strides, dilations = attrs.get("strides", [1] * nd), attrs.get("dilations", [1] * nd)
    pads = spatial_pads(attrs, size, list(weight.shape[2:]), strides, dilations)
    return {**attrs, "auto_pad": "NOTSET", "pads": pads}


def _spatial_sizes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Every tensor's spatial sizes (dims after the first two) where shape inference knows them all."""
    inferred = onnx.shape_inference.infer_shapes(model)
    values = [*inferred.graph.input, *inferred.graph.value_info]
    sizes = {}
    for v in values:
        dims = v.type.tensor_type.shape.dim
        if len(dims) > 2 and all(d.HasField("dim_value") for d in dims):
            sizes[v.name] = [d.dim_value for d in dims[2:]]
    return sizes


def _pad_inputs(graph: Evaluator, node: onnx.NodeProto) -> list[torch.Tensor | None] | None:
    """The values of a Pad node's pads, value and axes inputs (None where omitted); None when one of
    them is computed from the graph's input."""
    given = [graph.constant(name) if name else None for name in node.input[1:4]]
    if any(name and value is None for name, value in zip(node.input[1:4], given, strict=False)):
        return None
    return given


def _channel_pad(
    attrs: dict, shape: Sequence[int], given: Sequence[torch.Tensor | None]
) -> tuple[tuple[int, int], tuple[int, ...], float] | None:
    """((before, after) on the channel axis, the padding of the axes after it, value) of a Pad node
    with inputs `given` (_pad_inputs) that pads the channel axis of its input (of `shape`) with a
    constant (channel_pads.split_channel_pad); None when it does not pad channels."""
    if attrs.get("mode", "constant") != "constant":
        return None
    amounts, fill = pad_amounts(attrs, len(shape), *given)
    split = split_channel_pad(len(shape), torch_pad(amounts))
    return None if split is None else (*split, fill)


def _linear(attrs: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
    plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
    if weight.dim() != 2 or not plain:
        return None
    weight = weight if attrs.get("transB", 0) else weight.t()  # nn.Linear holds [out, in]
    if bias is not None and bias.shape != (weight.shape[0],):
        return None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def _matmul_bias(
    node: onnx.NodeProto,
    readers: defaultdict[str, list[onnx.NodeProto]],
    outputs: set[str],
    value: Callable[[str], torch.Tensor | None],
) -> tuple[onnx.NodeProto, torch.Tensor] | None:
    """The Add that is a MatMul's only reader and adds a constant bias over its last axis, and the
    bias; None when there is none."""
    out = node.output[0]
    if len(readers[out]) != 1 or out in outputs:
        return None
    (add,) = readers[out]
    if add.op_type != "Add" or len(add.input) != 2:
        return None
    bias = value(add.input[1] if add.input[0] == out else add.input[0])
    if bias is None or bias.dim() != 1:
        return None
    return add, bias


def _transposed(
    producers: dict[str, onnx.NodeProto],
    attrs: dict[str, dict],
    value: Callable[[str], torch.Tensor | None],
    name: str,
) -> torch.Tensor | None:
    """The constant 2-D W when `name` is Transpose(W) (perm [1, 0] or none), else None."""
    node = producers.get(name)
    if node is None or node.op_type != "Transpose":
        return None
    weight = value(node.input[0])
    perm = attrs[node.output[0]].get("perm", [1, 0])
    return weight if weight is not None and weight.dim() == 2 and list(perm) == [1, 0] else None


def folded_constants(nodes: Sequence[onnx.NodeProto], taken: Mapping[str, int], keep: set[str]) -> set[str]:
    """The outputs of the nodes that need not run because layers hold what they compute: every output
    of such a node is read only by layers that took its value (`taken`: how many readings of each
    tensor the layers took) or by other such nodes, and none is in `keep` (the graph's outputs)."""
    uses = Counter(name for node in nodes for name in node.input)
    done = Counter(taken)
    folded: set[str] = set()
    for node in reversed(nodes):  # every reader before its producer
        outs = [name for name in node.output if name]
        if outs and all(name not in keep and 0 < uses[name] == done[name] for name in outs):
            folded.update(outs)
            done.update(name for name in node.input if name)
    return folded


class PrunableGraph(Evaluator):
    """The evaluator with Conv, Gemm and MatMul nodes run through modules (`layers`, keyed by weight
    name); constant channel Pads become channel_pads' selection layers when pruning's analysis asks
    (channel_pads_as_selections); its residual blocks are spans of its nodes (residual_blocks), those
    named in `bypassed` run as identity. `dequantized`: the weights a QDQ model's DequantizeLinears
    computed (qdq.float_graph's), to count the layers holding one."""

    def __init__(self, model: onnx.ModelProto, dequantized: Collection[str] = ()) -> None:
        super().__init__(model)
        self.layers = nn.ModuleDict()
        self._layer_keys: dict[str, str] = {}  # node's first output -> key in layers
        self._bias_adds: dict[str, int] = {}  # an Add folded into a MatMul's Linear -> that input's position
        self.dequantized = 0  # layers whose weight a DequantizeLinear computed (QDQ models)
        self.notes: list[str] = []  # what the user is told about how the graph became this module
        self.bypassed: set[str] = set()  # residual blocks run as identity, by name (blocks.GraphBlocks)
        self._spans: dict[str, Span] = {}  # the residual blocks residual_blocks found, by name
        readers: defaultdict[str, list[onnx.NodeProto]] = defaultdict(list)  # tensor -> its readers
        for n in self._nodes:
            for name in n.input:
                readers[name].append(n)
        producers = {out: self._nodes[i] for out, i in self._producer.items()}  # the evaluator's, as nodes
        outputs = set(self.output_names)
        node_attrs = {n.output[0]: a for n, a in zip(self._nodes, self._attrs, strict=True) if n.output}
        # A weight no graph input reaches is constant however it is computed: an initializer, a Constant
        # node (Paddle's exports), an Identity of one (torch.onnx.export's second equal initializer).
        constants = self._constant_tensors = constant_tensors(model.graph)
        value = functools.cache(lambda name: self.constant(name) if name in constants else None)
        taken: Counter = Counter()  # how many times layers took each constant's value
        sizes = (
            _spatial_sizes(model) if any(a.get("auto_pad", "NOTSET") != "NOTSET" for a in self._attrs) else {}
        )
        for index, (node, attrs) in enumerate(zip(self._nodes, self._attrs, strict=True)):
            if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
                continue
            if node.input[0] in constants:
                continue
            transposed = None
            if node.op_type == "MatMul":  # named after W, not its Transpose
                transposed = _transposed(producers, node_attrs, value, node.input[1])
            weight = value(node.input[1]) if transposed is None else transposed
            bias = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if weight is None or (len(node.input) > 2 and node.input[2] and bias is None):
                continue
            add = None
            if node.op_type == "Conv":
                attrs = _same_pads(attrs, weight, sizes.get(node.input[0]))
                if attrs is None:
                    continue
            if node.op_type == "MatMul":
                folded = _matmul_bias(node, readers, outputs, value)
                add, bias = folded if folded is not None else (None, None)
                # MatMul: x @ B, B is [in, out] as Gemm's untransposed B; Transpose(W): W is [out, in].
                attrs = {"transB": 1} if transposed is not None else {}
            make = _conv if node.op_type == "Conv" else _linear
            layer = make(attrs, weight.float(), None if bias is None else bias.float())
            if layer is None:
                continue
            taken.update(node.input[1:])
            self.dequantized += node.input[1] in dequantized
            if add is not None:
                self._bias_adds[add.output[0]] = list(add.input).index(node.output[0])
                taken.update(n for n in add.input if n != node.output[0])
            named = producers[node.input[1]].input[0] if transposed is not None else node.input[1]
            self._add_layer(re.sub(r"\.weight$", "", named) or f"node{index}", layer, node.output[0])
        # What computes only the layers' weights and biases (they hold the values) is not run.
        self._folded = folded_constants(self._nodes, taken, outputs)

    def _add_layer(self, name: str, layer: nn.Module, output: str) -> str:
        """Put `layer` in `layers` under a key made of `name`, run for the node writing `output`; the key."""
        key = re.sub(r"\W", "_", name)
        while key in self.layers:
            key += "_"
        self.layers[key] = layer
        self._layer_keys[output] = key
        return key

    def channel_pads_as_selections(self, *inputs: torch.Tensor) -> tuple[list[str], dict[str, str]]:
        """Each Pad that pads the channel axis with constants becomes channel_pads' selection layer in
        `layers`, after a pad of the other axes when it pads those too (torch-pruning then cuts its input
        and output channels apart: each stage's stream its own group); their module names, and the Pads
        that change the channel count but stay Pads, each named with why (amounts computed from the
        input). Its input's channels are read from a forward on `inputs`. Called by
        channel_pads.pads_as_selections on pruning's copy of the model (fx cannot trace an evaluator):
        the unpruned model (its MACs, export, latency, recovery's teacher) keeps its Pads."""
        shapes = self.shapes(*inputs)
        names, kept = [], {}
        for node, attrs in zip(self._nodes, self._attrs, strict=True):
            if node.op_type != "Pad" or node.output[0] in self._layer_keys:
                continue
            shape = shapes[node.input[0]]
            given = _pad_inputs(self, node)
            if given is None:
                if shapes[node.output[0]][1] != shape[1]:  # it pads channels on these inputs
                    kept[f"Pad node {node.name or node.output[0]!r}"] = "its amounts are not constants"
                continue
            found = _channel_pad(attrs, shape, given)
            if found is None:
                continue
            (before, after), rest, fill = found
            layer = selection(len(shape), shape[1], before, after, fill)
            if rest:
                layer = nn.Sequential(OrderedDict(pad=_PADS[len(shape)](rest, fill), select=layer))
            key = self._add_layer((node.name or node.output[0]).strip("/") or "pad", layer, node.output[0])
            names.append(f"layers.{key}" + (".select" if rest else ""))
        return names, kept

    def residual_blocks(
        self, inputs: Sequence[torch.Tensor], excluded: Sequence[nn.Module] = ()
    ) -> list[Block]:
        """The graph's residual blocks (onnx_blocks.residual_spans, shapes from a forward on `inputs`)
        that hold a layer or BatchNorm and no `excluded` module, each named after its residual Add
        node (its output tensor when the node has no name of its own); a span sharing nodes with an
        earlier one is left out (each is removed on its own)."""
        shapes = self.shapes(*inputs)
        skip = set(map(id, excluded))
        names = Counter(n.name for n in self._nodes)
        blocks, taken = [], set()
        for span in residual_spans(self._nodes, self._constant_tensors, shapes, self.output_names):
            held = self._held(span)
            modules = [m for name in held for m in self.get_submodule(name).modules()]
            parameters = any(True for m in modules for _ in m.parameters())
            if not parameters or any(id(m) in skip for m in modules) or span.nodes & taken:
                continue
            taken |= span.nodes
            add = self._nodes[span.add]
            name = add.name if add.name and names[add.name] == 1 else add.output[0]
            self._spans[name] = span
            blocks.append(Block(name, held))
        return blocks

    def _held(self, span: Span) -> tuple[str, ...]:
        """The names of the modules (layers, BatchNorms) that run nodes of `span`."""
        held = []
        for i in sorted(span.nodes):
            out = self._nodes[i].output[0]
            if out in self._layer_keys:
                held.append(f"layers.{self._layer_keys[out]}")
            if out in self.bn_keys:
                held.append(f"batchnorms.{self.bn_keys[out]}")
        return tuple(held)

    def steps(self) -> Iterable[tuple[onnx.NodeProto, dict]]:
        """The graph's nodes, each bypassed block's replaced by one Identity from its input to its
        output (at its output's node: every reader comes after it)."""
        if not self.bypassed:
            return super().steps()
        spans = [self._spans[name] for name in self.bypassed]
        skipped = set().union(*(s.nodes for s in spans))
        identities = {
            self._producer[s.output]: helper.make_node("Identity", [s.input], [s.output]) for s in spans
        }
        return (
            (identities[i], {}) if i in identities else (node, attrs)
            for i, (node, attrs) in enumerate(zip(self._nodes, self._attrs, strict=True))
            if i in identities or i not in skipped
        )

    def run_node(self, node: onnx.NodeProto, attrs: dict, args: list[Any]) -> Any:
        if node.output[0] in self._folded:  # a weight (or bias) the layers hold
            return (None,) * len(node.output)
        if node.output[0] in self._bias_adds:  # its bias is in the MatMul's Linear
            return args[self._bias_adds[node.output[0]]]
        key = self._layer_keys.get(node.output[0])
        if key is None:
            return super().run_node(node, attrs, args)
        return self.layers[key](args[0])


def prunable_module(
    model: onnx.ModelProto, specs: Sequence[TensorSpec], scale_floors: Mapping[str, float] | None = None
) -> PrunableGraph:
    """The ONNX graph (static input shapes `specs`) as a prunable module; one line naming what the
    evaluator cannot run, else (`scale_floors`: the onnxruntime check's, by output name). A quantized
    (QDQ) graph becomes the float one it dequantizes to (qdq.float_graph), said in the module's
    `notes`."""
    try:
        graph, counts = float_graph(model)
        module = PrunableGraph(graph, set(counts.dequantized)).eval()
    except NotAPair as exc:
        raise EdgeportError(
            f"--prune on a quantized (QDQ) ONNX model: {exc} (pruning takes out per-tensor QuantizeLinear "
            "-> DequantizeLinear pairs only)",
            "prune the float model before quantizing it (convert's --quantize int8 quantizes the pruned "
            "one), or convert without --prune",
        ) from exc
    except UnsupportedOnnxGraph as exc:
        raise EdgeportError(
            f"--prune on an ONNX model goes through edgeport's ONNX-to-PyTorch evaluator, which cannot run "
            f"this graph: {exc}",
            "convert the PyTorch model it was exported from (file.py:callable, TorchScript or .pt2), or "
            "convert without --prune",
        ) from exc
    _check(module, graph, specs, scale_floors)
    if not module.layers:
        raise EdgeportError(
            "--prune found no Conv, Gemm or MatMul with constant weights in this ONNX model (nothing to "
            "prune)",
            "convert without --prune, or give the PyTorch model it was exported from",
        )
    layers = module.dequantized
    weights = f"the weights of {layers} layer{'s' * (layers != 1)} dequantized" if layers else ""
    module.notes = float_note(
        "; it was pruned, and is converted, as float", weights, counts.pairs, counts.clips
    )
    return module


def _agreement(
    module: PrunableGraph,
    graph: onnx.ModelProto,
    samples: Sequence[dict],
    scale_floors: Mapping[str, float] | None,
) -> tuple[float, str | None]:
    """check_against_onnxruntime's error on `samples` (one batch), or inf and the evaluator's one-line
    failure (naming the node and its op) when it fails on them."""
    try:
        return check_against_onnxruntime(module, graph, samples, scale_floors), None
    except RuntimeError as exc:
        return float("inf"), str(exc)


def _check(
    module: PrunableGraph,
    graph: onnx.ModelProto,
    specs: Sequence[TensorSpec],
    scale_floors: Mapping[str, float] | None,
) -> None:
    """Refuse in one line a module that fails on the graph or computes it differently from onnxruntime
    at a batch of two (pruning runs batches); when it agrees on one sample, the graph runs at its
    exported batch only (an export with static shapes writes the batch size into constants: attention's
    batch x heads, a class token expanded to the batch), and the line says so."""
    samples = random_inputs(specs, 2, 0)
    run_source(graph.SerializeToString(), samples[:1])  # a graph onnxruntime cannot run is the user's to fix
    error, failure = _agreement(module, graph, samples, scale_floors)
    if error < CHECK_TOLERANCE:
        return
    what = failure or f"its outputs differ from onnxruntime's (max rel. error {error:.1e})"
    if _agreement(module, graph, samples[:1], scale_floors)[0] < CHECK_TOLERANCE:
        raise EdgeportError(
            "--prune runs an ONNX model on batches (inputs stacked on axis 0), but this graph runs at its "
            f"exported batch only (its batch size is written into constants): at batch 2 {what}",
            "re-export it with a dynamic batch on axis 0 (torch.onnx.export(..., dynamic_axes={'<input>': "
            "{0: 'batch'}})), or convert the PyTorch model it was exported from",
        )
    if failure is not None:
        raise EdgeportError(
            f"--prune on an ONNX model goes through edgeport's ONNX-to-PyTorch evaluator, which fails on "
            f"this graph: {failure}",
            "convert the PyTorch model it was exported from, or without --prune, and report the model",
        )
    raise EdgeportError(
        f"--prune on an ONNX model goes through edgeport's ONNX-to-PyTorch evaluator, which computes "
        f"this graph differently from onnxruntime (max rel. error {error:.1e})",
        "convert the PyTorch model it was exported from, or without --prune, and report the model",
    )
