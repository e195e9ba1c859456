"""An ONNX graph as a differentiable PyTorch module, for BN-statistics distillation of ONNX sources.

Distillation (quant/calibration.py) needs gradients of every BatchNorm's batch statistics with
respect to the inputs, i.e. autograd through the network. For a PyTorch source that is the module
itself; for an ONNX source this module evaluates the graph node by node with torch ops, and every
`BatchNormalization` node becomes a real `torch.nn` BatchNorm, so distillation's hooks and running
statistics work exactly as for a PyTorch model.

Why not the `onnx2torch` package: it imports torchvision unconditionally, PyPI's torchvision wheels
for torch 2.13 are the CUDA builds (`import torchvision` fails with the CPU torch edgeport pins:
"operator torchvision::nms does not exist", its _C.so needs libtorch_cuda.so), and a plain
`pip install onnx2torch` resolves to torch 2.15 with CUDA. The CPU torchvision lives on PyTorch's own
index only. So this is a small evaluator for the ops CNN classifiers and small transformers export to
(LayerNormalization, attention's Softmax, Trilu, Where and Einsum), including the shape arithmetic of
unfolded exports (Shape, Gather, ConstantOfShape, Mod, ...); any other op (recurrent layers among
them) raises `UnsupportedOnnxGraph` naming it, and the caller falls back to another calibration
method.

The graph runs on a batch larger than the one it was exported with (distillation optimises a
batch of 80). Shape computations that go through `Shape` follow the real batch by themselves; a
`Reshape` to a constant shape that starts with the exported batch size is taken to mean "the
batch" (see `_reshape`). `check_against_onnxruntime` proves the module computes what onnxruntime
computes, on a batch of two, before it is used.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from torch import nn

from edgeport.onnx_graph import opset_version, outer_reads, upstream_nodes
from edgeport.onnx_resize import CUBIC_COEFF_A, TRANSFORMS, cubic_taps, source_coordinates

# Relative to the largest output magnitude, as the pipeline's own stage checks. The evaluator uses
# the same float32 ops as onnxruntime up to summation order (measured 3e-7 on ResNet-20), so a
# larger difference is a wrong op, not rounding.
CHECK_TOLERANCE = 1e-4


# What an op's failure raises (torch's and Python's errors), named with its node. Anything else passes
# through as raised: a caller's hook that ends a forward at a layer (quant/prune/reconstruct.py's _Stop).
_OP_ERRORS = (ArithmeticError, AttributeError, LookupError, RuntimeError, TypeError, ValueError)


class UnsupportedOnnxGraph(ValueError):
    """The graph has something the evaluator does not implement; `op` names it when it is an op."""

    def __init__(self, problem: str, op: str | None = None) -> None:
        self.op = op
        super().__init__(problem)


class _AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """ONNX BatchNormalization: channels on axis 1 for any rank >= 2 (torch's classes fix the rank).

    A `_BatchNorm`, so calibration's `_bn_modules` finds it like any PyTorch BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"BatchNormalization needs rank >= 2, got {input.dim()}")


_TORCH_DTYPES = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT16: torch.int16,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
}


def _tensor(proto: onnx.TensorProto) -> torch.Tensor:
    return torch.from_numpy(np.array(numpy_helper.to_array(proto)))


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise UnsupportedOnnxGraph(f"{node.op_type} with a sub-graph is not supported", node.op_type)
        value = helper.get_attribute_value(a)
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, onnx.TensorProto):
            value = _tensor(value)
        out[a.name] = value
    return out


def _ints(t: torch.Tensor | None) -> list[int] | None:
    return None if t is None else [int(v) for v in t.reshape(-1).tolist()]


# ---- ops ------------------------------------------------------------------------------------------
# Each takes (evaluator, attributes, *inputs; None for an omitted optional input) and returns a tensor
# or a tuple of tensors, one per node output.

Op = Callable[..., Any]
_OPS: dict[str, Op] = {}


def _op(*names: str) -> Callable[[Op], Op]:
    def register(fn: Op) -> Op:
        for name in names:
            _OPS[name] = fn
        return fn

    return register


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": torch.relu,
    "Sigmoid": torch.sigmoid,
    "Tanh": torch.tanh,
    "Exp": torch.exp,
    "Log": torch.log,
    "Sqrt": torch.sqrt,
    "Abs": torch.abs,
    "Neg": torch.neg,
    "Reciprocal": torch.reciprocal,
    "Erf": torch.erf,
    "Floor": torch.floor,
    "Ceil": torch.ceil,
    "Softplus": F.softplus,
    "HardSwish": F.hardswish,
    "Sin": torch.sin,
    "Cos": torch.cos,
    "Not": torch.logical_not,
    "Sign": torch.sign,
    "Round": torch.round,  # half to even, as ONNX
}
for _name, _fn in _UNARY.items():
    _OPS[_name] = lambda ev, a, x, _fn=_fn: _fn(x)

