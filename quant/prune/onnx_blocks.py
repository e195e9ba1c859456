"""Residual blocks of an ONNX graph: spans of nodes pruning may remove whole, found on the node list
(fx cannot trace quant/prune/onnx_source.py's evaluator, and its layers are not grouped per block).

blocks.py's rule on the graph: a span runs from a tensor X to a tensor Y = act(X + branch(X)), act a
chain of element-wise single-input ops or none, the adds possibly a chain (h = X + a(X), Y = h + m(h):
a pre-norm transformer layer). From Y back through those ops, each residual Add's operands (neither a
constant) are followed; every tensor reached past at least one Add is a candidate X, nearest first,
and the first that makes a span is the block's input. A span is every node Y depends on back to X: it
must reach no graph input but X (constants aside: X is its single input), no tensor inside it may be
read outside it or be a graph output (Y aside), and Y has X's shape. So a projection (a Conv on the
shortcut) or a scaled shortcut (Mul) is not a block: the walk stops at that op, and no tensor before it
is reached from one X alone. Y extends past the last Add through the element-wise ops that are its
only readers (the block's ReLU goes with it, as in the module it was exported from).

Each Add's span is its nearest; blocks.py's block is a module, whose forward may chain several (a
pre-norm transformer layer: h = X + attn(norm(X)), Y = h + mlp(norm(h)), one block there). The graph
keeps the module only in its node names (torch.onnx.export's scope path: /layers/layers.0/Add and
/layers/layers.0/Add_1), so spans chained output to input whose Adds share a scope that is not the
root's are one span, the module's: the same block as the PyTorch model's, named after its last Add.
Adds in different scopes stay apart (ResNet blocks in a stage, /layer1/layer1.0/Add and
/layer1/layer1.1/Add; a residual wrapper module per sublayer, as the PyTorch path has them); so do
Adds with no scope (a name with no '/', or an add written in the model's own forward: /Add): nothing
then says which module they belong to, and each is its own block. A span holding another (a stage of
blocks) is not offered: its blocks are, one by one; nor is one from a graph input to a graph output
(the model itself: a model that is one such module has no block, its halves none either).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import onnx

from edgeport.onnx_graph import upstream_nodes

# Single-input element-wise ops that may follow a block's Add (blocks.py's list as ONNX writes it:
# ReLU6 is a Clip on constants; a Dropout is the identity at inference).
ELEMENTWISE = {"Relu", "Clip", "LeakyRelu", "Gelu", "HardSwish", "Identity", "Dropout"}


@dataclass(frozen=True)
class Span:
    """The nodes (indices in the node list) that compute `output` from `input` alone, the residual
    Add nearest the output (`add`) among them."""

    input: str
    output: str
    nodes: frozenset[int]
    add: int


class _Graph:
    def __init__(self, nodes: Sequence[onnx.NodeProto], constants: Collection[str], outputs: Collection[str]):
        self.nodes, self.constants, self.outputs = nodes, constants, outputs
        self.producer = {out: i for i, n in enumerate(nodes) for out in n.output if out}
        self.readers: defaultdict[str, set[int]] = defaultdict(set)
        for i, n in enumerate(nodes):
            for name in n.input:
                if name:
                    self.readers[name].add(i)

    def live(self, i: int) -> list[str]:
        """Node i's inputs that are not constants."""
        return [name for name in self.nodes[i].input if name and name not in self.constants]

    def residual_add(self, i: int) -> bool:
        node = self.nodes[i]
        return node.op_type == "Add" and len(node.input) == 2 and len(self.live(i)) == 2

    def elementwise(self, i: int) -> bool:
        return self.nodes[i].op_type in ELEMENTWISE and len(self.live(i)) == 1

    def end(self, add: int) -> str:
        """The Add's output, past the element-wise ops that are each the only reader of the one before."""
        tensor = self.nodes[add].output[0]
        while tensor not in self.outputs and len(self.readers[tensor]) == 1:
            (reader,) = self.readers[tensor]
            if not self.elementwise(reader):
                break
            tensor = self.nodes[reader].output[0]
        return tensor

    def candidates(self, y: str) -> Iterator[str]:
        """The tensors reached from `y` back through element-wise ops and residual Adds' operands,
        past at least one Add, nearest first."""
        queue, seen = deque([(y, 0)]), {y}
        while queue:
            tensor, adds = queue.popleft()
            i = self.producer.get(tensor)
            if i is None:
                continue
            passed = adds + self.residual_add(i)
            if not (self.residual_add(i) or self.elementwise(i)):
                continue
            for name in self.live(i):
                if name in seen:
                    continue
                seen.add(name)
                if passed:
                    yield name
                queue.append((name, passed))

    def whole(self, x: str, y: str) -> bool:
        """Whether `x` to `y` is the model itself: from a graph input to a graph output."""
        return x not in self.producer and y in self.outputs

    def span(self, x: str, y: str) -> frozenset[int] | None:
        """The nodes `y` depends on back to `x`, when they read nothing but `x` and constants and no
        tensor of theirs but `y` is read outside them; else None."""
        nodes = upstream_nodes(y, self.producer, self.nodes, lambda t: t == x or t in self.constants)
        if nodes is None:
            return None  # another graph input
        for i in nodes:
            for out in self.nodes[i].output:
                if out and out != y and (out in self.outputs or not self.readers[out] <= nodes):
                    return None
        return frozenset(nodes)


def residual_spans(
    nodes: Sequence[onnx.NodeProto],
    constants: Collection[str],
    shapes: Mapping[str, tuple[int, ...]],
    outputs: Collection[str],
) -> list[Span]:
    """The residual blocks of the graph of `nodes` (in graph order) as spans, in graph order:
    `constants` are the tensors no graph input reaches, `shapes` every tensor's shape (one forward),
    `outputs` the graph's outputs."""
    graph = _Graph(nodes, constants, set(outputs))
    found: list[Span] = []
    for add in range(len(nodes)):
        if not graph.residual_add(add):
            continue
        y = graph.end(add)
        if y not in shapes:
            continue
        for x in graph.candidates(y):
            if graph.whole(x, y):
                break  # blocks.py does not take the model itself for a block
            span = graph.span(x, y) if shapes.get(x) == shapes[y] else None
            if span is not None:
                found.append(Span(x, y, span, add))
                break
    found = [s for s in _modules(graph, found) if not graph.whole(s.input, s.output)]
    return [s for s in found if not any(other.nodes < s.nodes for other in found)]


def _scope(node: onnx.NodeProto) -> str:
    """The module path in the node's name ('/layers/layers.0' of '/layers/layers.0/Add'); '' for the
    root's nodes ('/Add') and names with no path."""
    return node.name.rpartition("/")[0]


def _modules(graph: _Graph, spans: Sequence[Span]) -> list[Span]:
    """`spans` (graph order) with each run chained output to input whose Adds share a scope (not the
    root's) made one span, when that is a span (the tensors between them read inside it alone)."""
    merged: list[Span] = []
    ending: dict[str, int] = {}  # a merged span's output -> its index in merged
    for s in spans:
        before = merged[ending[s.input]] if s.input in ending else None
        where = _scope(graph.nodes[s.add])
        if before is not None and where and _scope(graph.nodes[before.add]) == where:
            nodes = graph.span(before.input, s.output)
            if nodes is not None:
                i = ending.pop(s.input)
                merged[i] = Span(before.input, s.output, nodes, s.add)
                ending[s.output] = i
                continue
        ending[s.output] = len(merged)
        merged.append(s)
    return merged
