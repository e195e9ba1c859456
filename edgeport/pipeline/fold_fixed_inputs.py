"""Inputs fixed with --input-value become constants, and If nodes with a constant condition are inlined.

A model that takes its sample rate as an input (silero-vad) branches on it with If nodes, and onnx2tf
cannot convert If with an LSTM inside a branch. Once the value is fixed, the condition is known before
conversion: the taken branch replaces the If and the input leaves the graph, so the .tflite has only the
inputs that vary. The convert stage marks a fixed input with an initializer of its own name (ONNX's
"input with a default value") and names it in the model's metadata (FIXED_KEY: an old export's weights
are inputs with initializers too, and are not this pass's business); this pass folds the inputs named.
`--skip-pass fold_fixed_inputs` keeps them model inputs (the stage then marks nothing). A condition
that depends on an input's values, not only on static shapes and constants, leaves its If alone, and
the report says why. When a condition reads a shape known only after constant folding, this pass runs
onnxsim itself (`--skip-pass onnxsim` skips the onnxsim pass, not this one's use of it).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edgeport.converters import onnx_prepare
from edgeport.errors import exception_line
from edgeport.onnx_graph import OnnxGraph, attr
from edgeport.pipeline.passes import PassReport

NAME = "fold_fixed_inputs"
SHAPE_UNKNOWN = "which is not static"
FIXED_KEY = "edgeport.fixed_inputs"  # metadata: the names with_defaults marked, a JSON list
ABOUT = "inputs fixed with --input-value become constants; If nodes with a constant condition are inlined"


class FoldFixedReport(PassReport):
    name: str = NAME
    fixed: dict[str, str]  # input name -> its value as text
    # If nodes gone from the model: inlined here or folded by onnxsim once their condition was
    # constant, with the Ifs nested in their branches.
    ifs_removed: int = 0
    ifs_left: list[dict[str, str]] = []  # {"node": ..., "why": ...}

    def headline(self) -> str:
        parts = [f"input {name} fixed to {value} and folded" for name, value in self.fixed.items()]
        if self.ifs_removed:
            parts.append(f"{self.ifs_removed} constant If folded")
        return ", ".join(parts)


def with_defaults(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """`model` with an initializer of each fixed input's name and value (the mark this pass folds)."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    inputs = {i.name for i in model_copy.graph.input} - {t.name for t in model_copy.graph.initializer}
    marked = [name for name in values if name in inputs]
    for name in marked:
        model_copy.graph.initializer.append(numpy_helper.from_array(np.asarray(values[name]), name))
    if marked:
        helper.set_model_props(model_copy, {**_props(model_copy), FIXED_KEY: json.dumps(marked)})
    return model_copy


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def value_text(value: np.ndarray) -> str:
    """`16000`, `0.5` for a value all of one number, else `[1, 2, 3]` or its shape when long."""
    flat = value.reshape(-1)
    if flat.size and np.all(flat == flat[0]):
        return f"{flat[0].item():g}" if value.dtype.kind == "f" else str(flat[0].item())
    if flat.size <= 8:
        return str(flat.tolist())
    return f"a {list(value.shape)} {value.dtype} tensor"


def fold_fixed_inputs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, FoldFixedReport]:
    view = OnnxGraph(model)
    graph = view.graph
    props = _props(view.model)
    marked = set(json.loads(props.pop(FIXED_KEY, "[]")))
    initializers = {t.name: t for t in graph.initializer}
    fixed = {
        i.name: value_text(numpy_helper.to_array(initializers[i.name]))
        for i in graph.input
        if i.name in initializers and i.name in marked
    }
    if marked:
        del view.model.metadata_props[:]
        helper.set_model_props(view.model, props)
        view.changed += 1
    if fixed:
        kept = [i for i in graph.input if i.name not in fixed]
        del graph.input[:]
        graph.input.extend(kept)
        view.changed += 1
        view.reindex()
    before = count_ifs(model.graph)
    folded, left = inline_constant_ifs(view.finish())
    report = FoldFixedReport(fixed=fixed, ifs_removed=before - count_ifs(folded.graph), ifs_left=left)
    # Nothing folded: the model goes on as it came (not as the onnxsim run tried here left it).
    return (folded if fixed or marked or report.ifs_removed else model), report


def count_ifs(graph: onnx.GraphProto) -> int:
    """If nodes in `graph` and in every subgraph."""
    return sum((n.op_type == "If") + sum(count_ifs(b) for b in _bodies(n)) for n in graph.node)


def inline_constant_ifs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[dict[str, str]]]:
    """Replace each top-level If whose condition is constant by its taken branch, until none is left
    (a branch may hold Ifs of its own): the model and the Ifs left, each with the reason.

    A condition often reads the shape of a tensor that shape inference leaves unknown until constants
    are folded (a Pad whose pads are computed from shapes): then onnxsim folds them and the Ifs are
    tried again, as long as that inlines more."""
    previous = None
    while True:
        view = OnnxGraph(model)
        left = _inline_decidable(view)
        model, ifs = view.finish(), count_ifs(view.graph)
        if ifs == previous or not any(SHAPE_UNKNOWN in entry["why"] for entry in left):
            return model, left
        model, folded = onnx_prepare.simplify(model, fuse_bn=False)
        if not folded:
            return model, left
        previous = ifs


def _inline_decidable(view: OnnxGraph) -> list[dict[str, str]]:
    """Inline every If whose condition is constant now; the Ifs left, each with the reason."""
    while True:
        left: list[dict[str, str]] = []
        for node in view.graph.node:
            if node.op_type != "If" or node.domain not in ("", "ai.onnx"):
                continue
            value, why = constant_value(view, node.input[0])
            if value is not None and value.size != 1:
                value, why = None, f"its condition has {value.size} values"
            if value is None:
                left.append({"node": node.name or node.output[0], "why": why})
                continue
            taken = "then_branch" if bool(value.reshape(-1)[0]) else "else_branch"
            view.replace([node], inline_branch(view, node, attr(node, taken)))
            break
        else:
            return left


