"""ONNX clean-up before onnx2tf: fixed input shapes, simplification, and the layout decision.

The layout decision is per input: an input that feeds spatial ops (conv, pooling, resize,
normalisation) is an image-like NC... tensor and goes channels-last; anything else (a sequence,
a feature vector) keeps its exact shape so that onnx2tf never re-reads [batch, time, features]
as NCW.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import onnx
from onnx import shape_inference

from edgeport.errors import EdgeportError

SPATIAL_OPS = {
    "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "LpPool", "BatchNormalization", "InstanceNormalization", "Resize", "Upsample", "DepthToSpace",
    "SpaceToDepth", "LRN", "QLinearConv",
}  # fmt: skip
# Ops an input may pass through (e.g. a normalisation x * s + b) before reaching a spatial op.
_PASS_THROUGH = {"Mul", "Add", "Sub", "Div", "Relu", "Clip", "Cast", "Identity", "Pad"}


@functools.cache
def onnx2tf_op_types() -> frozenset[str]:
    """The ONNX op types onnx2tf has a translation for: one module per op in onnx2tf/ops/.

    Read from the package folder, without importing onnx2tf (which imports TensorFlow).
    """
    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    ops = Path(next(iter(spec.submodule_search_locations))) / "ops"
    return frozenset(p.stem for p in ops.glob("*.py") if not p.stem.startswith("_"))


def _all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, including those inside If / Loop / Scan bodies."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _all_nodes(sub)


def unique_node_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """Node names made unique (onnxruntime refuses a graph where two nodes share one; the ONNX checker
    and some exporters allow it): a repeated name gets a _1, _2, ... suffix."""
    nodes = list(_all_nodes(model.graph))
    names = [n.name for n in nodes if n.name]
    if len(names) == len(set(names)):
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    taken, seen = set(names), set()
    for node in _all_nodes(model.graph):
        if not node.name:
            continue
        if node.name in seen:
            k = 1
            while f"{node.name}_{k}" in taken:
                k += 1
            node.name = f"{node.name}_{k}"
            taken.add(node.name)
        seen.add(node.name)
    return model


def check_translatable(model: onnx.ModelProto) -> onnx.ModelProto:
    """Refuse, before any conversion work, a model with ops onnx2tf cannot translate.

    Model-local ONNX functions are inlined first (their bodies are ordinary ops); returns the model
    to convert.
    """
    if model.functions:
        from onnx import inliner

        model = inliner.inline_local_functions(model)
    known = onnx2tf_op_types()
    if not known:  # onnx2tf missing: its own import error says so later
        return model
    missing = [n for n in _all_nodes(model.graph) if n.op_type not in known]
    if missing:
        node = missing[0]
        domain = node.domain if node.domain not in ("", "ai.onnx") else ""
        op = f"{domain}:{node.op_type}" if domain else node.op_type
        others = sorted({n.op_type for n in missing} - {node.op_type})
        also = f"; also {', '.join(others[:5])}" if others else ""
        where = f"custom domain {domain!r}" if domain else "standard ONNX"
        raise EdgeportError(
            f"node {node.name or node.output[0]!r} is {op} ({where}), which the TFLite converter "
            f"(onnx2tf) has no translation for ({len(missing)} such node(s){also})",
            "re-export that layer with standard ONNX ops (or replace it in the model), "
            "or export only the part of the model before it",
        )
    return model


def _dim(d: onnx.TensorShapeProto.Dimension) -> int | str:
    # Exporters write a dynamic dimension as a name, as nothing, or (Paddle) as -1 or 0.
    if d.HasField("dim_value") and d.dim_value > 0:
        return d.dim_value
    return d.dim_param or "?"


def input_shapes_of(model: onnx.ModelProto) -> dict[str, list[int | str]]:
    """Each graph input's shape: sizes, with a name or '?' for dynamic dimensions ([] for a scalar)."""
    shapes = {}
    initializers = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in initializers:
            continue
        shapes[inp.name] = [_dim(d) for d in inp.type.tensor_type.shape.dim]
    return shapes


def _rank_known(value: onnx.ValueInfoProto) -> bool:
    return value.type.tensor_type.HasField("shape")


