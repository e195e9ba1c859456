"""Multiply-accumulates of one inference, per Conv/Linear module, and parameter counts.

MACs here are the convolutions' and fully-connected layers' (what pruning removes and what int8
kernels spend their time in): a Conv is output elements x (input channels / groups) x kernel size, a
transposed Conv input elements x (output channels / groups) x kernel size (each input element is
spread over a kernel of every output channel of its group), a Linear output elements x input
features, a matrix product output elements x the shared dimension, an nn.MultiheadAttention its four
projections and its two products over the sequence; for the batch of the inputs given divided by its
size.

Counted twice, on purpose: on the PyTorch module (per module, what the allocation's cost model needs)
and on the exported ONNX graph (what converts: it also holds products PyTorch computes without a
module, such as attention's query-key product), the same rules for both. quant/cost.py counts a
.tflite instead (TFLite ops, elementwise work included): a different graph, a different question.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx
import torch
import torch.nn as nn


def module_macs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """MACs per Conv/Linear/MultiheadAttention module name for one sample (a module called twice
    counts twice). Products computed without a module (F.scaled_dot_product_attention, q @ k) are
    not seen here: onnx_counts sees them."""
    macs: dict[str, int] = {}
    batch = max(1, int(inputs[0].shape[0])) if inputs and inputs[0].dim() > 0 else 1

    def hook(name: str):  # noqa: ANN202 - a forward hook
        def count(m: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            if isinstance(m, nn.MultiheadAttention):
                total = attention_macs(m, *_qkv(args, kwargs))
            elif isinstance(m, nn.modules.conv._ConvNd) and m.transposed:
                total = args[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)
            elif isinstance(m, nn.modules.conv._ConvNd):
                total = out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)  # type: ignore[union-attr]
            else:
                total = out.numel() * m.in_features  # type: ignore[union-attr]
            macs[name] = macs.get(name, 0) + total // batch

        return count

    watched = (
        (m, hook(name))
        for name, m in module.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear | nn.MultiheadAttention)
    )
    forward_with_hooks(module, inputs, watched, with_kwargs=True)
    return macs


def _qkv(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    named = [kwargs.get(k) for k in ("query", "key", "value")]
    query, key, value = (list(args) + named[len(args) :])[:3]
    return query, key, value


def attention_macs(
    m: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
) -> int:
    """nn.MultiheadAttention's MACs (its out_proj is applied functionally: no Linear hook sees it):
    the query, key, value and output projections, scores (query x key) and their product with values,
    at its inner width (heads x head_dim: the embedding, unless heads were pruned)."""
    e, inner = m.embed_dim, m.num_heads * m.head_dim
    queries, keys = query.numel() // e, key.numel() // m.kdim  # positions x batch
    batched = query.dim() == 3
    n = (query.shape[0] if m.batch_first else query.shape[1]) if batched else 1
    length = keys // n
    projections = (queries * e + keys * m.kdim + (value.numel() // m.vdim) * m.vdim + queries * e) * inner
    return projections + 2 * queries * length * inner


def forward_with_hooks(
    module: nn.Module,
    inputs: Sequence[torch.Tensor],
    hooks: Iterable[tuple[nn.Module, Callable]],
    with_kwargs: bool = False,
    pre_hooks: Iterable[tuple[nn.Module, Callable]] = (),
    mode: contextlib.AbstractContextManager | None = None,
) -> None:
    """One no-grad forward of `module` with each (submodule, forward hook) and (submodule, forward
    pre-hook) attached, removed on every path, inside `mode` when given (a TorchFunctionMode that
    watches functional calls); `with_kwargs`: hooks take (module, args, kwargs, output)."""
    handles = [m.register_forward_hook(h, with_kwargs=with_kwargs) for m, h in hooks]
    handles += [m.register_forward_pre_hook(h) for m, h in pre_hooks]
    try:
        with torch.no_grad(), mode or contextlib.nullcontext():
            module(*inputs)
    finally:
        for handle in handles:
            handle.remove()


def module_calls(
    model: nn.Module, inputs: Sequence[torch.Tensor], modules: Iterable[nn.Module]
) -> dict[nn.Module, list[tuple[tuple, dict, object]]]:
    """Every call of each of `modules` in one no-grad run of `model` on `inputs`: (args, kwargs,
    output), in call order; a module not called is absent."""
    calls: dict[nn.Module, list[tuple[tuple, dict, object]]] = {}

    def hook(m: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
        calls.setdefault(m, []).append((args, kwargs, out))

    forward_with_hooks(model, inputs, ((m, hook) for m in modules), with_kwargs=True)
    return calls


def in_width(module: nn.Module) -> int:
    """A Linear's or convolution's input channels (0 for any other module)."""
    if isinstance(module, nn.Linear):
        return module.in_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.in_channels
    return 0


def out_width(module: nn.Module) -> int:
    """A Linear's or convolution's output channels (0 for any other module)."""
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return 0


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Inputs of these ops that hold state rather than parameters (a BatchNorm's running statistics).
_NOT_PARAMETERS = {"BatchNormalization": (3, 4)}


def onnx_counts(model: onnx.ModelProto) -> tuple[int, int]:
    """(MACs, parameters) of one inference of an exported graph with static input shapes.

    MACs: Conv, ConvTranspose, Gemm and MatMul (shapes from ONNX shape inference, or where that
    stops, from one onnxruntime run), divided by the first input's batch. Parameters: elements of
    the float initializers the nodes read, each once, BatchNorm running statistics left out (state,
    as in PyTorch), so both agree with count_params.
    """
    graph = model.graph
    shapes = _tensor_shapes(model)
    data_inputs = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    first = shapes.get(data_inputs[0].name, []) if data_inputs else []
    batch = max(1, first[0]) if first else 1
    macs = 0
    for node in graph.node:
        macs += _node_macs(node, shapes)
    floats = {
        t.name: int(np.prod(t.dims)) for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT
    }
    alias = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Identity" and n.input[0]}
    read: set[str] = set()
    for node in graph.node:
        skip = _NOT_PARAMETERS.get(node.op_type, ())
        for position, name in enumerate(node.input):
            while name in alias:
                name = alias[name]
            if position not in skip and name in floats and node.op_type != "Identity":
                read.add(name)
    return macs // batch, sum(floats[n] for n in read)


_PRODUCTS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _tensor_shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    """Static shapes of the graph's tensors: ONNX shape inference first; when it leaves a product's
    operand unknown (a Resize or Pad whose sizes are computed), one onnxruntime run on zeros."""
    graph = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    shapes: dict[str, list[int]] = {i.name: list(i.dims) for i in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = info.type.tensor_type.shape.dim
        if info.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
            shapes.setdefault(info.name, [d.dim_value for d in dims])
    needed = {
        n for node in graph.node if node.op_type in _PRODUCTS for n in [*node.input[:2], node.output[0]]
    }
    missing = sorted(n for n in needed if n and n not in shapes)
    if not missing:
        return shapes
    from edgeport.runtimes.onnxrt import run_onnx
    from edgeport.tensors import TensorSpec, random_inputs

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in missing)
    initializers = {t.name for t in model.graph.initializer}
    specs = [
        TensorSpec(
            i.name,
            [d.dim_value for d in i.type.tensor_type.shape.dim],
            onnx.helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type),
        )
        for i in model.graph.input
        if i.name not in initializers
    ]
    (outputs,) = run_onnx(probe.SerializeToString(), random_inputs(specs, 1, 0))
    shapes.update({n: list(np.shape(outputs[n])) for n in missing if n in outputs})
    return shapes


def _node_macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """One node's multiply-accumulates (0 for ops that are not products, or shapes not known)."""
    if node.op_type not in _PRODUCTS or len(node.input) < 2:
        return 0
    a, b, out = shapes.get(node.input[0]), shapes.get(node.input[1]), shapes.get(node.output[0])
    if a is None or b is None or out is None:
        return 0
    if node.op_type == "Conv":  # weight [out, in / groups, *kernel]
        return math.prod(out) * math.prod(b[1:])
    if node.op_type == "ConvTranspose":  # weight [in, out / groups, *kernel]
        return math.prod(a) * math.prod(b[1:])
    if node.op_type == "Gemm":
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        return math.prod(out) * (a[0] if trans_a else a[-1])
    return math.prod(out) * a[-1]  # MatMul: [..., m, k] x [..., k, n]
