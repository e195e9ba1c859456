"""The work of one inference, read from a .tflite, and the distillation steps a fixed budget allows.

Every step of data-free distillation (quant/calibration.py) runs the network forward and backward on
the whole synthetic batch, so its time is steps x batch x the model's work; counting that work from
the float model bounds the step count before any step runs, the same on every machine (a wall-clock
budget would make the step count, and so the int8 model and its manifest, depend on the machine's
load). Work = multiply-accumulates + ELEMENT_WEIGHT x activation elements: in PyTorch on a CPU the
elementwise ops, BatchNorms and their statistics cost far more per element than a convolution's
MAC (measured on 2 shared cores, 4 steps on a batch of 80: ResNet-20, 41 M MACs and ~0.5 M elements,
took 1.8x the time of EfficientNet-tiny at 48x48, 3.1 M MACs and 0.44 M elements; a weight of ~120
fits both). Each op also costs a fixed overhead per step whatever the batch (PyTorch's dispatch, the
BatchNorm statistics hooks): fitted on four zoo models distilled on 2 busy cores (0.4-4.3 s per step,
11-54 ops), one op weighs about OP_WORK of work, so a many-op model gets fewer steps too.
"""

from __future__ import annotations

import math

from edgeport.tflite_file import parse_tflite

# Ops whose work is a product over their weights; everything else costs one operation per output element.
_CONV = ("CONV_2D", "CONV_3D")
ELEMENT_WEIGHT = 120
OP_WORK = 130_000_000
# The budget is what distillation cost when its 50 steps were chosen (quant/calibration.py): ResNet-20
# (84 M work per sample, 41 ops by this count; 12.0 G per step of batch 80), 12 s on 2 shared cores,
# with some room so ResNet-20 keeps its 50 steps; a larger model gets proportionally fewer steps, so
# distillation costs that much at most whatever the model (minutes on 2 busy cores, not the 15+ of
# issue 10).
DISTILL_BUDGET = 50 * 12_500_000_000
# Fewer steps than this barely move the inputs from their starting noise (ResNet-20: 10 steps already
# cost 4 dB of SQNR against 50); below it, calibration uses the input statistics alone.
MIN_DISTILL_STEPS = 10


def _shape(graph: object, index: int) -> list[int]:
    tensor = graph.tensors[index]  # type: ignore[attr-defined]
    shape = tensor.shapeSignature if tensor.shapeSignature is not None else tensor.shape
    return [max(int(d), 1) for d in (shape if shape is not None else [])]


def tflite_macs(model: bytes) -> int:
    """Multiply-accumulates (main subgraph, batch as in the file) of one inference of `model`."""
    parsed = parse_tflite(model)
    graph = parsed.raw.subgraphs[0]
    total = 0
    for name, op in zip(parsed.ops, graph.operators or [], strict=False):
        inputs = list(op.inputs if op.inputs is not None else [])
        outputs = list(op.outputs if op.outputs is not None else [])
        if not outputs:
            continue
        out = math.prod(_shape(graph, outputs[0]))
        if name in _CONV and len(inputs) > 1:
            weights = _shape(graph, inputs[1])  # [cout, (d,) kh, kw, cin / groups]
            total += out * math.prod(weights[1:])
        elif name == "DEPTHWISE_CONV_2D" and len(inputs) > 1:
            weights = _shape(graph, inputs[1])  # [1, kh, kw, cout]
            total += out * math.prod(weights[1:-1])
        elif name == "FULLY_CONNECTED" and len(inputs) > 1:
            total += out * _shape(graph, inputs[1])[-1]  # [units, in]
        elif name == "BATCH_MATMUL" and inputs:
            lhs = _shape(graph, inputs[0])
            adj_x = bool(getattr(op.builtinOptions, "adjX", False))
            total += out * (lhs[-2] if adj_x and len(lhs) > 1 else lhs[-1])
        elif name == "TRANSPOSE_CONV" and len(inputs) > 2:
            weights = _shape(graph, inputs[1])  # [cout, kh, kw, cin]; input 2 is the data
            total += math.prod(_shape(graph, inputs[2])) * math.prod(weights[:-1])
        else:
            total += out
    return int(total)


def activation_elements(model: bytes) -> int:
    """Output elements of every op (main subgraph): the memory traffic of one inference."""
    graph = parse_tflite(model).raw.subgraphs[0]
    ops = [op for op in graph.operators or [] if op.outputs is not None and len(op.outputs)]
    return sum(math.prod(_shape(graph, op.outputs[0])) for op in ops)


def work(macs: int, elements: int) -> int:
    """One inference's work in MAC units: its MACs plus ELEMENT_WEIGHT per activation element."""
    return macs + ELEMENT_WEIGHT * elements


def batch_work(per_sample: int, ops: int, batch: int) -> int:
    """The work of one step on `batch` samples of `per_sample` work each, through `ops` ops (OP_WORK
    each, whatever the batch)."""
    return batch * per_sample + OP_WORK * ops


def sample_work(model: bytes) -> int:
    """One inference's work of a .tflite in MAC units."""
    return work(tflite_macs(model), activation_elements(model))


def step_work(model: bytes, batch: int) -> int:
    """The work of one distillation step on `batch` samples: their inferences plus OP_WORK per op."""
    return batch_work(sample_work(model), len(parse_tflite(model).ops), batch)


def steps_within(budget: float, work_per_step: float, wanted: int) -> int:
    """The most distillation steps (at most `wanted`) whose work fits `budget`."""
    return int(min(wanted, budget // max(1, work_per_step)))
