"""A quantized (QDQ) ONNX graph as the float graph it dequantizes to.

Users bring models quantized by onnxruntime's quantize_static (QuantFormat.QDQ) or exported
fake-quantized; onnx2tf miscomputes their DequantizeLinears, and pruning needs float layers. Both read the
float model (edgeport/pipeline/dequantize_qdq.py before onnx2tf, quant/prune/onnx_source.py before
pruning): each activation QuantizeLinear -> DequantizeLinear pair goes, kept as the clamp it applies
where zero is an end of its range that its tensor can cross (float_activations: a Relu or Clip the
quantizer folded into the pair; value_bounds tells the tensors that cannot, as 1 + erf(x), whose ranges
start at zero because calibration puts zero in every range), and each weight a DequantizeLinear of
constants computes becomes an initializer of its value (fold_weight_dequantizers). What is left out is
the rounding, and the saturation at the calibrated extremes of a range spanning zero: quantization's own
error, which --quantize int8 brings back.
Constants are evaluated by onnx's reference evaluator (numpy, as onnxruntime computes them).
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_23
from onnx.reference.ops.op_quantize_linear import QuantizeLinear_23

from edgeport.onnx_graph import opset_version, outer_reads
from edgeport.quant.onnx_torch import constant_tensors

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


# onnx's reference evaluator has no DequantizeLinear before opset 19; the later kernels compute the
# earlier versions too (their added attributes default to the earlier behaviour).
class _DequantizeLinear(DequantizeLinear_23):
    op_domain = ""


class _QuantizeLinear(QuantizeLinear_23):
    op_domain = ""


_DequantizeLinear.__name__, _QuantizeLinear.__name__ = QDQ_OPS[1], QDQ_OPS[0]  # the op each replaces


class NotAPair(ValueError):
    """An activation QuantizeLinear that cannot be turned into float: `node` (its name) and `why`."""

    def __init__(self, node: str, why: str) -> None:
        self.node, self.why = node, why
        super().__init__(f"QuantizeLinear node {node!r} quantizes an activation, {why}")


@dataclass(frozen=True)
class FloatCounts:
    """What float_graph did: the constants (weights, biases) whose DequantizeLinear chain became an
    initializer (by name), activation pairs dropped, and of those kept as their clamp."""

    dequantized: tuple[str, ...] = ()
    pairs: int = 0
    clips: int = 0

    @property
    def weights(self) -> int:
        return len(self.dequantized)

    def changed(self) -> bool:
        return bool(self.weights or self.pairs)


def float_note(handed_on: str, dequantized: str, pairs: int, clips: int) -> list[str]:
    """The one line telling the user a quantized (QDQ) ONNX model was `handed_on` (how it goes on as
    float, after "the ONNX model is quantized (QDQ)"): `dequantized` (what of its weights, "" for none),
    activation `pairs` dropped, `clips` of them kept as their clamp; none when nothing changed."""
    done = [dequantized] if dequantized else []
    if pairs:
        kept = (
            f" ({clips} kept as the clamp to their range, a Relu or Clip the quantizer folded in)"
            if clips
            else ""
        )
        done.append(
            f"{pairs} activation QuantizeLinear -> DequantizeLinear pair{'s' * (pairs != 1)} dropped{kept}"
        )
    if not done:
        return []
    return [
        f"the ONNX model is quantized (QDQ){handed_on}: {', '.join(done)}; --quantize int8 quantizes it again"
    ]


def is_qdq(model: onnx.ModelProto) -> bool:
    return any(n.op_type in QDQ_OPS and n.domain in ("", "ai.onnx") for n in model.graph.node)


def made_by(producers: Mapping[str, onnx.NodeProto], name: str, op: str) -> bool:
    """Whether a node of type `op` is among those that compute tensor `name`."""
    stack, seen = [name], set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.output[0] in seen:
            continue
        if node.op_type == op:
            return True
        seen.add(node.output[0])
        stack.extend(node.input)
    return False


def constant_values(model: onnx.ModelProto, names: Iterable[str]) -> dict[str, np.ndarray]:
    """The values of constant tensors `names` (constant_tensors': no graph input reaches them), the
    nodes computing them run by onnx's reference evaluator."""
    inits = {t.name: t for t in model.graph.initializer}
    wanted = [n for n in dict.fromkeys(names) if n]
    values = {n: numpy_helper.to_array(inits[n]) for n in wanted if n in inits}
    computed = [n for n in wanted if n not in inits]
    if not computed:
        return values
    producers = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    needed: set[int] = set()
    stack = list(computed)
    while stack:
        index = producers.get(stack.pop())
        if index is not None and index not in needed:
            needed.add(index)
            stack.extend(model.graph.node[index].input)
    nodes = [model.graph.node[i] for i in sorted(needed)]  # graph order is topological
    read = {name for node in nodes for name in node.input}
    graph = helper.make_graph(
        nodes,
        "constants",
        [],
        [onnx.ValueInfoProto(name=n) for n in computed],
        [t for name, t in inits.items() if name in read],
    )
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    results = ReferenceEvaluator(sub, new_ops=[_DequantizeLinear, _QuantizeLinear]).run(computed, {})
    return {**values, **{n: np.asarray(v) for n, v in zip(computed, results, strict=True)}}


_INTEGERS = {
    onnx.TensorProto.UINT8: np.dtype(np.uint8),
    onnx.TensorProto.INT8: np.dtype(np.int8),
    onnx.TensorProto.UINT16: np.dtype(np.uint16),
    onnx.TensorProto.INT16: np.dtype(np.int16),
}


def _quantized_info(q: onnx.NodeProto, zero: np.ndarray | None) -> np.iinfo:
    """The integer type QuantizeLinear `q` writes: its zero point's, else its output_dtype (opset 21;
    0, UNDEFINED, reads as absent), else uint8."""
    if zero is not None:
        dtype, name = zero.dtype, zero.dtype.name
    else:
        attrs = {a.name: helper.get_attribute_value(a) for a in q.attribute}
        code = attrs.get("output_dtype") or onnx.TensorProto.UINT8
        dtype, name = _INTEGERS.get(code), onnx.TensorProto.DataType.Name(code).lower()
    if dtype not in _INTEGERS.values():
        raise NotAPair(q.name or q.output[0], f"to {name}, not an 8- or 16-bit integer")
    return np.iinfo(dtype)


def pair_range(q: onnx.NodeProto, scale: np.ndarray, zero: np.ndarray | None) -> tuple[list[float], bool]:
    """The [low, high] a per-tensor QuantizeLinear -> DequantizeLinear pair clamps to (as DequantizeLinear
    computes them), and whether zero is one end of it."""
    info = _quantized_info(q, zero)
    offset = 0 if zero is None else int(zero.reshape(()))
    step = np.float32(scale.reshape(()))
    ends = [float(step * np.float32(v - offset)) for v in (info.min, info.max)]
    return ends, offset in (info.min, info.max)


def crosses_zero_end(ends: Sequence[float], bounds: Sequence[float] | None) -> bool:
    """Whether a tensor within `bounds` (None: unknown) can cross the end of `ends` that is zero: only
    then is the pair's clamp a Relu or Clip the quantizer folded in (calibration puts zero in every
    range, so the pair of a tensor that never goes below zero, as 1 + erf(x), ends at zero too)."""
    if bounds is None:
        return True
    return bounds[0] < 0 if ends[0] == 0 else bounds[1] > 0


def clamp(
    x: str, out: str, name: str, ends: Sequence[float], version: int
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes writing `out`, `x` clamped to `ends` ([low, high], one of them zero), and the initializers
    they read: a Relu and a Clip to high when low is zero (in TFLite the Relu fuses into the layer before
    it and the Clip is a MINIMUM; one Clip to both was a MINIMUM and an unfused RELU), else one Clip."""
    low, high = ends
    nodes, source, bounds = [], x, [f"{out}_low", f"{out}_high"]
    if low == 0:
        source, bounds[0] = f"{out}_relu", ""
        nodes.append(helper.make_node("Relu", [x], [source], name=source))
    if version < 11:  # Clip's bounds are attributes before opset 11
        limits = {"max": high} if low == 0 else {"min": low, "max": high}
        return [*nodes, helper.make_node("Clip", [source], [out], name=name, **limits)], []
    values = [
        numpy_helper.from_array(np.array(v, np.float32), b) for b, v in zip(bounds, ends, strict=True) if b
    ]
    return [*nodes, helper.make_node("Clip", [source, *bounds], [out], name=name)], values


# What an op's output is bounded by, whatever its input: the ops a tensor starting at zero comes from
# without a Relu (calibration puts zero in every range, so a non-negative tensor's pair ends at zero).
_BOUNDED = {
    "Erf": (-1.0, 1.0),
    "Tanh": (-1.0, 1.0),
    "Sigmoid": (0.0, 1.0),
    "HardSigmoid": (0.0, 1.0),
    "Softmax": (0.0, 1.0),
    "Relu": (0.0, np.inf),
    "Abs": (0.0, np.inf),
    "Exp": (0.0, np.inf),
    "Sqrt": (0.0, np.inf),
}
_ARITHMETIC = ("Add", "Sub", "Mul", "Div")
# Ops whose output values are some of their first input's, or their mean: within its bounds.
_MOVES = {
    *("Identity", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split"),
    *("DepthToSpace", "SpaceToDepth", "Tile", "Expand", "MaxPool", "GlobalMaxPool", "GlobalAveragePool"),
    *("ReduceMax", "ReduceMin", "ReduceMean"),
}


def interval(a: Sequence[float], b: Sequence[float], op: str) -> tuple[float, float] | None:
    """The bounds of `a op b` for values within intervals `a` and `b` (Add, Sub, Mul, Div); None when
    unbounded in a way arithmetic cannot say (0 x infinity, a divisor spanning zero)."""
    if op == "Div":
        if b[0] <= 0 <= b[1]:
            return None
        op, b = "Mul", (1 / b[1], 1 / b[0])
    if op == "Add":
        return a[0] + b[0], a[1] + b[1]
    if op == "Sub":
        return a[0] - b[1], a[1] - b[0]
    with np.errstate(invalid="ignore"):
        ends = np.array([x * y for x in a for y in b], np.float64)
    return None if np.isnan(ends).any() else (float(ends.min()), float(ends.max()))


def _hull(bounds: Iterable[tuple[float, float] | None]) -> tuple[float, float] | None:
    """The smallest interval holding all of `bounds`; None when one is unknown (or none given)."""
    known = list(bounds)
    if not known or None in known:
        return None
    return min(b[0] for b in known), max(b[1] for b in known)


def value_bounds(
    producers: Mapping[str, onnx.NodeProto],
    name: str,
    constant: Callable[[str], np.ndarray | None],
    known: Mapping[str, tuple[float, float] | None] | None = None,
    depth: int = 32,
) -> tuple[float, float] | None:
    """Bounds that tensor `name` of the float graph stays within, whatever the inputs, from the ops
    computing it (_BOUNDED, arithmetic with constants or bounded tensors, ops that move or select
    values, through QuantizeLinear -> DequantizeLinear pairs, whose float replacement only narrows);
    None when unknown. `constant` gives a constant tensor's value (None for a non-constant); `known`,
    tensors' bounds already found (a pair's output kept as its clamp is within the clamp's)."""

    @functools.cache  # a tensor read along several paths (a diamond) is analysed once per depth
    def bounds(name: str, depth: int) -> tuple[float, float] | None:
        if known and name in known:
            return known[name]
        value = constant(name)
        if value is not None:
            return (float(value.min()), float(value.max())) if value.size else None
        node = producers.get(name)
        if node is None or depth == 0:
            return None

        def of(names: Iterable[str]) -> tuple[float, float] | None:
            return _hull(bounds(n, depth - 1) for n in names)

        op = node.op_type
        if op in _BOUNDED:
            return _BOUNDED[op]
        if op == "DequantizeLinear" and node.input[0] in producers:
            q = producers[node.input[0]]
            return of(q.input[:1]) if q.op_type == "QuantizeLinear" else None
        if op in _ARITHMETIC and len(node.input) == 2:
            a, b = (of([i]) for i in node.input)
            return interval(a, b, op) if a and b else None
        if op in _MOVES:
            return of(node.input[:1])
        if op == "Concat":
            return of(node.input)
        if op == "AveragePool":  # padding may count in as zeros
            return _hull([of(node.input[:1]), (0.0, 0.0)])
        if op == "Pad":  # the padding value, zero when not given
            fill = node.input[2] if len(node.input) > 2 and node.input[2] else None
            return _hull([of(node.input[:1]), of([fill]) if fill else (0.0, 0.0)])
        return None

    return bounds(name, depth)


def _params(node: onnx.NodeProto) -> list[str]:
    """A QuantizeLinear's or DequantizeLinear's scale and zero point names ("" when it has none)."""
    return [*node.input[1:3], ""][:2]


def _same(values: Mapping[str, np.ndarray], a: str, b: str) -> bool:
    """Whether constants `a` and `b` ("" for none) are the same (by name or by value)."""
    if a == b:
        return True
    x, y = values.get(a), values.get(b)
    return x is not None and y is not None and x.dtype == y.dtype and np.array_equal(x, y)


def _not_a_pair(
    values: Mapping[str, np.ndarray], q: onnx.NodeProto, readers: Sequence[onnx.NodeProto], outputs: set[str]
) -> str:
    """Why activation QuantizeLinear `q` (read by `readers`) is not a per-tensor pair with the
    DequantizeLinears reading it; "" when it is."""
    scale = values.get(_params(q)[0])
    same = all(
        d.op_type == "DequantizeLinear"
        and all(_same(values, a, b) for a, b in zip(_params(q), _params(d), strict=True))
        for d in readers
    )
    if not readers or q.output[0] in outputs or scale is None or not same:
        return "not only read by DequantizeLinears of its scale and zero point"
    return "per channel" if scale.size != 1 else ""


def float_activations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, int]:
    """`model` with each activation QuantizeLinear -> DequantizeLinear pair (a QuantizeLinear of a tensor
    a graph input reaches, read only by DequantizeLinears of its scale and zero point) replaced by what it
    does besides rounding, where that matters: the clamp to its range when zero is one end of that range
    and the tensor can cross that end (clamp: a Relu or Clip the quantizer folded into the pair, as
    onnxruntime's does; crosses_zero_end), nothing else (the saturation at the calibrated extremes of a
    range spanning zero, or of a tensor that stays on zero's side, is quantization's, as the rounding is);
    (the model, pairs replaced, of them by a clamp). A QuantizeLinear of an activation that is no such
    pair, or quantizes per channel, raises NotAPair."""
    constants = constant_tensors(model.graph)
    quantizers = [
        n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] not in constants
    ]
    if not quantizers:  # weights only: folded by fold_weight_dequantizers (or into pruning's layers)
        return model, 0, 0
    readers: defaultdict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in model.graph.node:
        for name in n.input:
            readers[name].append(n)
    params = {p for q in quantizers for d in [q, *readers[q.output[0]]] for p in _params(d)}
    values = constant_values(model, params & constants)
    outputs = {o.name for o in model.graph.output}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    replaced: dict[str, list[onnx.NodeProto]] = {}  # a pair's DequantizeLinear output -> what writes it now
    dropped: set[str] = set()  # the pairs' QuantizeLinear outputs
    producers = {o: n for n in model.graph.node for o in n.output}
    known: dict[str, np.ndarray | None] = {}
    pair_bounds: dict[str, tuple[float, float] | None] = {}  # a pair's output -> bounds in the float graph

    def constant(name: str) -> np.ndarray | None:
        if name not in known:
            known[name] = constant_values(model, [name])[name] if name in constants else None
        return known[name]

    clips = 0
    for q in quantizers:
        why = _not_a_pair(values, q, readers[q.output[0]], outputs)
        if why:
            raise NotAPair(q.name or q.output[0], why)
        scale, zero = (values[n] if n else None for n in _params(q))
        ends, clipped = pair_range(q, scale, zero)
        bounds = value_bounds(producers, q.input[0], constant, pair_bounds)
        clipped = clipped and crosses_zero_end(ends, bounds)
        clips += clipped
        for d in readers[q.output[0]]:  # quantizers are in graph order: a pair's bounds before its readers'
            pair_bounds[d.output[0]] = (ends[0], ends[1]) if clipped else bounds
        for d in readers[q.output[0]]:
            if clipped:
                nodes, limits = clamp(q.input[0], d.output[0], d.name, ends, opset_version(model))
                out.graph.initializer.extend(limits)
            else:
                nodes = [helper.make_node("Identity", [q.input[0]], [d.output[0]], name=d.name)]
            replaced[d.output[0]] = nodes
        dropped.add(q.output[0])
    del out.graph.node[:]
    out.graph.node.extend(
        new for n in model.graph.node if n.output[0] not in dropped for new in replaced.get(n.output[0], [n])
    )
    return out, len(dropped), clips


