"""Small helpers over an ONNX graph for the quant/ passes: producers, consumers, constants, shapes.

`Graph` works on its own copy of the model. Constants are read from initializers or `Constant` nodes;
writes always go to initializers and never change a tensor that another node also reads (a shared
weight is cloned for the node being edited), so one pass cannot silently change an unrelated layer.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default=None):
    """Value of attribute `name` of `node` (ints, floats, strings, lists), or `default`."""
    for a in node.attribute:
        if a.name == name:
            value = helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def set_attr(node: onnx.NodeProto, name: str, value) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


class Graph:
    """A mutable view of `model.graph` with cached producer/consumer indexes."""

    def __init__(self, model: onnx.ModelProto, infer_shapes: bool = True) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self._names: set[str] = set()
        for i, node in enumerate(self.graph.node):
            if not node.name:
                node.name = f"{node.op_type}_{i}"
        self.shapes: dict[str, list[int | None]] = {}
        if infer_shapes:
            self._infer_shapes()
        self.reindex()

    # ----- indexes -------------------------------------------------------------------------------
    def reindex(self) -> None:
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumer_map: dict[str, list[onnx.NodeProto]] = {}
        self.inits: dict[str, onnx.TensorProto] = {t.name: t for t in self.graph.initializer}
        self.outputs = {o.name for o in self.graph.output}
        self.inputs = {i.name for i in self.graph.input if i.name not in self.inits}
        self._names = set(self.inits) | {i.name for i in self.graph.input}
        for node in self.graph.node:
            self._names.add(node.name)
            for out in node.output:
                if out:
                    self.producers[out] = node
                    self._names.add(out)
            for inp in node.input:
                if inp:
                    self.consumer_map.setdefault(inp, [])
                    if not any(c is node for c in self.consumer_map[inp]):
                        self.consumer_map[inp].append(node)

    def _infer_shapes(self) -> None:
        try:
            inferred = onnx.shape_inference.infer_shapes(self.model)
        except Exception:  # shapes are an optimisation aid; rules that need them just decline
            inferred = self.model
        for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
            tt = vi.type.tensor_type
            if tt.HasField("shape"):
                self.shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim
                ]
        for t in self.graph.initializer:
            self.shapes[t.name] = list(t.dims)

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self.producers.get(name)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return list(self.consumer_map.get(name, []))

    def shape(self, name: str) -> list[int | None] | None:
        return self.shapes.get(name)

    def rank(self, name: str) -> int | None:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def static_shape(self, name: str) -> list[int] | None:
        shape = self.shapes.get(name)
        if shape is None or any(d is None or d <= 0 for d in shape):
            return None
        return [int(d) for d in shape]

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    # ----- constants -----------------------------------------------------------------------------
    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer, Constant node output, or an Identity of one),
        else None. torch's exporter shares identical initializers through Identity nodes: an untrained
        model's BatchNorms (all weight 1, bias 0, mean 0, var 1) read their parameters that way."""
        if not name:
            return None
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        node = self.producers.get(name)
        if node is not None and node.op_type == "Constant":
            value = attr(node, "value")
            if value is not None:
                return numpy_helper.to_array(value)
        if node is not None and node.op_type == "Identity":
            return self.const(node.input[0])
        return None

    def input_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.const(node.input[index]) if index < len(node.input) else None

    def set_input_const(self, node: onnx.NodeProto, index: int, value: np.ndarray, hint: str = "") -> None:
        """Make input `index` of `node` the constant `value`, adding the input if absent.

        The initializer is rewritten in place only when this node is its sole reader; otherwise a new
        initializer is created so other readers keep the old value.
        """
        name = node.input[index] if index < len(node.input) else ""
        readers = self.consumer_map.get(name, []) if name else []
        sole = (
            name in self.inits
            and len(readers) == 1
            and list(readers[0].input).count(name) == 1
            and name not in self.outputs
            and name not in {i.name for i in self.graph.input}
        )
        if sole:
            self.inits[name].CopyFrom(numpy_helper.from_array(value, name))
            return
        new_name = self.fresh(hint or f"{node.name}_in{index}")
        self.graph.initializer.append(numpy_helper.from_array(value, new_name))
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new_name
        self.shapes[new_name] = list(value.shape)
        self.reindex()

    def add_initializer(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.graph.initializer.append(numpy_helper.from_array(value, name))
        self.shapes[name] = list(value.shape)
        self.inits[name] = self.graph.initializer[-1]
        return name

    # ----- structure -----------------------------------------------------------------------------
    def remove_node(self, node: onnx.NodeProto) -> None:
        for i, n in enumerate(self.graph.node):
            if n is node:
                del self.graph.node[i]
                break
        self.reindex()

    def replace_uses(self, old: str, new: str) -> None:
        """Every node input reading `old` reads `new` instead (graph outputs untouched)."""
        for node in self.graph.node:
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        self.reindex()

    def rename_tensor(self, old: str, new: str) -> None:
        """Rename tensor `old` to `new` everywhere (producer output, readers, value_info)."""
        for node in self.graph.node:
            for i, name in enumerate(node.output):
                if name == old:
                    node.output[i] = new
            for i, name in enumerate(node.input):
                if name == old:
                    node.input[i] = new
        for vi in self.graph.value_info:
            if vi.name == old:
                vi.name = new
        if old in self.shapes:
            self.shapes[new] = self.shapes[old]
        self.reindex()

    def bypass(self, first: onnx.NodeProto, last: onnx.NodeProto, source: str) -> None:
        """Remove the node chain ending in `last` (whose output becomes `source`'s value).

        If the chain's output is a graph output, `source` is renamed to it instead, so the model's
        interface never changes.
        """
        out = last.output[0]
        for node in {id(first): first, id(last): last}.values():
            self.remove_node(node)
        if out in self.outputs and source not in self.inputs and source not in self.outputs:
            self.rename_tensor(source, out)
        elif out in self.outputs:
            self.graph.node.append(helper.make_node("Identity", [source], [out], name=self.fresh("Identity")))
            self.reindex()
        else:
            self.replace_uses(out, source)

    def finish(self) -> onnx.ModelProto:
        """Drop unused initializers and stale value_info, sort topologically, return the model."""
        toposort(self.graph)
        used = {i for n in self.graph.node for i in n.input} | self.outputs
        keep = [t for t in self.graph.initializer if t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(keep)
        produced = {o for n in self.graph.node for o in n.output} | {i.name for i in self.graph.input}
        vis = [vi for vi in self.graph.value_info if vi.name in produced]
        del self.graph.value_info[:]
        self.graph.value_info.extend(vis)
        self.reindex()
        return self.model


def toposort(graph: onnx.GraphProto) -> None:
    """Order `graph.node` so every node comes after the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle or a dangling input: keep the original order for the rest
            ordered.extend(rest)
            break
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def count_ops(model: onnx.ModelProto, ops: Iterable[str] | None = None) -> dict[str, int]:
    """Histogram of node op types (restricted to `ops` if given)."""
    counts: dict[str, int] = {}
    for node in model.graph.node:
        if ops is None or node.op_type in ops:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))
