"""Residual blocks that pruning may remove whole (depth pruning).

A block is a module whose output is its input plus branches: y = act(x + f(x)) (a ResNet block,
act an element-wise activation or nothing), or a chain of them (a transformer layer: h = x + a(x),
y = h + m(h)). Found on its torch.fx trace (symbolic, else on the example: traced_heads.trace): from
the output back through element-wise single-input ops, each add's operand that leads back to the
input is followed until the input is reached; at least one add must be passed. Removing the block
replaces it with identity: y = x, exact when every branch is zero and the activation leaves x as it is
(a ReLU after a ReLU-ed stream). What it changes otherwise is measured as any other cut
(prune.py's sensitivities), and recovery re-solves the layers after it.

Every removed block takes all of its operators with it, so what it saves is saved on every runtime:
a channel cut saves MACs but not always time (XNNPACK's float convolutions on x86-64 took as long for
8 output channels as for 16, and longer for 24 than for 32: layer_latency.py).

A module fx cannot trace may find its blocks itself (GraphBlocks: quant/prune/onnx_source.py's ONNX
evaluator, whose blocks are spans of its graph's nodes, onnx_blocks.py). Either way a Block names the
modules it holds, which is all the cost model and the cut ask of it.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune.count import module_calls
from edgeport.quant.prune.traced_heads import trace

_ADDS = {operator.add, operator.iadd, torch.add}
_ADD_METHODS = {"add", "add_"}
# Single-input element-wise ops a block may apply after its last add.
_ELEMENTWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.LeakyReLU,
    nn.Identity,
    nn.Dropout,
)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.gelu, F.silu, F.hardswish, F.leaky_relu, F.dropout}
_ELEMENTWISE_METHODS = {"relu", "relu_", "contiguous"}


def _elementwise(gm: torch.fx.GraphModule, node: torch.fx.Node) -> bool:
    if node.op == "call_module":
        return isinstance(gm.get_submodule(str(node.target)), _ELEMENTWISE_MODULES)
    if node.op == "call_function":
        return node.target in _ELEMENTWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _ELEMENTWISE_METHODS


def _is_add(node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _ADDS and "alpha" not in node.kwargs
    return node.op == "call_method" and node.target in _ADD_METHODS and "alpha" not in node.kwargs


def residual_spine(gm: torch.fx.GraphModule) -> bool:
    """Whether the traced module's output is its one input plus branches (see the module docstring)."""
    inputs = [n for n in gm.graph.nodes if n.op == "placeholder"]
    outputs = [n for n in gm.graph.nodes if n.op == "output"]
    if len(inputs) != 1 or len(outputs) != 1 or not isinstance(outputs[0].args[0], torch.fx.Node):
        return False
    return bool(_adds_to(gm, outputs[0].args[0], inputs[0], {}))


def _adds_to(gm: torch.fx.GraphModule, node: torch.fx.Node, x: torch.fx.Node, seen: dict) -> int | None:
    """How many adds lie on the path from `x` to `node` when `node` is `x` through element-wise ops and
    adds of a branch (one operand on the path, the other anything); None when it is not."""
    if node is x:
        return 0
    if node in seen:
        return seen[node]
    found = None
    if _elementwise(gm, node) and node.args and isinstance(node.args[0], torch.fx.Node):
        found = _adds_to(gm, node.args[0], x, seen)
    elif _is_add(node) and len(node.args) == 2 and all(isinstance(a, torch.fx.Node) for a in node.args):
        for spine in node.args:
            adds = _adds_to(gm, spine, x, seen)
            if adds is not None:
                found = adds + 1
                break
    seen[node] = found
    return found


