"""A working copy of an ONNX model that graph passes look things up in and edit.

The onnx2tf rewrites (edgeport.converters.rewrites) and the data-free compression passes
(edgeport.quant) are pure functions `ModelProto -> ModelProto`: each copies the model once into an
`OnnxGraph`, edits the copy and calls `finish()`, so the caller's model is never touched. The class lives
in the spine package because both of those packages use it and neither may import the other.

Producers, consumers and constants are read from indexes that every editing method here keeps current;
code that edits `graph` directly calls `reindex()` afterwards. Writes of constant values go to
initializers and never change a tensor that another node also reads (a shared weight is cloned for the
node being edited), so one pass cannot silently change an unrelated layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, MutableSequence, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def attr(node: onnx.NodeProto, name: str, default: object = None) -> object:
    """Value of attribute `name` of `node` as onnx returns it (strings are bytes), or `default`."""
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def as_text(value: object) -> str:
    """An ONNX string attribute's value (bytes, as onnx returns it) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def text_attr(node: onnx.NodeProto, name: str, default: str = "") -> str:
    """String attribute `name` of `node` as str, or `default`."""
    value = attr(node, name)
    return default if value is None else as_text(value)


def set_attr(node: onnx.NodeProto, name: str, value: object) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(name, value))


class OnnxGraph:
    """A mutable copy of a model with producer / consumer / initializer indexes and lazy shapes."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = onnx.ModelProto()
        self.model.CopyFrom(model)
        self.graph = self.model.graph
        # Edits made through this class; `finish()` hands back an untouched copy when there were none,
        # which is how a rewrite that matched nothing leaves the model byte-for-byte equal.
        self.changed = 0
        # Every name the graph uses or `fresh` handed out. It only grows, so a name is never handed out
        # twice, even after the tensor or node that had it is gone.
        self._names: set[str] = set()
        self._next_suffix: dict[str, int] = {}
        # Shape inference runs on first use and again after `replace` (which adds tensors); edits that
        # keep every remaining tensor's shape (removing, bypassing, rewriting weights) keep the table.
        self._shapes: dict[str, list[int | None]] | None = None
        self._types: dict[str, int] = {}
        self.reindex()

    # --- indexes ------------------------------------------------------------------------------------

    def reindex(self) -> None:
        """Rebuild the indexes from `graph` (after nodes or initializers were edited directly)."""
        self._initializers = {t.name: t for t in self.graph.initializer}
        self._graph_outputs = {o.name for o in self.graph.output}
        self._graph_inputs = {i.name for i in self.graph.input if i.name not in self._initializers}
        self._producers: dict[str, onnx.NodeProto] = {}
        self._consumers: dict[str, list[onnx.NodeProto]] = {}
        self._names |= set(self._initializers) | self._graph_outputs | {i.name for i in self.graph.input}
        self._names |= {v.name for v in self.graph.value_info}
        for node in self.graph.node:
            self._names.add(node.name)
            for out in node.output:
                if out:
                    self._producers.setdefault(out, node)
                    self._names.add(out)
            for inp in node.input:
                if inp:
                    self._names.add(inp)
                    readers = self._consumers.setdefault(inp, [])
                    if not any(r is node for r in readers):
                        readers.append(node)

    def name_unnamed_nodes(self) -> None:
        """Name every nameless node `<op_type>_<position>`, for passes that report nodes by name."""
        for i, node in enumerate(self.graph.node):
            if not node.name:
                node.name = self.fresh(f"{node.op_type}_{i}")

    # --- lookups ------------------------------------------------------------------------------------

    def producer(self, name: str) -> onnx.NodeProto | None:
        return self._producers.get(name)

    def consumers(self, name: str) -> list[onnx.NodeProto]:
        """Nodes reading `name`, each once, in graph order."""
        return list(self._consumers.get(name, []))

    def only_consumer(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single node reading `name` if it is an `op_type` and `name` is not a graph output."""
        users = self.consumers(name)
        if len(users) == 1 and users[0].op_type == op_type and not self.is_graph_output(name):
            return users[0]
        return None

    def is_graph_output(self, name: str) -> bool:
        return name in self._graph_outputs

    def is_graph_input(self, name: str) -> bool:
        """True for a model input that is not an initializer (a value the caller feeds)."""
        return name in self._graph_inputs

    def is_initializer(self, name: str) -> bool:
        return name in self._initializers

    def const(self, name: str) -> np.ndarray | None:
        """The value of a constant tensor (initializer, Constant node output, or an Identity of one),
        else None. torch's exporter shares identical initializers through Identity nodes: an untrained
        model's BatchNorms (all weight 1, bias 0, mean 0, var 1) read their parameters that way."""
        if not name:
            return None
        if name in self._initializers:
            return numpy_helper.to_array(self._initializers[name])
        node = self._producers.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            return _constant_value(node)
        if node.op_type == "Identity":
            return self.const(node.input[0])
        return None

    def input_const(self, node: onnx.NodeProto, index: int) -> np.ndarray | None:
        return self.const(node.input[index]) if index < len(node.input) else None

    def shape(self, name: str) -> list[int | None] | None:
        """Shape of a tensor from shape inference (None for each unknown dimension), or None when even
        the rank is unknown."""
        shapes = self._shape_table()
        if name in shapes:
            return list(shapes[name])
        value = self.const(name)
        return list(value.shape) if value is not None else None

    def static_shape(self, name: str) -> list[int] | None:
        """Shape of a tensor when every dimension is known and positive, else None."""
        shape = self.shape(name)
        if shape is None or any(d is None or d <= 0 for d in shape):
            return None
        return [int(d) for d in shape]

    def rank(self, name: str) -> int | None:
        shape = self.shape(name)
        return None if shape is None else len(shape)

    def is_float32(self, name: str) -> bool:
        return self.elem_type(name) == TensorProto.FLOAT

    def elem_type(self, name: str) -> int | None:
        """The TensorProto element type of a tensor, from shape inference (None when unknown)."""
        self._shape_table()  # fills the type table
        return self._types.get(name)

    def _shape_table(self) -> dict[str, list[int | None]]:
        if self._shapes is None:
            self._shapes, self._types = {}, {}
            try:
                inferred = onnx.shape_inference.infer_shapes(self.model, strict_mode=False)
            except Exception:  # an op without a schema: fall back to what the file declares
                inferred = self.model
            g = inferred.graph
            for vi in itertools.chain(g.input, g.value_info, g.output):
                tensor_type = vi.type.tensor_type
                self._types[vi.name] = tensor_type.elem_type
                if tensor_type.HasField("shape"):
                    self._shapes[vi.name] = [
                        d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
                    ]
            for t in self.graph.initializer:
                self._shapes[t.name] = list(t.dims)
                self._types[t.name] = t.data_type
        return self._shapes

    # --- editing ------------------------------------------------------------------------------------

    def fresh(self, hint: str) -> str:
        """A name nothing in the graph uses: `hint` itself when free, else `hint_1`, `hint_2`, ..."""
        # Names only ever get taken, so the search for a hint resumes where its last one succeeded.
        i = self._next_suffix.get(hint, 0)
        while (name := hint if i == 0 else f"{hint}_{i}") in self._names:
            i += 1
        self._next_suffix[hint] = i + 1
        self._names.add(name)
        return name

    def add_initializer(self, value: np.ndarray, hint: str) -> str:
        """Add `value` as a new initializer named after `hint`; returns its name."""
        name = self.fresh(hint)
        self.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        self._record_initializer(self.graph.initializer[-1])
        self.changed += 1
        return name

    def set_input_const(self, node: onnx.NodeProto, index: int, value: np.ndarray, hint: str = "") -> None:
        """Make input `index` of `node` the constant `value`, adding the input if absent.

        The initializer is rewritten in place only when this node is its sole reader; otherwise a new
        initializer is created so other readers keep the old value.
        """
        name = node.input[index] if index < len(node.input) else ""
        readers = self._consumers.get(name, []) if name else []
        sole = (
            name in self._initializers
            and len(readers) == 1
            and list(readers[0].input).count(name) == 1
            and name not in self._graph_outputs
            and name not in {i.name for i in self.graph.input}
        )
        self.changed += 1
        if sole:
            self._initializers[name].CopyFrom(numpy_helper.from_array(value, name))
            return
        new_name = self.fresh(hint or f"{node.name}_in{index}")
        self.graph.initializer.append(numpy_helper.from_array(value, new_name))
        self._record_initializer(self.graph.initializer[-1])
        while len(node.input) <= index:
            node.input.append("")
        node.input[index] = new_name
        self.reindex()

    def _record_initializer(self, tensor: onnx.TensorProto) -> None:
        self._initializers[tensor.name] = tensor
        if self._shapes is not None:
            self._shapes[tensor.name] = list(tensor.dims)
            self._types[tensor.name] = tensor.data_type

    def replace(self, old: Sequence[onnx.NodeProto], new: Iterable[onnx.NodeProto], at: str = "last") -> None:
        """Swap `old` for `new`, placed where the last of `old` was (right when the new nodes read
        only what the pattern read and feed only what the pattern fed), or with at="first" where
        the first was (right when they read only what the first old node read, and old nodes'
        outputs may be used between them). Protobuf copies the new nodes in: references to any node
        of the graph taken before the call are stale after it."""
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
        self.reindex()

    def rewrite_each(self, match: Callable[[OnnxGraph, onnx.NodeProto], bool]) -> None:
        """Call `match(graph, node)` on every node; it returns True after replacing something.

        The scan restarts after each replacement because `replace` rebuilds the node list (earlier
        references go stale). Every rewrite removes the pattern it matched, so this terminates.
        """
        while any(match(self, node) for node in list(self.graph.node)):
            pass

    def remove_node(self, node: onnx.NodeProto) -> None:
        for i, n in enumerate(self.graph.node):
            if n is node:
                del self.graph.node[i]
                break
        self.changed += 1
        self.reindex()

    def replace_uses(self, old: str, new: str) -> None:
        """Every node input reading `old` reads `new` instead (graph outputs untouched)."""
        for node in self.graph.node:
            _rename(node.input, old, new)
        self.changed += 1
        self.reindex()

    def rename_tensor(self, old: str, new: str) -> None:
        """Rename tensor `old` to `new` everywhere (producer output, readers, value_info)."""
        for node in self.graph.node:
            _rename(node.output, old, new)
            _rename(node.input, old, new)
        for vi in self.graph.value_info:
            if vi.name == old:
                vi.name = new
        if self._shapes is not None and old in self._shapes:
            self._shapes[new] = self._shapes[old]
        self.changed += 1
        self.reindex()

    def bypass(self, first: onnx.NodeProto, last: onnx.NodeProto, source: str) -> None:
        """Remove a pattern of one or two nodes, `first` and `last` (which may be the same node); what
        read the output of `last` reads `source` instead.

        If the chain's output is a graph output, `source` is renamed to it instead, so the model's
        interface never changes.
        """
        out = last.output[0]
        for node in {id(first): first, id(last): last}.values():
            self.remove_node(node)
        if (
            out in self._graph_outputs
            and source not in self._graph_inputs
            and source not in self._graph_outputs
        ):
            self.rename_tensor(source, out)
        elif out in self._graph_outputs:
            self.graph.node.append(helper.make_node("Identity", [source], [out], name=self.fresh("Identity")))
            self.reindex()
        else:
            self.replace_uses(out, source)

    def use_opset(self, domain: str, version: int) -> None:
        if not any(o.domain == domain for o in self.model.opset_import):
            self.model.opset_import.append(helper.make_opsetid(domain, version))

    def finish(self) -> onnx.ModelProto:
        """The edited model: with no edits, the untouched copy; else without dead nodes (ONNX ops have
        no side effects, so a node none of whose outputs is read is dead), sorted topologically, and
        without initializers and value_info that nothing reads or produces any more."""
        if not self.changed:
            return self.model
        graph = self.graph
        while True:
            used = {i for node in graph.node for i in _reads(node)} | self._graph_outputs
            alive = [n for n in graph.node if any(o in used for o in n.output)]
            if len(alive) == len(graph.node):
                break
            del graph.node[:]
            graph.node.extend(alive)
        _toposort(graph)
        inits = [t for t in graph.initializer if t.name in used]
        del graph.initializer[:]
        graph.initializer.extend(inits)
        produced = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
        infos = [v for v in graph.value_info if v.name in produced]
        del graph.value_info[:]
        graph.value_info.extend(infos)
        self.reindex()
        return self.model


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """The value of a Constant node, whichever attribute holds it (None for sparse and string ones)."""
    for a in node.attribute:
        if a.name == "value":
            return numpy_helper.to_array(a.t)
        if a.name == "value_float":
            return np.array(a.f, dtype=np.float32)
        if a.name == "value_floats":
            return np.array(list(a.floats), dtype=np.float32)
        if a.name == "value_int":
            return np.array(a.i, dtype=np.int64)
        if a.name == "value_ints":
            return np.array(list(a.ints), dtype=np.int64)
    return None