# Input types a TFLite model can take (and edgeport can draw verification inputs for).
_NUMERIC_INPUTS = {
    onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8, onnx.TensorProto.UINT8,
    onnx.TensorProto.INT16, onnx.TensorProto.INT32, onnx.TensorProto.INT64, onnx.TensorProto.BOOL,
}  # fmt: skip


def _check_inputs(model: onnx.ModelProto, shapes: dict[str, list[int | str]]) -> None:
    """Refuse inputs no TFLite model can take, before any conversion work."""
    if not shapes:
        raise EdgeportError(
            "the model has no inputs (every value in it is a constant)",
            "export the model with the tensors it computes on as inputs",
        )
    types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    for name in shapes:
        elem = types[name]
        if elem in _NUMERIC_INPUTS:
            continue
        type_name = onnx.TensorProto.DataType.Name(elem).lower() if elem else "a sequence, map or optional"
        if elem == onnx.TensorProto.DOUBLE:
            fix = "export the model in float32 (model.float() before exporting)"
        elif elem == onnx.TensorProto.STRING:
            fix = "keep text processing outside the model and feed it numbers (e.g. token ids)"
        else:
            fix = "export the model with float32 or integer inputs"
        raise EdgeportError(f"input {name!r} is {type_name}, which TFLite has no kernels for", fix)


def fix_input_shapes(model: onnx.ModelProto, given: Sequence[Sequence[int]]) -> onnx.ModelProto:
    """Make every input shape static: from --input-shape, else a dynamic batch becomes 1.

    A shape [] is a scalar (rank-0) input, e.g. a sample rate.
    """
    shapes = input_shapes_of(model)
    _check_inputs(model, shapes)
    if given and len(given) != len(shapes):
        raise EdgeportError(
            f"the model has {len(shapes)} input(s) ({', '.join(shapes)}) "
            f"but {len(given)} --input-shape was given",
            "give one --input-shape per model input, in order",
        )
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph_inputs = {i.name: i for i in model.graph.input}
    for index, (name, dims) in enumerate(shapes.items()):
        known_rank = _rank_known(graph_inputs[name])
        if given:
            new = list(given[index])
            if known_rank and len(new) != len(dims):
                hint = (
                    "write --input-shape scalar" if not dims else f"give a shape with {len(dims)} dimensions"
                )
                raise EdgeportError(
                    f"input {name!r} has rank {len(dims)} ({dims}) but --input-shape has rank {len(new)}",
                    hint,
                )
            clash = known_rank and any(isinstance(a, int) and a != b for a, b in zip(dims, new, strict=True))
            if clash:
                raise EdgeportError(
                    f"--input-shape {new} contradicts the model's fixed shape {dims} for input {name!r}",
                    f"use {dims} or re-export the model with dynamic axes",
                )
        elif not known_rank:
            raise EdgeportError(
                f"input {name!r} has no shape in the model (not even its rank)",
                "give its shape with --input-shape, e.g. --input-shape 1,3,224,224 (or scalar)",
            )
        else:
            new = [d if isinstance(d, int) else None for d in dims]
            if new and new[0] is None:
                new[0] = 1  # a dynamic batch is the one dynamic dimension a device never has
            if any(d is None for d in new):
                # The model's own sizes, with a placeholder naming each size still to choose.
                example = ",".join(str(d) if d is not None else f"<{dims[i]}>" for i, d in enumerate(new))
                raise EdgeportError(
                    f"input {name!r} has dynamic dimensions {dims}",
                    f"give its shape with --input-shape {example}, a number for each <...>",
                )
        tensor_type = graph_inputs[name].type.tensor_type
        tensor_type.ClearField("shape")
        tensor_type.shape.SetInParent()  # present and empty is rank 0; absent would be unknown rank
        for d in new:
            tensor_type.shape.dim.add().dim_value = int(d)
    # Outputs and value_info with stale symbolic shapes would confuse onnx2tf: infer them again.
    # Their dims are forgotten but the rank kept: an output ONNX inference cannot reach (an einops-style
    # unflatten's Shape/Mod chain) without a shape field makes onnxsim refuse the whole model.
    for out in model.graph.output:
        for dim in out.type.tensor_type.shape.dim:
            dim.Clear()
    del model.graph.value_info[:]
    return shape_inference.infer_shapes(model, data_prop=True)


