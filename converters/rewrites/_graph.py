"""Small helpers the rewrites share: constants, static shapes, consumers, and splicing nodes in and out.

A rewrite copies the model once into a `GraphView`, edits it, and calls `finish()`; the caller's
ModelProto is never touched, so every pass is a pure function `ModelProto -> ModelProto`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


class GraphView:
    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        self._names = {n for node in self.graph.node for n in (*node.input, *node.output, node.name)}
        self._names |= {i.name for i in self.graph.initializer}
        self._names |= {i.name for i in self.graph.input}
        self._counter = itertools.count()
        self.changed = 0
        self._shapes: dict[str, list[int]] | None = None
        self._types: dict[str, int] = {}

    # --- lookup -------------------------------------------------------------------------------------

    def const(self, name: str) -> np.ndarray | None:
        """The value of `name` when it is an initializer or a Constant node's output, else None."""
        if not name:
            return None
        for init in self.graph.initializer:
            if init.name == name:
                return numpy_helper.to_array(init)
        for node in self.graph.node:
            if node.op_type == "Constant" and node.output[0] == name:
                for attr in node.attribute:
                    if attr.name == "value":
                        return numpy_helper.to_array(attr.t)
                    if attr.name == "value_float":
                        return np.array(attr.f, dtype=np.float32)
                    if attr.name == "value_floats":
                        return np.array(list(attr.floats), dtype=np.float32)
                    if attr.name == "value_int":
                        return np.array(attr.i, dtype=np.int64)
                    if attr.name == "value_ints":
                        return np.array(list(attr.ints), dtype=np.int64)
        return None

    def shape(self, name: str) -> list[int] | None:
        """Static shape of a tensor (from shape inference), or None when any dimension is unknown."""
        if self._shapes is None:
            self._shapes = {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
            except Exception:  # an op without a schema: fall back to what the file declares
                inferred = self.model
            g = inferred.graph
            for vi in itertools.chain(g.input, g.value_info, g.output):
                self._types[vi.name] = vi.type.tensor_type.elem_type
                dims = vi.type.tensor_type.shape.dim
                if vi.type.tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in dims):
                    self._shapes[vi.name] = [d.dim_value for d in dims]
            for init in self.graph.initializer:
                self._shapes[init.name] = list(init.dims)
                self._types[init.name] = init.data_type
        if name in self._shapes:
            return list(self._shapes[name])
        value = self.const(name)
        return list(value.shape) if value is not None else None

    def is_float32(self, name: str) -> bool:
        self.shape(name)  # fills the type table
        return self._types.get(name) == TensorProto.FLOAT

    def producer(self, name: str) -> onnx.NodeProto | None:
        for node in self.graph.node:
            if name in node.output:
                return node
        return None

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        return [node for node in self.graph.node if name in node.input]

    def is_graph_output(self, name: str) -> bool:
        return any(o.name == name for o in self.graph.output)

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single node reading `name` if it is an `op_type` and `name` is not a graph output."""
        users = self.consumers(name)
        if len(users) == 1 and users[0].op_type == op_type and not self.is_graph_output(name):
            return users[0]
        return None

    # --- editing ------------------------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        while True:
            name = f"{hint}__ep{next(self._counter)}"
            if name not in self._names:
                self._names.add(name)
                return name

    def add_const(self, value: np.ndarray, hint: str) -> str:
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def rewrite_each(self, match: Callable[[GraphView, onnx.NodeProto], bool]) -> None:
        """Call `match(view, node)` on every node; it returns True after replacing something.

        The scan restarts after each replacement because `replace` rebuilds the node list (protobuf
        copies the messages, so earlier references go stale). Every rewrite removes the pattern it
        matched, so this terminates.
        """
        while any(match(self, node) for node in list(self.graph.node)):
            pass

    def replace(self, old: Sequence[onnx.NodeProto], new: Iterable[onnx.NodeProto], at: str = "last") -> None:
        """Swap `old` for `new`, placed where the last of `old` was (right when the new nodes read
        only what the pattern read and feed only what the pattern fed), or with at="first" where
        the first was (right when they read only what the first old node read, and old nodes'
        outputs may be used between them)."""
        old_ids = {id(n) for n in old}
        nodes = list(self.graph.node)
        positions = [i for i, n in enumerate(nodes) if id(n) in old_ids]
        pos = positions[-1] if at == "last" else positions[0]
        kept_before = [n for n in nodes[:pos] if id(n) not in old_ids]
        kept_after = [n for n in nodes[pos + 1 :] if id(n) not in old_ids]
        del self.graph.node[:]
        self.graph.node.extend([*kept_before, *new, *kept_after])
        self.changed += 1
        self._shapes = None

    def finish(self) -> onnx.ModelProto:
        """Drop nodes, initializers and stale value_info that nothing reads any more (ONNX ops have no
        side effects, so a node none of whose outputs is used is dead)."""
        if not self.changed:
            return self.model
        while True:
            used = {i for node in self.graph.node for i in node.input} | {o.name for o in self.graph.output}
            alive = [n for n in self.graph.node if any(o in used for o in n.output)]
            if len(alive) == len(self.graph.node):
                break
            del self.graph.node[:]
            self.graph.node.extend(alive)
        used = {i for node in self.graph.node for i in node.input} | {o.name for o in self.graph.output}
        inits = [i for i in self.graph.initializer if i.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(inits)
        produced = {o for node in self.graph.node for o in node.output}
        infos = [v for v in self.graph.value_info if v.name in produced]
        del self.graph.value_info[:]
        self.graph.value_info.extend(infos)
        return self.model

    def replacement_agrees(
        self,
        old: Sequence[onnx.NodeProto],
        new: Sequence[onnx.NodeProto],
        new_inits: Sequence[onnx.TensorProto],
        outputs: Sequence[str],
        tolerance: float,
        samples: int = 2,
    ) -> bool:
        """Run region `old` and its replacement `new` with onnxruntime on random values of every
        non-constant input the region reads; True when every output agrees within `tolerance`
        (relative to the output's largest magnitude). Rewrites that match loosely prove themselves here."""
        produced = {o for n in old for o in n.output}
        feed_names = sorted(
            {i for n in old for i in n.input if i and i not in produced and self.const(i) is None}
        )
        shapes = {}
        for name in feed_names:
            shape = self.shape(name)
            if shape is None or not self.is_float32(name):
                return False
            shapes[name] = shape

        def session(
            nodes: Sequence[onnx.NodeProto], own_inits: Sequence[onnx.TensorProto]
        ) -> ort.InferenceSession:
            # Graph constants the region reads (weights, initial states) come along as initializers.
            made = {o for n in nodes for o in n.output} | {i.name for i in own_inits} | set(shapes)
            reads = {i for n in nodes for i in n.input if i and i not in made}
            inits = [*own_inits, *(numpy_helper.from_array(self.const(i), i) for i in sorted(reads))]
            graph = helper.make_graph(
                list(nodes),
                "region",
                [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()],
                [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                inits,
            )
            m = helper.make_model(graph, opset_imports=list(self.model.opset_import))
            m.ir_version = 8
            options = ort.SessionOptions()
            options.log_severity_level = 3
            return ort.InferenceSession(m.SerializeToString(), options, providers=["CPUExecutionProvider"])

        rng = np.random.default_rng(0)
        try:
            before, after = session(old, []), session(new, new_inits)
            for _ in range(samples):
                feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
                ref, got = before.run(list(outputs), feeds), after.run(list(outputs), feeds)
                for a, b in zip(ref, got, strict=True):
                    if a.shape != b.shape or np.abs(a - b).max() > tolerance * max(np.abs(a).max(), 1e-6):
                        return False
        except Exception:  # a replacement onnxruntime cannot even run is not a replacement
            return False
        return True

    def use_opset(self, domain: str, version: int) -> None:
        if not any(o.domain == domain for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(domain, version))


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


def is_scalar(value: np.ndarray | None, expected: float, rtol: float = 1e-6) -> bool:
    return (
        value is not None
        and value.size == 1
        and bool(np.isclose(float(value.reshape(-1)[0]), expected, rtol))
    )