def fold_weight_dequantizers(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """`model` with each constant a DequantizeLinear computes and a non-constant node reads (a weight or
    bias, however computed: DequantizeLinear of integers, QuantizeLinear -> DequantizeLinear of a float
    weight, a Reshape or Transpose after it) an initializer of its value, the nodes and initializers
    only they read removed; (the model, the constants folded, by name)."""
    graph = model.graph
    constants = constant_tensors(graph)
    producers = {out: n for n in graph.node for out in n.output}
    inits = {t.name for t in graph.initializer}
    outputs = [o.name for o in graph.output]
    boundary = [
        name
        for n in graph.node
        if not all(o in constants for o in n.output if o)
        for name in [*n.input, *outer_reads(n)]
        if name in constants and name not in inits
    ] + [name for name in outputs if name in constants and name not in inits]
    boundary = [name for name in dict.fromkeys(boundary) if made_by(producers, name, "DequantizeLinear")]
    if not boundary:
        return model, []
    values = constant_values(model, boundary)
    needed = set(outputs)
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):  # every reader before its producer
        if any(o in needed and o not in values for o in node.output):
            kept.append(node)
            needed.update(node.input)
            needed |= outer_reads(node)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(reversed(kept))
    inputs = {i.name for i in graph.input}
    initializers = [t for t in graph.initializer if t.name in needed or t.name in inputs]
    del out.graph.initializer[:]
    out.graph.initializer.extend(initializers)
    out.graph.initializer.extend(numpy_helper.from_array(values[name], name) for name in boundary)
    known = needed | {o for n in kept for o in n.output}
    info = [v for v in graph.value_info if v.name in known and v.name not in values]
    del out.graph.value_info[:]
    out.graph.value_info.extend(info)
    return out, boundary


def float_graph(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FloatCounts]:
    """The float graph a QDQ `model` dequantizes to (float_activations, then fold_weight_dequantizers),
    and what changed; `model` itself when it has no QuantizeLinear or DequantizeLinear. NotAPair for an
    activation QuantizeLinear that cannot go."""
    if not is_qdq(model):
        return model, FloatCounts()
    model, pairs, clips = float_activations(model)
    model, dequantized = fold_weight_dequantizers(model)
    return model, FloatCounts(tuple(dequantized), pairs, clips)