def simplify(model: onnx.ModelProto, fuse_bn: bool = True) -> tuple[onnx.ModelProto, bool]:
    """onnxsim constant folding and clean-up; the unsimplified model is kept if onnxsim fails."""
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model, check_n=0, skip_fuse_bn=not fuse_bn)
    except Exception:
        # onnx-optimizer's passes assert on some exports (a hand-written attention's view/transpose
        # chain); constant folding alone still gives the static shapes the rewrites need.
        try:
            simplified, ok = onnxsim.simplify(model, check_n=0, perform_optimization=False)
        except Exception:
            return model, False
    return (simplified, True) if ok else (model, False)


def channels_first_inputs(model: onnx.ModelProto) -> list[str]:
    """Inputs of rank 3-5 that reach a spatial op, possibly through elementwise pre-processing."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    found = []
    for name, dims in input_shapes_of(model).items():
        if not 3 <= len(dims) <= 5:
            continue
        frontier, seen = [name], set()
        while frontier:
            tensor = frontier.pop()
            for node in consumers.get(tensor, []):
                if node.op_type in SPATIAL_OPS:
                    found.append(name)
                    frontier = []
                    break
                if node.op_type in _PASS_THROUGH and node.output[0] not in seen:
                    seen.add(node.output[0])
                    frontier.append(node.output[0])
    return found


# TensorFlow accepts these characters in op and scope names; exporters also write '@', ':', ' ', ...
_TF_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.\-/>]")


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            for sub in [attr.g] if attr.HasField("g") else list(attr.graphs):
                yield from _graphs(sub)


def tf_safe_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose node names, and tensor names other than the graph's inputs and outputs, are valid
    TensorFlow names (e.g. Paddle's `Softmax@0` becomes `Softmax_0`).

    Only for the copy onnx2tf reads: the pipeline's own model keeps the original names, so that
    messages and the manifest name nodes as the user's model does. Graph inputs and outputs keep
    their names (the caller maps those to signature keys).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graphs = list(_graphs(model.graph))
    io = {v.name for v in list(model.graph.input) + list(model.graph.output)}
    taken = set(io)
    for graph in graphs:
        for node in graph.node:
            taken.update([node.name, *node.input, *node.output])
        taken.update(i.name for i in graph.initializer)

    def safe(name: str) -> str:
        fixed = _TF_NAME_CHARS.sub("_", name)
        if fixed == name:
            return name
        candidate, n = fixed, 1
        while candidate in taken:
            candidate, n = f"{fixed}_{n}", n + 1
        taken.add(candidate)
        return candidate

    tensors: dict[str, str] = {}
    for graph in graphs:
        for name in [t for node in graph.node for t in [*node.input, *node.output]] + [
            i.name for i in graph.initializer
        ]:
            if name and name not in io and name not in tensors:
                tensors[name] = safe(name)
    for graph in graphs:
        for node in graph.node:
            node.name = safe(node.name) if node.name else node.name
            node.input[:] = [tensors.get(n, n) for n in node.input]
            node.output[:] = [tensors.get(n, n) for n in node.output]
        for value in [*graph.initializer, *graph.value_info]:
            value.name = tensors.get(value.name, value.name)
        if graph is not model.graph:
            for value in [*graph.input, *graph.output]:
                value.name = tensors.get(value.name, value.name)
    return model


def rename_io(model: onnx.ModelProto, mapping: dict[str, str]) -> onnx.ModelProto:
    """Rename graph inputs/outputs (e.g. to --input-name) everywhere they are referenced."""
    if not mapping:
        return model
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        value.name = mapping.get(value.name, value.name)
    # If / Loop / Scan bodies read outer tensors by name: a graph input renamed only at the top level
    # left them pointing at the old name (onnx2tf: "KeyError: 'x.1'" on a TorchScript-exported If).
    for graph in _graphs(model.graph):
        for node in graph.node:
            node.input[:] = [mapping.get(n, n) for n in node.input]
            node.output[:] = [mapping.get(n, n) for n in node.output]
    return model