def residual_blocks(
    model: nn.Module, inputs: Sequence[torch.Tensor], excluded: Sequence[nn.Module] = ()
) -> list[str]:
    """Names of `model`'s modules (not the model itself) that are residual blocks, in call order: each
    called once with one tensor and returning a tensor of the same shape, holding parameters, none of
    them excluded, its trace a residual spine, and holding no other such module (a stage of blocks is
    one too, but its blocks are removed one by one)."""
    names = {m: n for n, m in model.named_modules() if n}
    skip = set(map(id, excluded))
    candidates = [
        m for m in names if any(True for _ in m.parameters()) and not any(id(s) in skip for s in m.modules())
    ]
    found = []
    for m, calls in module_calls(model, inputs, candidates).items():
        if len(calls) != 1:  # called twice (shared): not a block
            continue
        args, kwargs, out = calls[0]
        if (
            kwargs
            or len(args) != 1
            or not isinstance(args[0], torch.Tensor)
            or not isinstance(out, torch.Tensor)
            or out.shape != args[0].shape
        ):
            continue
        gm = _traced(m, args[0])
        if gm is not None and residual_spine(gm):
            found.append(names[m])
    return [b for b in found if not any(inside(other, b) for other in found if other != b)]


def _traced(m: nn.Module, x: torch.Tensor) -> torch.fx.GraphModule | None:
    for example in (None, (x,)):
        try:
            return trace(m, {}, example)
        except Exception:  # noqa: BLE001, S112 - a module fx cannot trace is not taken for a block
            continue
    return None


def inside(name: str, block: str) -> bool:
    """Whether the module `name` is the block `block` or one of its submodules."""
    return name == block or name.startswith(block + ".")


@dataclass(frozen=True)
class Block:
    """A residual block pruning may remove whole: `name` (what the manifest lists: the block module's
    name, or a graph block's residual Add node) and the modules it holds with their submodules (the
    block module itself, or the layers of a graph block's span)."""

    name: str
    modules: tuple[str, ...]

    def holds(self, module: str) -> bool:
        """Whether the module `module` is removed with this block."""
        return any(inside(module, m) for m in self.modules)


@runtime_checkable
class GraphBlocks(Protocol):
    """A module whose residual blocks are spans of the graph it runs, not submodules (fx cannot trace
    it): quant/prune/onnx_source.py's ONNX evaluator. It runs each block named in `bypassed` as
    identity (its input passed on as its output, its nodes not run)."""

    bypassed: set[str]

    def residual_blocks(
        self, inputs: Sequence[torch.Tensor], excluded: Sequence[nn.Module] = ()
    ) -> list[Block]:
        """Its residual blocks, in graph order, as residual_blocks' rules have them."""
        ...


def find_blocks(
    model: nn.Module, inputs: Sequence[torch.Tensor], excluded: Sequence[nn.Module] = ()
) -> list[Block]:
    """The residual blocks of `model` (run on `inputs`) that pruning may remove, none holding an
    `excluded` module: its submodules (residual_blocks), or a GraphBlocks' own."""
    if isinstance(model, GraphBlocks):
        return model.residual_blocks(inputs, excluded)
    return [Block(name, (name,)) for name in residual_blocks(model, inputs, excluded)]


def entries_holding(name: str, blocks: Sequence[Block], first: int) -> tuple[int, ...]:
    """The allocation entries (`first` + the block's index) of the blocks holding the module `name`."""
    return tuple(first + j for j, b in enumerate(blocks) if b.holds(name))


def without_blocks(model: nn.Module, blocks: Sequence[Block]) -> nn.Module:
    """`model` with each block replaced by identity, in place: its modules become nn.Identity (a
    block module then passes its input on; a graph block's layers no longer run, and the graph
    passes the block's input on as its output)."""
    for block in blocks:
        for name in block.modules:
            model.set_submodule(name, nn.Identity())
        if isinstance(model, GraphBlocks):
            model.bypassed.add(block.name)
    return model


@contextmanager
def block_removed(model: nn.Module, block: Block) -> Iterator[nn.Module]:
    """`model` without `block` (without_blocks) inside the with, as it was after."""
    held = {name: model.get_submodule(name) for name in block.modules}
    without_blocks(model, [block])
    try:
        yield model
    finally:
        for name, module in held.items():
            model.set_submodule(name, module)
        if isinstance(model, GraphBlocks):
            model.bypassed.discard(block.name)