def opset_version(model: onnx.ModelProto, default: int = 0) -> int:
    """The model's default-domain opset, `default` when it imports none."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default)


def upstream_nodes(
    tensor: str,
    producer: Mapping[str, int],
    nodes: Sequence[onnx.NodeProto],
    stop: Callable[[str], bool],
) -> set[int] | None:
    """Indices in `nodes` of every node `tensor` depends on, walked back through producers until a
    tensor `stop` accepts (or an omitted input); None when a tensor nothing produces (a graph input) is
    reached first."""
    found: set[int] = set()
    stack = [tensor]
    while stack:
        name = stack.pop()
        if not name or stop(name):
            continue
        index = producer.get(name)
        if index is None:
            return None
        if index not in found:
            found.add(index)
            stack.extend(nodes[index].input)
    return found


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """The names the graphs in `node`'s attributes (If branches, Loop and Scan bodies) read from outside
    themselves, at any depth: inputs of `node` as much as its listed ones."""
    names: set[str] = set()
    for a in node.attribute:
        for g in [*([a.g] if a.HasField("g") else []), *a.graphs]:
            defined = {i.name for i in g.input} | {t.name for t in g.initializer}
            defined |= {o for n in g.node for o in n.output}
            read = {o.name for o in g.output} | {i for n in g.node for i in [*n.input, *outer_reads(n)]}
            names |= read - defined - {""}
    return names


def _reads(node: onnx.NodeProto) -> set[str]:
    """Names `node` reads: its inputs, and what the bodies of If / Loop / Scan nodes read from outside
    (counted so that dead-node and initializer pruning never drop a tensor only a body reads)."""
    return {i for i in node.input if i} | outer_reads(node)


def _toposort(graph: onnx.GraphProto) -> None:
    """Order `graph.node` so every node comes after the producers of what it reads (stable)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    produced = {o for n in graph.node for o in n.output}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            # A body may read names of its own; only those some node of this graph produces must wait.
            if all(i in available or i not in produced for i in _reads(node)):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):  # a cycle: keep the original order for the rest
            ordered.extend(rest)
            break
        pending = rest
    copies = [onnx.NodeProto() for _ in ordered]
    for c, n in zip(copies, ordered, strict=True):
        c.CopyFrom(n)
    del graph.node[:]
    graph.node.extend(copies)


def node_rewrite(
    match: Callable[[OnnxGraph, onnx.NodeProto], bool],
) -> Callable[[onnx.ModelProto], onnx.ModelProto]:
    """The pure rewrite `ModelProto -> ModelProto` that calls `match(graph, node)` until nothing more
    matches (OnnxGraph.rewrite_each); most node-local rewrites are exactly this around their matcher."""

    def rewrite(model: onnx.ModelProto) -> onnx.ModelProto:
        view = OnnxGraph(model)
        view.rewrite_each(match)
        return view.finish()

    # The rewrite belongs to the matcher's module: the pass list describes a pass by its module's docstring.
    rewrite.__module__ = match.__module__
    return rewrite


def _rename(names: MutableSequence[str], old: str, new: str) -> None:
    """Every `old` in a node's inputs or outputs becomes `new`."""
    for i, name in enumerate(names):
        if name == old:
            names[i] = new