def constant_value(view: OnnxGraph, name: str) -> tuple[np.ndarray | None, str]:
    """The value of tensor `name` when it follows from constants and static shapes alone (computed with
    onnx's reference evaluator), else (None, why not)."""
    known: dict[str, np.ndarray] = {}
    cone: list[onnx.NodeProto] = []
    pending, seen = [name], set()
    while pending:
        tensor = pending.pop()
        if not tensor or tensor in seen:
            continue
        seen.add(tensor)
        value = view.const(tensor)
        if value is not None:
            known[tensor] = value
            continue
        if view.is_graph_input(tensor):
            return None, f"its condition depends on the values of input {tensor!r}"
        node = view.producer(tensor)
        if node is None:
            return None, f"its condition reads {tensor!r}, which no node of the graph computes"
        if node.op_type in ("Shape", "Size"):
            shape = view.static_shape(node.input[0])
            if shape is None:
                return None, f"its condition reads the shape of {node.input[0]!r}, {SHAPE_UNKNOWN}"
            known[tensor] = _shape_value(node, shape)
            continue
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None, f"its condition is computed by {node.op_type} {node.name!r}, which holds a subgraph"
        cone.append(node)
        pending.extend(node.input)
    if name in known:
        return known[name], ""
    try:
        return _evaluate(view.model, cone, known, name), ""
    except Exception as exc:  # noqa: BLE001 - an op the evaluator lacks leaves the If as it is
        return None, f"its condition could not be evaluated ({exception_line(exc)})"


def _shape_value(node: onnx.NodeProto, shape: list[int]) -> np.ndarray:
    if node.op_type == "Size":
        return np.array(int(np.prod(shape)), dtype=np.int64)
    start, end = attr(node, "start", 0), attr(node, "end", None)
    return np.array(shape[start:end], dtype=np.int64)


def _evaluate(
    model: onnx.ModelProto, cone: list[onnx.NodeProto], known: dict[str, np.ndarray], name: str
) -> np.ndarray:
    from onnx.reference import ReferenceEvaluator

    position = {id(n): i for i, n in enumerate(model.graph.node)}
    nodes = sorted(cone, key=lambda n: position[id(n)])
    inputs = [
        helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for k, v in known.items()
    ]
    output = helper.make_tensor_value_info(name, onnx.TensorProto.UNDEFINED, None)
    graph = helper.make_graph(nodes, "condition", inputs, [output])
    sub = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    (value,) = ReferenceEvaluator(sub).run(None, known)
    return np.asarray(value)


def inline_branch(view: OnnxGraph, node: onnx.NodeProto, branch: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes that compute `node`'s outputs from `branch` in the outer graph: the branch's
    initializers are added to the graph; a name it defines that the rest of the model also uses gets a
    fresh one (inside nested subgraphs too); each branch output its nodes compute takes the If's
    output name, and any other (an outer tensor, a branch initializer, a repeated output) reaches it
    through an Identity."""
    outside = _names_outside(view.graph, node)
    defined = [o for n in branch.node for o in n.output if o] + [t.name for t in branch.initializer]
    computed = {o for n in branch.node for o in n.output if o}
    rename: dict[str, str] = {}
    identities = []
    for value, out in zip(branch.output, node.output, strict=True):
        if value.name in computed and value.name not in rename:
            rename[value.name] = out
        elif out:
            identities.append((value.name, out))
    for name in defined:
        if name not in rename and name in outside:
            while (fresh := view.fresh(name)) in outside:
                pass
            rename[name] = fresh
    for tensor in branch.initializer:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = rename.get(tensor.name, tensor.name)
        view.graph.initializer.append(copy)
    described = {v.name for v in [*view.graph.value_info, *view.graph.output]}
    for info in branch.value_info:
        if rename.get(info.name, info.name) not in described:
            copy_info = view.graph.value_info.add()
            copy_info.CopyFrom(info)
            copy_info.name = rename.get(info.name, info.name)
    nodes = []
    for branch_node in branch.node:
        copy_node = onnx.NodeProto()
        copy_node.CopyFrom(branch_node)
        _apply(copy_node, rename)
        nodes.append(copy_node)
    hint = node.name or "if"
    nodes += [
        helper.make_node("Identity", [rename.get(src, src)], [out], name=view.fresh(f"{hint}_out"))
        for src, out in identities
    ]
    return nodes


def _apply(node: onnx.NodeProto, rename: Mapping[str, str]) -> None:
    """Rename the inputs and outputs of `node` and of the nodes in its subgraphs (outer-scope reads)."""
    node.input[:] = [rename.get(i, i) for i in node.input]
    node.output[:] = [rename.get(o, o) for o in node.output]
    for body in _bodies(node):
        for inner in body.node:
            _apply(inner, rename)
        for out in body.output:
            out.name = rename.get(out.name, out.name)


def _bodies(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for a in node.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            yield a.g
        elif a.type == onnx.AttributeProto.GRAPHS:
            yield from a.graphs


def _names_outside(graph: onnx.GraphProto, skip: onnx.NodeProto) -> set[str]:
    """Every tensor name in the model except those only inside node `skip`."""
    names = {v.name for v in [*graph.input, *graph.output, *graph.value_info]}
    names |= {t.name for t in graph.initializer}
    for node in graph.node:
        if node is skip:
            names |= set(node.input) | set(node.output)
            continue
        names |= set(node.input) | set(node.output)
        for body in _bodies(node):
            names |= _names_outside(body, skip)
    return names
