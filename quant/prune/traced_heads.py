"""Whole heads of attention written by hand (q/k/v Linears, heads split with view/reshape, q·kᵀ,
softmax, ·v) or with F.scaled_dot_product_attention, as heads.py's HeadGroups.

Found on a torch.fx trace of each module holding two or more Linears (innermost first; a module
already found is not looked for again in its parents), with tensor shapes from one run on the
example inputs. The head structure is read off the reshapes, where the code states it:
* a split: a view/reshape of a Linear's output [..., P*H*D] into [..., P, H, D] or [..., H, D]
  (P = 3: q, k and v packed in one Linear), the only use of the Linear's values (reading its
  .shape / .size() is not one);
* a merge: a view/reshape of [..., H, D] into [..., H*D] whose only use is a Linear.
However the shape is spelled (ints and -1, x.size()[:-1] + (H, D), another tensor's .shape), what
is read is the shapes of one run.
A module with splits of one (H, D), H > 1, and exactly one merge of the same (H, D) is taken as an
attention whose head h is rows h*D..h*D+D-1 of each split Linear's P blocks and the same input
columns of the merging Linear. What happens between (transposes, q·kᵀ, scale, mask, softmax, ·v,
SDPA) is not matched op by op: the cut is proven equal to zeroing the head's columns in the merging
Linear on a copy before any head is offered (prune.py's checked_heads), so an op that mixes heads (a
per-head bias, a mean over heads) keeps them whole with a note naming the module, as does a split
without its one merge (merged heads read by two Linears; unflatten or einops are not read). A
module fx cannot trace (control flow on tensor values, a mask made with torch.ones(n, n) from
x.shape) is not looked into: its Linears are left to the channel analysis, which refuses them
naming the module, as before.

The cut slices the Linears in place and replaces the module with its trace, each reshape's shape
rewritten as its input's leading sizes (read at run time: the batch stays free) followed by
constants (P, kept heads, D; or kept heads x D).
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from edgeport.quant.prune.count import forward_with_hooks
from edgeport.quant.prune.heads import HeadGroup


@dataclass(frozen=True)
class Reshape:
    node: str  # the fx node's name (the trace is deterministic: the same in a copy)
    split: bool  # a split ([..., (P,) H, D]) or a merge ([..., H x D])
    lead: int  # dimensions before the split or merged ones, kept as the input's sizes
    parts: int = 1


@dataclass
class Traced:
    """How to trace the attention again (its call's non-tensor arguments) and what to rewrite."""

    concrete: dict[str, Any]
    reshapes: list[Reshape] = field(default_factory=list)


def _linears(m: nn.Module) -> int:
    return sum(1 for x in m.modules() if isinstance(x, nn.Linear))


def _calls(model: nn.Module, inputs: Sequence[torch.Tensor], candidates: list[nn.Module]) -> dict:
    """Each candidate's first call: (args, kwargs), from one run on `inputs`."""
    calls: dict[nn.Module, tuple[tuple, dict]] = {}

    def hook(m: nn.Module, args: tuple, kwargs: dict, _out: object) -> None:
        calls.setdefault(m, (args, kwargs))

    forward_with_hooks(model, inputs, ((m, hook) for m in candidates), with_kwargs=True)
    return calls


def trace(m: nn.Module, concrete: dict[str, Any]) -> torch.fx.GraphModule:
    return torch.fx.symbolic_trace(m, concrete_args=concrete or None)


def _traced_with_shapes(m: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.fx.GraphModule, dict] | None:
    """The module's trace with every node's output shape, and its non-tensor arguments (fixed in the
    trace); None when it does not trace (control flow on tensors, *args...)."""
    from torch.fx.passes.shape_prop import ShapeProp

    params = inspect.signature(m.forward).parameters.values()
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
        return None
    try:
        bound = inspect.signature(m.forward).bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    concrete = {k: v for k, v in bound.arguments.items() if not isinstance(v, torch.Tensor)}
    try:
        gm = trace(m, concrete)
        with torch.no_grad():  # every argument in order: the trace keeps a placeholder for each
            ShapeProp(gm).propagate(*bound.arguments.values())
    except Exception:  # noqa: BLE001 - a module fx cannot trace has no heads found here
        return None
    return gm, concrete


def _shape(node: Any) -> list[int] | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, torch.fx.Node) else None
    return list(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def _is_reshape(node: torch.fx.Node) -> bool:
    """A view/reshape with its shape as arguments (method or torch.reshape, no keywords)."""
    method = node.op == "call_method" and node.target in ("view", "reshape")
    function = node.op == "call_function" and node.target is torch.reshape
    return (method or function) and not node.kwargs


def _set_shape(node: torch.fx.Node, shape: list[Any]) -> None:
    if node.op == "call_method":
        node.args = (node.args[0], *shape)
    else:
        node.args = (node.args[0], tuple(shape))


def _value_users(node: torch.fx.Node) -> list[torch.fx.Node]:
    """The nodes reading `node`'s values: its users but those reading only its shape (t.shape,
    t.size(), t.dim()), which the check after the cut covers."""

    def shape_only(user: torch.fx.Node) -> bool:
        if user.op == "call_method" and user.target in ("size", "dim"):
            return True
        return user.op == "call_function" and user.target is getattr and user.args[1:] == ("shape",)

    return [u for u in node.users if not shape_only(u)]


_MATMULS = {operator.matmul, torch.matmul, torch.bmm}


def products(gm: torch.fx.GraphModule) -> int:
    """Multiply-accumulates of the products between activations in a shape-propagated trace (q·kᵀ
    and ·v, by matmul or F.scaled_dot_product_attention), counted as count.py counts a MatMul."""
    total = 0
    for node in gm.graph.nodes:
        shapes = [_shape(a) for a in node.args[:3]]
        matmul = node.op == "call_function" and node.target in _MATMULS
        matmul |= node.op == "call_method" and node.target in ("matmul", "bmm")
        if matmul and shapes[0] and _shape(node):
            total += math.prod(_shape(node) or []) * shapes[0][-1]
        sdpa = node.op == "call_function" and node.target is torch.nn.functional.scaled_dot_product_attention
        if sdpa and all(shapes):
            q, k, v = shapes
            total += math.prod(q[:-1]) * k[-2] * (q[-1] + v[-1])  # type: ignore[index]
    return total


def _linear_of(gm: torch.fx.GraphModule, node: Any) -> str | None:
    if isinstance(node, torch.fx.Node) and node.op == "call_module":
        if isinstance(gm.get_submodule(str(node.target)), nn.Linear):
            return str(node.target)
    return None


Found = tuple[int, int, dict[str, int], str, list[Reshape]]


def _heads_in(gm: torch.fx.GraphModule) -> Found | str | None:
    """(heads, head size, split Linear -> parts, merging Linear, reshapes) of the one attention in the
    trace; None when nothing splits heads; why not, when something does but the rest does not agree."""
    splits: list[tuple[str, int, int, int, str, int]] = []
    merges: list[tuple[str, int, int, str, int]] = []
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if _linear_of(gm, node):
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
        if not _is_reshape(node):
            continue
        source, out, given = node.args[0], _shape(node), _shape(node.args[0])
        if out is None or given is None:
            continue
        linear = _linear_of(gm, source)
        if linear and len(_value_users(source)) == 1 and out[: len(given) - 1] == given[:-1]:
            tail = out[len(given) - 1 :]
            if len(tail) in (2, 3) and tail[-2] > 1 and int(torch.tensor(tail).prod()) == given[-1]:
                parts = tail[0] if len(tail) == 3 else 1
                splits.append((linear, parts, tail[-2], tail[-1], node.name, len(given) - 1))
        users = _value_users(node)
        reader = _linear_of(gm, users[0]) if len(users) == 1 else None
        if reader and len(given) >= 2 and out == given[:-2] + [given[-2] * given[-1]]:
            merges.append((reader, given[-2], given[-1], node.name, len(given) - 2))
    if not splits:
        return None
    if len(merges) != 1:
        return (
            "its heads are split by a view/reshape but not merged back by one view/reshape into one Linear"
            f" ({len(merges)} found)"
        )
    consumer, heads, size, merge, lead = merges[0]
    producers = {s[0]: s[1] for s in splits}
    if not all((s[2], s[3]) == (heads, size) for s in splits) or len(producers) != len(splits):
        return "its reshapes do not agree on one head count and size"
    if not all(calls[n] == 1 for n in [*producers, consumer]) or consumer in producers:
        return "a Linear of its heads is called more than once"
    reshapes = [Reshape(s[4], True, s[5], s[1]) for s in splits] + [Reshape(merge, False, lead)]
    return heads, size, producers, consumer, reshapes


def traced_head_groups(
    model: nn.Module, inputs: Sequence[torch.Tensor], skip: set[nn.Module]
) -> tuple[list[HeadGroup], list[str]]:
    """The hand-written and SDPA attentions of `model` (one sample of inputs) as head groups."""
    names = {m: n for n, m in model.named_modules()}
    inside_mha = {x for m in model.modules() if isinstance(m, nn.MultiheadAttention) for x in m.modules()}
    candidates = [
        m
        for m in model.modules()
        if m not in inside_mha and m not in skip and not isinstance(m, nn.Linear) and _linears(m) >= 2
    ]
    calls = _calls(model, inputs, candidates)
    groups: list[HeadGroup] = []
    notes: list[str] = []
    taken: set[nn.Module] = set()
    # Innermost first: an attention is found in its own module, not again in the block around it.
    for m in sorted(candidates, key=lambda m: -len(names[m].split(".")) if names[m] else 1):
        if m not in calls or any(x in taken for x in m.modules()):
            continue
        traced = _traced_with_shapes(m, *calls[m])
        found = _heads_in(traced[0]) if traced is not None else None
        if traced is None or found is None:
            continue
        if isinstance(found, str):
            taken.update(m.modules())
            notes.append(f"{names[m] or 'the model'}: heads kept whole, {found}")
            continue
        heads, size, producers, consumer, reshapes = found
        batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
        prefix = f"{names[m]}." if names[m] else ""
        full = {prefix + n: parts for n, parts in producers.items()}
        if any(dict(model.named_modules())[n] in skip for n in [*full, prefix + consumer]):
            continue
        taken.update(m.modules())
        groups.append(
            HeadGroup(
                names[m],
                heads,
                size,
                producers=full,
                consumer=prefix + consumer,
                trace=Traced(traced[1], reshapes),
                products=products(traced[0]) // max(1, batch),
                out_modules=list(full),  # the split Linears' rows narrow with the heads
                in_modules=[prefix + consumer],  # and the merging Linear's input columns
                in_counts={prefix + consumer: heads * size},
            )
        )
    return groups, notes


def _slice_linear(linear: nn.Linear, rows: list[int] | None, cols: list[int] | None) -> None:
    with torch.no_grad():
        weight = linear.weight
        if rows is not None:
            weight = weight[rows]
            if linear.bias is not None:
                linear.bias = nn.Parameter(linear.bias[rows].clone())
            linear.out_features = len(rows)
        if cols is not None:
            weight = weight[:, cols]
            linear.in_features = len(cols)
        linear.weight = nn.Parameter(weight.clone())


def cut_traced(model: nn.Module, group: HeadGroup, kept: Sequence[int]) -> nn.Module:
    """`model` with the attention `group.name` keeping `kept` heads: its Linears sliced, the module
    replaced by its trace with the reshapes rewritten (a new model when the attention is the model)."""
    attention = group.attention(model)
    spec: Traced = group.trace
    gm = trace(attention, spec.concrete)
    modules = dict(model.named_modules())
    columns = group.columns(kept)
    block = group.heads * group.head_dim
    for name, parts in group.producers.items():
        _slice_linear(modules[name], [p * block + c for p in range(parts) for c in columns], None)  # type: ignore[arg-type]
    _slice_linear(modules[group.consumer], None, columns)  # type: ignore[arg-type]
    nodes = {n.name: n for n in gm.graph.nodes}
    for r in spec.reshapes:
        node = nodes[r.node]
        # The leading sizes read from the input whatever form the shape had (ints, x.shape, a tuple
        # sum, -1): the batch stays free, the heads become constants.
        with gm.graph.inserting_before(node):
            shape: list[Any] = [gm.graph.call_method("size", (node.args[0], i)) for i in range(r.lead)]
        if r.split:
            shape += ([r.parts] if r.parts > 1 else []) + [len(kept), group.head_dim]
        else:
            shape += [len(kept) * group.head_dim]
        _set_shape(node, shape)
    gm.recompile()
    gm.train(attention.training)
    if not group.name:
        return gm
    parent_name, _, attr = group.name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, attr, gm)
    return model