_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "Add": torch.add,
    "Sub": torch.sub,
    "Mul": torch.mul,
    "Pow": torch.pow,
    "Equal": torch.eq,
    "Less": torch.lt,
    "Greater": torch.gt,
    "LessOrEqual": torch.le,
    "GreaterOrEqual": torch.ge,
    "And": torch.logical_and,
    "Or": torch.logical_or,
    "Xor": torch.logical_xor,
}
for _name, _fn in _BINARY.items():
    _OPS[_name] = lambda ev, a, x, y, _fn=_fn: _fn(x, y)


@_op("Div")
def _div(ev: Evaluator, a: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if not x.is_floating_point() and not y.is_floating_point():
        return torch.div(x, y, rounding_mode="trunc")  # ONNX integer division truncates
    return x / y


@_op("Mod")
def _mod(ev: Evaluator, a: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # fmod=1 is C's fmod (the sign of x); fmod=0 Python's % (the sign of y), for integers only.
    if a.get("fmod", 0):
        return torch.fmod(x, y)
    if x.is_floating_point() or y.is_floating_point():
        raise ValueError("Mod of floating-point tensors needs fmod=1 (the ONNX definition)")
    return torch.remainder(x, y)


@_op("Max", "Min", "Sum", "Mean")
def _variadic(ev: Evaluator, a: dict, *xs: torch.Tensor) -> torch.Tensor:
    out = xs[0]
    for x in xs[1:]:
        op = ev.node.op_type
        out = torch.maximum(out, x) if op == "Max" else torch.minimum(out, x) if op == "Min" else out + x
    return out / len(xs) if ev.node.op_type == "Mean" else out


@_op("Identity", "Dropout")
def _identity(ev: Evaluator, a: dict, x: torch.Tensor, *rest: Any) -> torch.Tensor:
    return x  # Dropout is the identity at inference; its optional mask output is refused at build


@_op("LeakyRelu")
def _leaky(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, a.get("alpha", 0.01))


@_op("Elu")
def _elu(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return F.elu(x, a.get("alpha", 1.0))


@_op("Celu")
def _celu(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return F.celu(x, a.get("alpha", 1.0))


@_op("Selu")
def _selu(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    # ONNX's defaults are torch's constants rounded to float32.
    return a.get("gamma", 1.05070102214813232421875) * F.elu(x, a.get("alpha", 1.67326319217681884765625))


@_op("HardSigmoid")
def _hard_sigmoid(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0.0, 1.0)


@_op("Gelu")
def _gelu(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate=a.get("approximate", "none"))


@_op("PRelu")
def _prelu(ev: Evaluator, a: dict, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, x * slope)


@_op("Clip")
def _clip(
    ev: Evaluator, a: dict, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None
) -> torch.Tensor:
    lo = float(low) if low is not None else a.get("min")  # opset < 11: attributes
    hi = float(high) if high is not None else a.get("max")
    return torch.clamp(x, lo, hi)


@_op("Where")
def _where(ev: Evaluator, a: dict, cond: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.where(cond.bool(), x, y)


@_op("Softmax", "LogSoftmax")
def _softmax(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    fn = torch.softmax if ev.node.op_type == "Softmax" else torch.log_softmax
    if ev.opset >= 13:
        return fn(x, a.get("axis", -1))
    # Before opset 13 the input is flattened to 2-D at `axis` (default 1) and normalised per row.
    axis = a.get("axis", 1) % x.dim()
    return fn(x.reshape(math.prod(x.shape[:axis]), -1), 1).reshape(x.shape)


# -- layers


def spatial_pads(
    a: dict, size: Sequence[int], kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int]
) -> list[int]:
    """ONNX pads [begin..., end...] for a conv/pool, resolving auto_pad."""
    nd = len(size)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(size, kernel, strides, dilations, strict=True):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
        return begin + end
    if auto == "VALID":
        return [0] * (2 * nd)
    return list(a.get("pads", [0] * (2 * nd)))


def torch_pad(pads: Sequence[int]) -> list[int]:
    """ONNX [x1_begin, x2_begin, ..., x1_end, x2_end, ...] -> F.pad's (last_begin, last_end, ...)."""
    nd = len(pads) // 2
    out = []
    for i in reversed(range(nd)):
        out += [pads[i], pads[i + nd]]
    return out


@_op("Conv")
def _conv(
    ev: Evaluator, a: dict, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    nd = x.dim() - 2
    if nd not in (1, 2, 3):
        raise UnsupportedOnnxGraph(f"Conv on rank {x.dim()} is not supported", "Conv")
    strides = a.get("strides", [1] * nd)
    dilations = a.get("dilations", [1] * nd)
    pads = spatial_pads(a, x.shape[2:], w.shape[2:], strides, dilations)
    if pads[:nd] == pads[nd:]:
        padding = pads[:nd]
    else:  # asymmetric: pad explicitly (zeros, as the conv's own padding would)
        x, padding = F.pad(x, torch_pad(pads)), [0] * nd
    conv = (F.conv1d, F.conv2d, F.conv3d)[nd - 1]
    return conv(x, w, b, strides, padding, dilations, a.get("group", 1))


@_op("ConvTranspose")
def _conv_transpose(
    ev: Evaluator, a: dict, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None
) -> torch.Tensor:
    nd = x.dim() - 2
    if nd not in (1, 2, 3) or a.get("auto_pad", "NOTSET") != "NOTSET" or "output_shape" in a:
        raise UnsupportedOnnxGraph(
            "ConvTranspose with auto_pad/output_shape is not supported", "ConvTranspose"
        )
    pads = list(a.get("pads", [0] * (2 * nd)))
    if pads[:nd] != pads[nd:]:
        raise UnsupportedOnnxGraph("ConvTranspose with asymmetric pads is not supported", "ConvTranspose")
    conv = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
    return conv(
        x,
        w,
        b,
        a.get("strides", [1] * nd),
        pads[:nd],
        a.get("output_padding", [0] * nd),
        a.get("group", 1),
        a.get("dilations", [1] * nd),
    )


@_op("Gemm")
def _gemm(
    ev: Evaluator, a: dict, x: torch.Tensor, w: torch.Tensor, c: torch.Tensor | None = None
) -> torch.Tensor:
    x = x.t() if a.get("transA", 0) else x
    w = w.t() if a.get("transB", 0) else w
    out = a.get("alpha", 1.0) * (x @ w)
    return out + a.get("beta", 1.0) * c if c is not None else out


@_op("MatMul")
def _matmul(ev: Evaluator, a: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return torch.matmul(x, y)


def pool_sizes(
    size: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    pads: Sequence[int],
    dilations: Sequence[int],
    ceil: bool,
) -> list[int]:
    """A pool's output sizes as ONNX defines them (and onnxruntime computes them): with ceil_mode, a
    last window that would start in the end padding is dropped. torch drops one only when it starts
    past its input, and a pool over an explicitly padded input sees the padding as input."""
    nd = len(size)
    out = []
    for i, (n, k, s, d) in enumerate(zip(size, kernel, strides, dilations, strict=True)):
        span = n + pads[i] + pads[i + nd] - d * (k - 1) - 1
        o = (-(-span // s) if ceil else span // s) + 1
        out.append(o - 1 if ceil and (o - 1) * s >= n + pads[i] else o)
    return out


@_op("MaxPool", "AveragePool")
def _pool(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    nd = x.dim() - 2
    if nd not in (1, 2, 3):
        raise UnsupportedOnnxGraph(f"{ev.node.op_type} on rank {x.dim()} is not supported", ev.node.op_type)
    kernel = a["kernel_shape"]
    strides = a.get("strides", [1] * nd)
    dilations = a.get("dilations", [1] * nd)
    pads = spatial_pads(a, x.shape[2:], kernel, strides, dilations)
    ceil = bool(a.get("ceil_mode", 0))
    sizes = pool_sizes(x.shape[2:], kernel, strides, pads, dilations, ceil)
    crop = (..., *(slice(0, o) for o in sizes))  # torch's ceil mode may keep one window more
    if ev.node.op_type == "MaxPool":
        native = pads[:nd] == pads[nd:] and all(2 * p <= k for p, k in zip(pads[:nd], kernel, strict=True))
        if not native:  # padding never wins a max: pad with -inf and pool without padding
            x, pads = F.pad(x, torch_pad(pads), value=float("-inf")), [0] * (2 * nd)
        pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
        return pool(x, kernel, strides, pads[:nd], dilations, ceil)[crop]
    if any(d != 1 for d in dilations):
        raise UnsupportedOnnxGraph("AveragePool with dilations is not supported", "AveragePool")
    pool = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1]
    if a.get("count_include_pad", 0):
        # Every window divided by the whole kernel, as onnxruntime does also for a ceil-mode window
        # reaching past the padded input (torch divides that one by its part inside): zeros padded to
        # the end of the last window make every window whole.
        ends = [
            (o - 1) * s + k - n - pads[i] - pads[i + nd]
            for i, (o, s, k, n) in enumerate(zip(sizes, strides, kernel, x.shape[2:], strict=True))
        ]
        padded = F.pad(
            x, torch_pad(pads[:nd] + [p + max(e, 0) for p, e in zip(pads[nd:], ends, strict=True)])
        )
        return pool(padded, kernel, strides, 0, False)[crop]
    if not any(pads):
        return pool(x, kernel, strides, 0, ceil)[crop]
    # Padding excluded from the count: the ratio of the window sums of x and of a mask of real
    # elements, exact for any (also asymmetric) padding.
    padded = F.pad(x, torch_pad(pads))
    mask = F.pad(torch.ones_like(x[:1, :1]), torch_pad(pads))
    return (pool(padded, kernel, strides, 0, ceil) / pool(mask, kernel, strides, 0, ceil))[crop]


@_op("GlobalAveragePool", "GlobalMaxPool")
def _global_pool(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(2, x.dim()))
    return (
        x.mean(dims, keepdim=True) if ev.node.op_type == "GlobalAveragePool" else x.amax(dims, keepdim=True)
    )


def _prod(x: torch.Tensor, dims: Sequence[int], keepdim: bool) -> torch.Tensor:
    for d in sorted((d % x.dim() for d in dims), reverse=True):  # torch.prod takes one axis
        x = x.prod(d, keepdim=keepdim)
    return x


# Each reduction over `dims` (a list), keeping them as size 1 or not.
_REDUCTIONS: dict[str, Callable[[torch.Tensor, list[int], bool], torch.Tensor]] = {
    "ReduceMean": lambda x, dims, keep: x.mean(dims, keepdim=keep),
    "ReduceSum": lambda x, dims, keep: x.sum(dims, keepdim=keep),
    "ReduceMax": lambda x, dims, keep: x.amax(dims, keepdim=keep),
    "ReduceMin": lambda x, dims, keep: x.amin(dims, keepdim=keep),
    "ReduceProd": _prod,
    "ReduceL1": lambda x, dims, keep: x.abs().sum(dims, keepdim=keep),
    "ReduceL2": lambda x, dims, keep: x.square().sum(dims, keepdim=keep).sqrt(),
    "ReduceSumSquare": lambda x, dims, keep: x.square().sum(dims, keepdim=keep),
    "ReduceLogSum": lambda x, dims, keep: x.sum(dims, keepdim=keep).log(),
    "ReduceLogSumExp": lambda x, dims, keep: x.logsumexp(dims, keepdim=keep),
}


@_op(*_REDUCTIONS)
def _reduce(ev: Evaluator, a: dict, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    dims = _ints(axes) if axes is not None else a.get("axes")
    keep = bool(a.get("keepdims", 1))
    if not dims:
        if a.get("noop_with_empty_axes", 0):
            return x
        dims = list(range(x.dim()))
    return _REDUCTIONS[ev.node.op_type](x, list(dims), keep)


# -- shapes and indexing


@_op("Flatten")
def _flatten(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    axis = a.get("axis", 1)
    axis = axis + x.dim() if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@_op("Reshape")
def _reshape(ev: Evaluator, a: dict, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    target = _ints(shape) or []
    if not a.get("allowzero", 0):
        target = [x.shape[i] if d == 0 else d for i, d in enumerate(target)]
    # A constant shape that starts with the exported batch size (x.view(1, -1) exports as Reshape
    # to [1, -1]) means "the batch" when the batch runs larger: keep the batch dimension. Not when the
    # shape already fits without -1 (a constant [C] to [1, C, 1, 1], C equal to the batch by chance).
    fits = -1 not in target and math.prod(target) == x.numel()
    leads = bool(target) and x.dim() > 0 and target[0] == ev.exported_batch and x.shape[0] == ev.batch
    if ev.batch_changed and leads and not fits:
        target[0] = ev.batch
    return x.reshape(target)


@_op("Transpose")
def _transpose(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return x.permute(a.get("perm", list(reversed(range(x.dim())))))


@_op("Concat")
def _concat(ev: Evaluator, a: dict, *xs: torch.Tensor) -> torch.Tensor:
    return torch.cat(xs, a["axis"])


@_op("Split")
def _split(ev: Evaluator, a: dict, x: torch.Tensor, split: torch.Tensor | None = None) -> tuple:
    axis = a.get("axis", 0)
    sizes = _ints(split) if split is not None else a.get("split")
    if not sizes:
        count = a.get("num_outputs", len(ev.node.output))
        chunk = math.ceil(x.shape[axis] / count)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(count)]
    return tuple(torch.split(x, sizes, axis))


@_op("Squeeze")
def _squeeze(ev: Evaluator, a: dict, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    dims = _ints(axes) if axes is not None else a.get("axes")
    if dims is None:
        return x.squeeze()
    return x.squeeze(tuple(d % x.dim() for d in dims))


@_op("Unsqueeze")
def _unsqueeze(ev: Evaluator, a: dict, x: torch.Tensor, axes: torch.Tensor | None = None) -> torch.Tensor:
    dims = _ints(axes) if axes is not None else a["axes"]
    rank = x.dim() + len(dims)
    for d in sorted(d % rank for d in dims):
        x = x.unsqueeze(d)
    return x


@_op("Slice")
def _slice(
    ev: Evaluator,
    a: dict,
    x: torch.Tensor,
    starts: torch.Tensor | None = None,
    ends: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
    steps: torch.Tensor | None = None,
) -> torch.Tensor:
    if ev.opset < 10:
        begin, stop, dims, step = a["starts"], a["ends"], a.get("axes"), None
    else:
        begin, stop, dims, step = _ints(starts), _ints(ends), _ints(axes), _ints(steps)
    dims = dims if dims is not None else list(range(len(begin)))
    step = step if step is not None else [1] * len(begin)
    for s, e, d, k in zip(begin, stop, dims, step, strict=True):
        d %= x.dim()
        n = x.shape[d]
        s, e = s + n if s < 0 else s, e + n if e < 0 else e
        if k > 0:
            s, e = min(max(s, 0), n), min(max(e, 0), n)
            index: list[Any] = [slice(None)] * x.dim()
            index[d] = slice(s, e, k)
            x = x[tuple(index)]
        else:  # torch has no negative-step slicing: gather the indices in ONNX's order
            s, e = min(max(s, 0), n - 1), min(max(e, -1), n - 1)
            x = x.index_select(d, torch.arange(s, e, k, dtype=torch.long))
    return x


@_op("Gather")
def _gather(ev: Evaluator, a: dict, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    axis = a.get("axis", 0) % x.dim()
    idx = indices.long()
    idx = torch.where(idx < 0, idx + x.shape[axis], idx)
    out = x.index_select(axis, idx.reshape(-1))
    return out.reshape((*x.shape[:axis], *idx.shape, *x.shape[axis + 1 :]))


def pad_amounts(
    a: dict,
    rank: int,
    pads: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
) -> tuple[list[int], float]:
    """A Pad node's ONNX pads for every axis of a rank-`rank` input ([x1_begin, ..., x1_end, ...]) and
    its fill value, from its inputs (opset 11+) or attributes."""
    amounts = _ints(pads) if pads is not None else list(a["pads"])  # opset < 11: attribute
    fill = float(value) if value is not None and value.numel() else float(a.get("value", 0.0))
    if axes is not None:  # opset 18: pads only for `axes`; widen to every axis
        dims = [d % rank for d in _ints(axes) or []]
        full = [0] * (2 * rank)
        for i, d in enumerate(dims):
            full[d], full[d + rank] = amounts[i], amounts[i + len(dims)]
        amounts = full
    return amounts, fill


@_op("Pad")
def _pad(
    ev: Evaluator,
    a: dict,
    x: torch.Tensor,
    pads: torch.Tensor | None = None,
    value: torch.Tensor | None = None,
    axes: torch.Tensor | None = None,
) -> torch.Tensor:
    amounts, fill = pad_amounts(a, x.dim(), pads, value, axes)
    mode = a.get("mode", "constant")
    torch_mode = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}.get(mode)
    if torch_mode is None:
        raise UnsupportedOnnxGraph(f"Pad mode {mode!r} is not supported", "Pad")
    if torch_mode == "constant":
        return F.pad(x, torch_pad(amounts), value=fill)
    # reflect/replicate pad only trailing spatial dims in torch; ONNX exports pad those too.
    nd = x.dim()
    lead = [i for i in range(nd) if amounts[i] or amounts[i + nd]]
    if lead and min(lead) < 2:
        raise UnsupportedOnnxGraph(f"Pad mode {mode!r} on the batch or channel axis is not supported", "Pad")
    return F.pad(x, torch_pad(amounts[2:nd] + amounts[nd + 2 :]), mode=torch_mode)


_NEAREST: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "round_prefer_floor": lambda x: torch.where(x - x.floor() == 0.5, x.floor(), x.round()),
    "round_prefer_ceil": lambda x: torch.where(x - x.floor() == 0.5, x.ceil(), x.round()),
    "floor": torch.floor,
    "ceil": torch.ceil,
}


@_op("Resize")
def _resize(
    ev: Evaluator,
    a: dict,
    x: torch.Tensor,
    roi: torch.Tensor | None = None,
    scales: torch.Tensor | None = None,
    sizes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Resize's nearest, linear and cubic modes over the spatial axes (2 onwards), as ONNX defines them:
    each output index maps to a source coordinate (edgeport.onnx_resize, in float32 as onnxruntime
    computes it), rounded (_NEAREST) or interpolated between its two or four neighbours, indices
    clamped to the input. The batch and channel axes keep their sizes."""
    mode = a.get("mode", "nearest")
    transform = a.get("coordinate_transformation_mode", "half_pixel")
    unsupported = (
        (ev.opset < 11, "Resize before opset 11 (inputs X, scales)"),
        (mode not in ("nearest", "linear", "cubic"), f"Resize mode {mode!r}"),
        (transform not in TRANSFORMS, f"Resize coordinate_transformation_mode {transform!r}"),
        (bool(a.get("antialias", 0)), "Resize with antialias"),
        ("axes" in a, "Resize with an axes attribute"),
        (a.get("keep_aspect_ratio_policy", "stretch") != "stretch", "Resize keep_aspect_ratio_policy"),
    )
    for bad, what in unsupported:
        if bad:
            raise UnsupportedOnnxGraph(f"{what} has no PyTorch equivalent here", "Resize")
    given = [float(v) for v in scales.reshape(-1).tolist()] if scales is not None and scales.numel() else None
    if given is not None and any(v != 1.0 for v in given[:2]):
        raise UnsupportedOnnxGraph(
            "Resize of the batch or channel axis has no PyTorch equivalent here", "Resize"
        )
    out_sizes = _ints(sizes) if given is None else None
    for axis in range(2, x.dim()):
        n = int(x.shape[axis])  # a traced export hands sizes over as tensors
        m = int(math.floor(n * given[axis])) if given is not None else out_sizes[axis]  # type: ignore[index]
        scale = given[axis] if given is not None else m / n
        along = [m] + [1] * (x.dim() - axis - 1)  # a weight per output index, broadcast over later axes
        if mode == "cubic":
            exclude = bool(a.get("exclude_outside", 0))
            coeff = float(a.get("cubic_coeff_a", CUBIC_COEFF_A))
            taps, weights = cubic_taps(n, m, scale, transform, coeff, exclude, np.float32)
            x = sum(
                x.index_select(axis, torch.from_numpy(index)) * torch.from_numpy(w).to(x.dtype).reshape(along)
                for index, w in zip(taps, weights, strict=True)
            )
            continue
        source = torch.from_numpy(source_coordinates(n, m, scale, transform, np.float32))
        if mode == "nearest":
            index = _NEAREST[a.get("nearest_mode", "round_prefer_floor")](source).clamp(0, n - 1).long()
            x = x.index_select(axis, index)
            continue
        low = source.floor()
        weight = (source - low).to(x.dtype).reshape(along)
        first = x.index_select(axis, low.clamp(0, n - 1).long())
        second = x.index_select(axis, (low + 1).clamp(0, n - 1).long())
        x = first + (second - first) * weight
    return x


@_op("Shape")
def _shape(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    dims = list(x.shape)[a.get("start", 0) : a.get("end", None)]
    return torch.tensor(dims, dtype=torch.int64)


@_op("Size")
def _size(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    return torch.tensor(x.numel(), dtype=torch.int64)


@_op("Constant")
def _constant(ev: Evaluator, a: dict) -> torch.Tensor:
    if "value" in a:
        return a["value"]
    for key, dtype in (("value_float", torch.float32), ("value_floats", torch.float32)):
        if key in a:
            return torch.tensor(a[key], dtype=dtype)
    for key in ("value_int", "value_ints"):
        if key in a:
            return torch.tensor(a[key], dtype=torch.int64)
    raise UnsupportedOnnxGraph(f"Constant with {sorted(a)} is not supported", "Constant")


@_op("ConstantOfShape")
def _constant_of_shape(ev: Evaluator, a: dict, shape: torch.Tensor) -> torch.Tensor:
    value = a.get("value", torch.zeros(1, dtype=torch.float32))
    return torch.full(_ints(shape) or [], value.reshape(-1)[0].item(), dtype=value.dtype)


@_op("Cast")
def _cast(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    dtype = _TORCH_DTYPES.get(a["to"])
    if dtype is None:
        raise UnsupportedOnnxGraph(f"Cast to ONNX type {a['to']} is not supported", "Cast")
    return x.to(dtype)


@_op("Expand")
def _expand(ev: Evaluator, a: dict, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
    # ONNX Expand broadcasts both ways (a 1 in `shape` keeps x's size), unlike torch.expand.
    return x.expand(torch.broadcast_shapes(x.shape, tuple(_ints(shape) or [])))


@_op("Tile")
def _tile(ev: Evaluator, a: dict, x: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    return x.repeat(*(_ints(repeats) or []))


@_op("Range")
def _range(
    ev: Evaluator, a: dict, start: torch.Tensor, limit: torch.Tensor, delta: torch.Tensor
) -> torch.Tensor:
    return torch.arange(start.item(), limit.item(), delta.item(), dtype=start.dtype)


@_op("Trilu")
def _trilu(ev: Evaluator, a: dict, x: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
    diagonal = int(k.item()) if k is not None else 0
    return torch.triu(x, diagonal) if a.get("upper", 1) else torch.tril(x, diagonal)


@_op("Einsum")
def _einsum(ev: Evaluator, a: dict, *xs: torch.Tensor) -> torch.Tensor:
    return torch.einsum(a["equation"].replace(" ", ""), *xs)


@_op("ArgMax", "ArgMin")
def _arg_extreme(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    axis = a.get("axis", 0) % x.dim()
    keep = bool(a.get("keepdims", 1))
    find = torch.argmax if ev.node.op_type == "ArgMax" else torch.argmin
    if not a.get("select_last_index", 0):
        return find(x, axis, keepdim=keep)  # torch returns the first of equal extremes
    return x.shape[axis] - 1 - find(x.flip(axis), axis, keepdim=keep)


@_op("DepthToSpace")
def _depth_to_space(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    block = a["blocksize"]
    if a.get("mode", "DCR") == "CRD":
        return F.pixel_shuffle(x, block)  # the same channel order
    b, c, h, w = x.shape
    depth = c // (block * block)
    x = x.reshape(b, block, block, depth, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(b, depth, h * block, w * block)


@_op("SpaceToDepth")
def _space_to_depth(ev: Evaluator, a: dict, x: torch.Tensor) -> torch.Tensor:
    # Block offsets outermost in the channels (DCR order), unlike F.pixel_unshuffle.
    block = a["blocksize"]
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // block, block, w // block, block).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(b, c * block * block, h // block, w // block)


@_op("BatchNormalization")
def _batchnorm(ev: Evaluator, a: dict, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
    return ev.batchnorms[ev.bn_keys[ev.node.output[0]]](x)


@_op("LayerNormalization")
def _layer_norm(
    ev: Evaluator, a: dict, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised over the axes from `axis` on, statistics computed in `stash_type`; the optional
    Mean and InvStdDev outputs (kept axes of size 1) when the node asks for them."""
    axis = a.get("axis", -1) % x.dim()
    eps = a.get("epsilon", 1e-5)
    stash = _TORCH_DTYPES.get(a.get("stash_type", onnx.TensorProto.FLOAT))
    if stash is None or not stash.is_floating_point:
        raise UnsupportedOnnxGraph(
            f"LayerNormalization stash_type {a.get('stash_type')} is not supported", "LayerNormalization"
        )
    shape = tuple(x.shape[axis:])
    statistics = any(ev.node.output[1:])
    whole = scale.shape == shape and (bias is None or bias.shape == shape)
    if stash == x.dtype and whole and not statistics:  # torch's own op (re-exported as LayerNormalization)
        return F.layer_norm(x, shape, scale, bias, eps)
    dims = list(range(axis, x.dim()))
    stashed = x.to(stash)
    mean = stashed.mean(dims, keepdim=True)
    centred = stashed - mean
    inv_std = torch.rsqrt(centred.square().mean(dims, keepdim=True) + eps)
    # Scaled in the stash type and cast once, as onnxruntime does; scale and bias broadcast to the
    # normalised axes.
    y = centred * inv_std * scale.to(stash)
    y = (y + bias.to(stash) if bias is not None else y).to(x.dtype)
    return (y, mean, inv_std) if statistics else y


@_op("InstanceNormalization")
def _instance_norm(
    ev: Evaluator, a: dict, x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    return F.instance_norm(x, weight=scale, bias=bias, eps=a.get("epsilon", 1e-5))


# ---- the evaluator --------------------------------------------------------------------------------


class Evaluator(nn.Module):
    """`forward(*inputs)` computes the graph's outputs (one tensor, or a tuple) with torch ops.

    Inputs are positional, in the graph's input order (initializers excluded), and may have a
    larger batch than the graph was exported with. Every BatchNormalization node is an eval-mode
    BatchNorm in `self.batchnorms` (`onnx_name` says which node: module names cannot hold the
    dots ONNX node names have).
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        self.opset = opset_version(model)
        self._nodes = list(graph.node)
        self._attrs = [_attrs(n) for n in self._nodes]
        # Tensor -> index of the node writing it.
        self._producer = {out: i for i, n in enumerate(self._nodes) for out in n.output}
        unsupported = [n for n in self._nodes if n.op_type not in _OPS or n.domain not in ("", "ai.onnx")]
        if unsupported:
            first = unsupported[0]
            kinds = sorted(
                {
                    f"{n.domain + ':' if n.domain not in ('', 'ai.onnx') else ''}{n.op_type}"
                    for n in unsupported
                }
            )
            raise UnsupportedOnnxGraph(
                f"op {kinds[0]} (node {first.name or first.output[0]!r}) has no PyTorch equivalent here"
                + (f"; also {', '.join(kinds[1:])}" if len(kinds) > 1 else ""),
                kinds[0],
            )
        self._constants: dict[str, torch.Tensor] = {i.name: _tensor(i) for i in graph.initializer}
        # Constant nodes' values (Paddle writes weights so; BatchNorm parameters may be), by output.
        self.constant_nodes: dict[str, torch.Tensor] = {
            n.output[0]: _constant(self, a)
            for n, a in zip(self._nodes, self._attrs, strict=True)
            if n.op_type == "Constant"
        }
        self.input_names = [i.name for i in graph.input if i.name not in self._constants]
        self.output_names = [o.name for o in graph.output]
        by_name = {i.name: i for i in graph.input}
        dims = by_name[self.input_names[0]].type.tensor_type.shape.dim if self.input_names else []
        self.exported_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
        self.batch: int | None = None
        self.batch_changed = False
        self.node: onnx.NodeProto = onnx.NodeProto()
        self.batchnorms = nn.ModuleDict()
        self.bn_keys: dict[str, str] = {}  # BN node's output -> key in self.batchnorms
        for node, attrs in zip(self._nodes, self._attrs, strict=True):
            if node.op_type == "BatchNormalization":
                self._add_batchnorm(node, attrs)
            if node.op_type == "Dropout" and len(node.output) > 1 and node.output[1]:
                raise UnsupportedOnnxGraph("Dropout with a mask output is not supported", "Dropout")

    def _add_batchnorm(self, node: onnx.NodeProto, attrs: dict) -> None:
        if attrs.get("training_mode", 0) or any(node.output[1:]):
            raise UnsupportedOnnxGraph(
                f"BatchNormalization {node.name!r} is in training mode (a training graph, not inference)",
                "BatchNormalization",
            )
        params = []
        for name in node.input[1:5]:
            value = self._constants.get(name, self.constant_nodes.get(name))
            if value is None:
                raise UnsupportedOnnxGraph(
                    f"BatchNormalization {node.name!r} has non-constant parameters", "BatchNormalization"
                )
            params.append(value.float())
        scale, bias, mean, var = params
        bn = _AnyRankBatchNorm(scale.numel(), eps=attrs.get("epsilon", 1e-5))
        with torch.no_grad():
            bn.weight.copy_(scale)
            bn.bias.copy_(bias)
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        bn.onnx_name = node.name or node.output[0]
        key = f"bn{len(self.batchnorms)}"
        self.batchnorms[key] = bn.eval()
        self.bn_keys[node.output[0]] = key

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        env = self._values(inputs)
        results = tuple(env[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def shapes(self, *inputs: torch.Tensor) -> dict[str, tuple[int, ...]]:
        """Every tensor's shape, by name, in one forward on `inputs` (where ONNX shape inference stops
        at a Pad whose amounts are computed: torch.onnx.export's channel pads)."""
        with torch.no_grad():
            env = self._values(inputs)
        return {name: tuple(v.shape) for name, v in env.items() if isinstance(v, torch.Tensor)}

    def _values(self, inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
        """Every tensor of the graph, by name, computed on `inputs`."""
        if len(inputs) != len(self.input_names):
            raise ValueError(f"the graph takes {len(self.input_names)} inputs, got {len(inputs)}")
        self.batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else None
        self.batch_changed = self.exported_batch is not None and self.batch != self.exported_batch
        env: dict[str, Any] = dict(self._constants)
        env.update(zip(self.input_names, inputs, strict=True))
        self._run(self.steps(), env, self.run_node)
        return env

    def steps(self) -> Iterable[tuple[onnx.NodeProto, dict]]:
        """The (node, attributes) a forward runs, in graph order (a subclass may run others in place of
        some: quant/prune/onnx_source.py's removed residual blocks)."""
        return zip(self._nodes, self._attrs, strict=True)

    def _run(
        self,
        steps: Iterable[tuple[onnx.NodeProto, dict]],
        env: dict[str, Any],
        run: Callable[[onnx.NodeProto, dict, list[Any]], Any],
    ) -> None:
        """Run the (node, attributes) `steps` in order with `run`, reading and writing `env`."""
        for node, attrs in steps:
            self.node = node
            args = [env[name] if name else None for name in node.input]
            while args and args[-1] is None:
                args.pop()
            try:
                out = run(node, attrs, args)
            except UnsupportedOnnxGraph:
                raise
            except _OP_ERRORS as exc:
                raise RuntimeError(
                    f"node {node.name or node.output[0]!r} ({node.op_type}): {type(exc).__name__}: "
                    f"{str(exc).splitlines()[0][:160] if str(exc) else ''}"
                ) from exc
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    env[name] = value

    def run_node(self, node: onnx.NodeProto, attrs: dict, args: list[Any]) -> Any:
        """One node's outputs (a subclass may run some nodes through modules: quant/prune/onnx_source.py)."""
        return _OPS[node.op_type](self, attrs, *args)

    def constant(self, name: str) -> torch.Tensor | None:
        """The value of tensor `name` when no graph input reaches it (an initializer, a Constant node,
        or ops on those: torch.onnx.export writes a channel pad's amounts as ConstantOfShape, Concat,
        Reshape, Slice, Transpose and Cast of Constants), computed with the evaluator's ops; else None."""
        needed = upstream_nodes(name, self._producer, self._nodes, self._constants.__contains__)
        if needed is None:
            return None  # a graph input reaches it
        env: dict[str, Any] = dict(self._constants)
        steps = ((self._nodes[i], self._attrs[i]) for i in sorted(needed))  # graph order is topological
        # The base class's run_node: a subclass may run a node through a module, constants are ops'.
        self._run(steps, env, functools.partial(Evaluator.run_node, self))
        return env[name]


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """The tensors of `graph` no graph input reaches: its initializers and the outputs of the nodes
    that read only those (a Constant node reads nothing), in their subgraphs too (outer_reads)."""
    known = {i.name for i in graph.initializer}
    for node in graph.node:  # graph order is topological
        if all(not name or name in known for name in [*node.input, *outer_reads(node)]):
            known.update(name for name in node.output if name)
    return known


def batchnorm_count(model: onnx.ModelProto) -> int:
    return sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")


def onnx_to_torch(model: onnx.ModelProto) -> Evaluator:
    """The graph as an eval-mode module; raises `UnsupportedOnnxGraph` naming what it cannot run."""
    return Evaluator(model).eval()


def check_against_onnxruntime(
    module: Evaluator,
    model: onnx.ModelProto,
    samples: Sequence[dict[str, np.ndarray]],
    scale_floors: Mapping[str, float] | None = None,
) -> float:
    """Worst relative output error of `module` on all `samples` as one batch vs onnxruntime per sample.

    One batch of several exported-batch samples exercises the batch handling distillation relies
    on. `samples` are keyed by position: their i-th entry feeds the graph's i-th input (names may
    differ after --input-name). `scale_floors`: compare's, by output name (a probability map near 0
    is judged against its scale: converters/verify.scale_floors).
    """
    from edgeport.agreement import compare
    from edgeport.runtimes.onnxrt import run_onnx

    feeds = [dict(zip(module.input_names, s.values(), strict=True)) for s in samples]
    reference = run_onnx(model.SerializeToString(), feeds)
    with torch.no_grad():
        batch = [torch.from_numpy(np.concatenate([f[n] for f in feeds])) for n in module.input_names]
        out = module(*batch)
    outs = out if isinstance(out, tuple) else (out,)
    sizes = [next(iter(f.values())).shape[0] for f in feeds]
    starts = np.cumsum([0, *sizes])
    got = [
        {
            name: o[starts[i] : starts[i + 1]].numpy()
            for name, o in zip(module.output_names, outs, strict=True)
        }
        for i in range(len(feeds))
    ]
    errors = compare("onnx_torch", reference, got, scale_floors)
    return max((e.max_rel_error for e in errors), default=0.0)
