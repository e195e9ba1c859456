"""Per-layer float LiteRT times on this host: what `--prune-target latency` weighs allocation steps in.

Why measured and not modelled: XNNPACK's float convolution time is not monotone in the output
channels. On this project's x86 host (AVX-512, LiteRT one thread; a 3x3 convolution on a 16x16x32
input, medians in µs) 8 and 16 output channels took 33, 20-28 took 64-66, 32 took 48, 48 and 64
took 90: 24 channels are slower than 32, 48 cost what 64 do. No fixed tile rounding says that, and
another CPU (an Arm phone's NEON kernels) says something else, so each layer is timed alone on the
host at every width the allocation asks about (NetAdapt's look-up tables). A layer's time scales
about linearly with its input channels (the GEMM's depth), but those are timed too.

What is timed: a Conv2d (groups 1), a depthwise Conv2d (one output channel per input channel) and a
Linear, each as a one-op float32 .tflite built from the schema (CONV_2D, DEPTHWISE_CONV_2D,
FULLY_CONNECTED) at the geometry the module has in the model (its input's height and width, kernel,
stride, dilation, padding), seeded random weights, with edgeport.runtimes.litert's one interpreter
(XNNPACK, one thread) in this process, interleaved rounds, medians. Padding: TFLite's SAME when it
pads as the module does, else VALID on the input padded as the module pads it (the compute the
converted model's PAD + CONV_2D does; the PAD is not timed).

The table only weighs steps: the sum of separately timed layers is not the model's time (LiteRT
fuses BatchNorm, activations and adds into the convolutions, and a layer's time depends on its
neighbours' caches), so the latency search still converts and times whole models (latency.py).

A layer whose one-op model LiteRT cannot build or run (a geometry nothing here expected) is counted
from then on as the ops the table does not time are: by its MACs at the timed layers' µs per MAC.
That only weighs steps, as every figure here does, and the whole models are still timed; refusing
would stop a convert over a layer the search can price without a timing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch
from torch import nn

from edgeport.errors import exception_line
from edgeport.quant.prune.allocate import CostModel, CostTerm

# The timing's rounds: each one invokes every layer in turn, so drift and load hit all alike.
ROUNDS = 15
# Layers are timed in batches of at most this many interpreters alive at once (memory: a wide layer's
# packed weights are megabytes).
BATCH = 64


@dataclass(frozen=True)
class LayerShape:
    """One timed op: `height` x `width` x `cin` in (a Linear's: `height` rows of `cin`), `cout` out."""

    kind: Literal["conv", "depthwise", "linear"]
    height: int
    width: int
    cin: int
    cout: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    same: bool = False  # TFLite SAME padding; else VALID on an input already padded as the module pads

    def narrowed(self, cin: int, cout: int) -> LayerShape:
        return replace(self, cin=cin, cout=cout)

    @property
    def out_size(self) -> tuple[int, int]:
        """Output height and width."""
        if self.kind == "linear":
            return self.height, 1
        sizes = []
        for size, k, s, d in zip(
            (self.height, self.width), self.kernel, self.stride, self.dilation, strict=True
        ):
            sizes.append(-(-size // s) if self.same else (size - d * (k - 1) - 1) // s + 1)
        return sizes[0], sizes[1]


def _torch_pads(module: nn.Conv2d, size: tuple[int, int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis as the module pads its input."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return [(0, 0), (0, 0)]
        totals = [d * (k - 1) for k, d in zip(module.kernel_size, module.dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    return [(p, p) for p in module.padding]


def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding (before, after) of one axis: the extra pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
    return total // 2, total - total // 2


def layer_shape(module: nn.Module, input_shape: Sequence[int]) -> LayerShape | None:
    """The op `module` converts to at this input shape (batch 1), None for a module it does not time
    (a grouped or 1-d/3-d/transposed convolution, a depthwise one with a channel multiplier)."""
    if isinstance(module, nn.Linear):
        return LayerShape(
            "linear", math.prod(input_shape[:-1]) or 1, 1, module.in_features, module.out_features
        )
    if not isinstance(module, nn.Conv2d) or module.transposed or len(input_shape) != 4:
        return None
    if module.groups == 1:
        kind = "conv"
    elif module.groups == module.in_channels == module.out_channels:
        kind = "depthwise"
    else:
        return None
    size = (int(input_shape[2]), int(input_shape[3]))
    kernel, stride, dilation = (
        tuple(int(v) for v in x) for x in (module.kernel_size, module.stride, module.dilation)
    )
    pads = _torch_pads(module, size)
    same = all(
        p == _same_pads(n, k, s, d)
        for p, n, k, s, d in zip(pads, size, kernel, stride, dilation, strict=True)
    )
    height, width = size if same else (n + sum(p) for n, p in zip(size, pads, strict=True))
    return LayerShape(
        kind, height, width, module.in_channels, module.out_channels, kernel, stride, dilation, same
    )


def single_op_model(
    shape: LayerShape, weight: np.ndarray | None = None, bias: np.ndarray | None = None
) -> bytes:
    """A one-op float32 .tflite computing `shape` (NHWC), with `weight` (in TFLite's layout: OHWI for a
    convolution, 1HWO depthwise, OI for a Linear) and `bias`, seeded random ones when not given."""
    from edgeport.tflite_file import schema, serialize_tflite, set_builtin_code

    kh, kw = shape.kernel
    if shape.kind == "conv":
        weight_shape = (shape.cout, kh, kw, shape.cin)
    elif shape.kind == "depthwise":
        weight_shape = (1, kh, kw, shape.cout)
    else:
        weight_shape = (shape.cout, shape.cin)
    rng = np.random.default_rng(0)
    weight = rng.standard_normal(weight_shape).astype(np.float32) if weight is None else weight
    bias = np.zeros(shape.cout, np.float32) if bias is None else bias

    def buffer(values: np.ndarray | None) -> schema.BufferT:
        made = schema.BufferT()
        made.data = (
            []
            if values is None
            else np.frombuffer(np.ascontiguousarray(values, np.float32).tobytes(), np.uint8)
        )
        return made

    def tensor(name: str, dims: Sequence[int], index: int) -> schema.TensorT:
        made = schema.TensorT()
        made.name, made.shape, made.type, made.buffer = name, list(dims), schema.TensorType.FLOAT32, index
        return made

    out_h, out_w = shape.out_size
    if shape.kind == "linear":
        io = [(shape.height, shape.cin), (shape.height, shape.cout)]
    else:
        io = [(1, shape.height, shape.width, shape.cin), (1, out_h, out_w, shape.cout)]
    graph = schema.SubGraphT()
    graph.tensors = [
        tensor("input", io[0], 0),
        tensor("weight", weight_shape, 1),
        tensor("bias", (shape.cout,), 2),
        tensor("output", io[1], 0),
    ]
    graph.inputs, graph.outputs = [0], [3]
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    builtin, options_type = _OPS[shape.kind]
    op.builtinOptionsType = getattr(schema.BuiltinOptions, options_type)
    options = getattr(schema, f"{options_type}T")()
    if shape.kind != "linear":
        options.padding = schema.Padding.SAME if shape.same else schema.Padding.VALID
        options.strideH, options.strideW = shape.stride
        options.dilationHFactor, options.dilationWFactor = shape.dilation
    if shape.kind == "depthwise":
        options.depthMultiplier = 1
    options.fusedActivationFunction = schema.ActivationFunctionType.NONE
    op.builtinOptions = options
    graph.operators = [op]
    code = schema.OperatorCodeT()
    set_builtin_code(code, getattr(schema.BuiltinOperator, builtin))
    code.version = 1
    model = schema.ModelT()
    model.version = 3
    model.buffers = [buffer(None), buffer(weight), buffer(bias)]
    model.subgraphs, model.operatorCodes = [graph], [code]
    return serialize_tflite(model)


# Each op kind's builtin operator and options table (schema names).
_OPS = {
    "conv": ("CONV_2D", "Conv2DOptions"),
    "depthwise": ("DEPTHWISE_CONV_2D", "DepthwiseConv2DOptions"),
    "linear": ("FULLY_CONNECTED", "FullyConnectedOptions"),
}


# A timer: each shape's per-round times in µs (injected in tests; the default times them on LiteRT).
Timer = Callable[[Sequence[LayerShape]], list[list[float]]]


def time_shapes(shapes: Sequence[LayerShape]) -> list[list[float]]:
    """Each shape's one-op model timed on this host's LiteRT: µs per invoke, one figure per round."""
    from edgeport.runtimes.litert import interleaved_invoke_times

    times: list[list[float]] = []
    for start in range(0, len(shapes), BATCH):
        models = [single_op_model(s) for s in shapes[start : start + BATCH]]
        times += [[1e6 * t for t in rounds] for rounds in interleaved_invoke_times(models, ROUNDS)]
    return times


@dataclass
class _Row:
    term: CostTerm
    calls: list[LayerShape]  # the module's op at each of its calls, full width


class LayerTable:
    """The modules' float LiteRT times on this host (µs) as a function of the groups' kept fractions:
    the `score` allocate weighs steps in. Shapes are timed when first asked for (all of one
    `measure` call in one interleaved batch) and kept for the run."""

    def __init__(
        self,
        module: nn.Module,
        example: Sequence[torch.Tensor],
        model: CostModel,
        entries: int,
        timer: Timer | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        """`model`: the MACs cost model of `module` (its terms name their modules) over `entries` kept
        fractions (the allocation's groups, then its blocks); `example`: one input; `timer`: default
        time_shapes (this host's LiteRT); `say` hears each layer LiteRT cannot time."""
        self.timer = timer or time_shapes
        self.say = say or (lambda _text: None)
        self.full = [1.0] * entries
        self.times: dict[LayerShape, float] = {}
        self.spreads: dict[LayerShape, float] = {}
        self.untimeable: dict[LayerShape, str] = {}  # shapes the timer failed on, and its error
        self.priced: set[int] = set()  # rows (a shape of theirs untimeable) counted by MACs since
        modules = dict(module.named_modules())
        seen: dict[str, list[LayerShape | None]] = {}
        hooks = [
            modules[name].register_forward_pre_hook(
                lambda m, args, name=name: seen.setdefault(name, []).append(layer_shape(m, args[0].shape))
            )
            for name in {t.module for t in model.terms if t.module in modules}
        ]
        try:
            with torch.no_grad():
                module(*example)
        finally:
            for hook in hooks:
                hook.remove()
        self.rows: list[_Row] = []
        untimed: list[CostTerm] = []
        for term in model.terms:
            calls = seen.get(term.module, [None])
            if all(c is not None for c in calls):
                self.rows.append(_Row(term, calls))  # type: ignore[arg-type]
            else:
                untimed.append(term)
        # Modules it cannot time (other op kinds; a product no module makes) count by their MACs at
        # the µs per MAC the timed layers take at full width: left out, narrowing them would gain no
        # time at all and rank after every step that does, though it saves what their MACs cost.
        self.rest = CostModel(untimed)
        self._per_mac: float | None = None
        self._noise: float | None = None

    def shapes_at(self, kept: Sequence[float]) -> set[LayerShape]:
        """The ops the model runs with these kept fractions (of the layers it times)."""
        return {shape for _, row in self._timed_rows() for shape in self._row_shapes(row, kept)}

    def measure(self, kepts: Sequence[Sequence[float]]) -> None:
        """Time, in one interleaved batch, every shape these width assignments need and nothing has timed.
        A batch the timer fails on is timed again one shape at a time: each shape it fails on alone
        moves its layers to the MACs count (the module docstring), with one line naming each."""
        needed: dict[LayerShape, set[int]] = {}  # shape -> the rows running it
        for kept in kepts:
            for i, row in self._timed_rows():
                for shape in self._row_shapes(row, kept):
                    needed.setdefault(shape, set()).add(i)
        todo = sorted(needed.keys() - self.times.keys() - self.untimeable.keys(), key=repr)
        if todo:
            try:
                timed = list(zip(todo, self.timer(todo), strict=True))
            except Exception:  # noqa: BLE001 - which shape failed is found next, one by one
                timed = self._one_by_one(todo)
            for shape, rounds in timed:
                q1, median, q3 = np.percentile(rounds, [25, 50, 75])
                self.times[shape], self.spreads[shape] = float(median), float(q3 - q1) / 2
        for shape in sorted(needed.keys() & self.untimeable.keys(), key=repr):
            for i in sorted(needed[shape] - self.priced):
                self.priced.add(i)
                self.say(
                    f"latency: LiteRT cannot time layer {self.rows[i].term.module} as a one-op model "
                    f"({shape.kind} {shape.cin} -> {shape.cout} channels: {self.untimeable[shape]}); "
                    "it counts by its MACs at the timed layers' µs per MAC"
                )

    def _one_by_one(self, shapes: Sequence[LayerShape]) -> list[tuple[LayerShape, list[float]]]:
        """Each shape timed alone (not interleaved with the others: only after a batch failed); the
        ones the timer fails on recorded in `untimeable`."""
        timed = []
        for shape in shapes:
            try:
                (rounds,) = self.timer([shape])
            except Exception as exc:  # noqa: BLE001 - LiteRT's failure, named in the say line
                self.untimeable[shape] = exception_line(exc)
                continue
            timed.append((shape, rounds))
        return timed

    @property
    def timed(self) -> int:
        """How many layer shapes have been timed."""
        return len(self.times)

    @property
    def noise(self) -> float:
        """µs under which a gain is not one: the median half-interquartile range of the unpruned layers'
        rounds (two medians of shapes that run alike differ by about that)."""
        if self._noise is None:
            self.measure([self.full])
            spreads = [self.spreads[s] for s in self.shapes_at(self.full) if s in self.spreads]
            self._noise = float(np.median(spreads)) if spreads else 0.0
        return self._noise

    def total(self, kept: Sequence[float]) -> float:
        """µs of the modules with each group keeping the fraction `kept[g]` of its channels."""
        self.measure([kept])
        total = sum(self.times[s] for _, row in self._timed_rows() for s in self._row_shapes(row, kept))
        priced = [self.rows[i].term for i in sorted(self.priced)]
        if not self.rest.terms and not priced:
            return total
        return total + (self.rest.total(kept) + CostModel(priced).total(kept)) * self._rest_rate()

    def _timed_rows(self) -> list[tuple[int, _Row]]:
        """The rows (with their index) that are timed, not counted by MACs."""
        return [(i, row) for i, row in enumerate(self.rows) if i not in self.priced]

    def _rest_rate(self) -> float:
        """µs per MAC of the layers timed at full width (nothing timed: any rate, MACs alone weigh).
        Fixed once read: the full-width shapes are timed first and a time is never dropped."""
        if self._per_mac is None:
            self.measure([self.full])
            rows = [
                row for row in self.rows if all(s in self.times for s in self._row_shapes(row, self.full))
            ]
            macs = sum(row.term.base for row in rows)
            micros = sum(self.times[s] for row in rows for s in self._row_shapes(row, self.full))
            self._per_mac = micros / macs if macs and micros else 1.0
        return self._per_mac

    def _row_shapes(self, row: _Row, kept: Sequence[float]) -> list[LayerShape]:
        term = row.term
        if any(kept[b] == 0 for b in term.blocks):
            return []
        full = row.calls[0]
        cout = full.cout if term.out_group is None else max(1, round(kept[term.out_group] * full.cout))
        if term.depthwise:
            cin = cout
        else:
            fed = 1.0 - sum(share * (1.0 - kept[g]) for g, share in term.in_groups)
            cin = max(1, round(full.cin * fed))
        return [call.narrowed(cin, cout) for call in row.calls]
