"""Whole heads of attention written by hand (q/k/v Linears, heads split with view/reshape, q·kᵀ,
softmax, ·v) or with F.scaled_dot_product_attention, as heads.py's HeadGroups.

Found on a torch.fx trace of each module holding two or more Linears (innermost first; a module
already found is not looked for again in its parents), with tensor shapes from one run on the
example inputs. Where fx's symbolic trace fails, the module is traced on the example instead
(ExampleTracer: shapes read in Python are the example's ints), which follows a mask made with
torch.ones(n, n) or torch.arange(n) from x.shape, a causal buffer sliced by the sequence length
(nanoGPT's self.bias[:, :, :T, :T]), and a split's parts mapped or unpacked (einops' rearranges, as
the reshapes and permutes they make). The head structure is read off the reshapes, where the code
states it:
* a split: a view/reshape of a Linear's output [..., P*H*D] into [..., P, H, D] or [..., H, D]
  (P = 3: q, k and v packed in one Linear), the only use of the Linear's values (reading its
  .shape / .size() is not one); or of each of P equal parts of a Linear's output split or chunked
  along its last axis (nanoGPT's c_attn(x).split(n_embd, dim=2), vit-pytorch's chunk(3, dim=-1));
* a merge: a view/reshape of [..., H, D] into [..., H*D] whose only use is a Linear (directly or
  through an nn.Identity / nn.Dropout, as timm's Attention has its `norm`).
However the shape is spelled (ints and -1, x.size()[:-1] + (H, D), another tensor's .shape), what
is read is the shapes of one run.
A module with splits of one (H, D), H > 1, and exactly one merge of the same (H, D) is taken as an
attention whose head h is rows h*D..h*D+D-1 of each split Linear's P blocks and the same input
columns of the merging Linear. What happens between (transposes, q·kᵀ, scale, mask, softmax, ·v,
SDPA) is not matched op by op: the cut is proven equal to zeroing the head's columns in the merging
Linear on a copy before any head is offered (prune.py's checked_heads), so an op that mixes heads (a
per-head bias, a mean over heads) keeps them whole with a note naming the module, as does a split
without its one merge (merged heads read by two Linears; unflatten is not read), and a trace on the
example that does not run at another batch size (the batch read in Python and used elsewhere than in
the head reshapes). A module neither tracer follows (control flow on tensor values, einops itself,
whose backend does not know fx's proxies) is not looked into: its Linears are left to the channel
analysis, which refuses them naming the module, as before.

The cut slices the Linears in place and replaces the module with its trace, each reshape's shape
rewritten as its input's leading sizes (read at run time: the batch stays free) followed by
constants (P, kept heads, D; or kept heads x D), and each split's size as kept heads x D.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import operator
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from edgeport.quant.prune.count import module_calls
from edgeport.quant.prune.graph import flat_outputs, plain_attributes
from edgeport.quant.prune.heads import HeadGroup


@dataclass(frozen=True)
class Reshape:
    node: str  # the fx node's name (the trace is deterministic: the same in a copy)
    split: bool  # a split ([..., (P,) H, D]) or a merge ([..., H x D])
    lead: int  # dimensions before the split or merged ones, kept as the input's sizes
    parts: int = 1


@dataclass
class Traced:
    """How to trace the attention again (its call's non-tensor arguments; its example arguments when
    only the example tracer traces it) and what to rewrite."""

    concrete: dict[str, Any]
    reshapes: list[Reshape] = field(default_factory=list)
    example: tuple | None = None  # every argument of one call, in order (ExampleTracer's values)
    resized: list[str] = field(default_factory=list)  # split nodes whose part size narrows with the heads


def _linears(m: nn.Module) -> int:
    return sum(1 for x in m.modules() if isinstance(x, nn.Linear))


def _calls(model: nn.Module, inputs: Sequence[torch.Tensor], candidates: list[nn.Module]) -> dict:
    """Each candidate's first call: (args, kwargs), from one run on `inputs`."""
    return {m: c[0][:2] for m, c in module_calls(model, inputs, candidates).items()}


_SHAPE_ATTRIBUTES = ("shape", "ndim", "dtype", "device", "is_cuda", "layout")
_SHAPE_METHODS = ("size", "dim", "numel", "ndimension", "nelement")


class ExampleProxy(torch.fx.Proxy):
    """A proxy whose shape is the example's: t.shape, t.size(), len(t) and iteration give ints."""

    def __getattr__(self, name: str) -> Any:
        if name in _SHAPE_ATTRIBUTES:
            return getattr(self.tracer.values[self.node], name)  # type: ignore[attr-defined]
        return super().__getattr__(name)

    def __len__(self) -> int:
        return len(self.tracer.values[self.node])  # type: ignore[attr-defined]

    def __iter__(self) -> Any:
        return (self[i] for i in range(len(self)))


class ExampleTracer(torch.fx.Tracer):
    """torch.fx's tracer, running each node on the example arguments as it records it, so that shapes
    read in Python are the example's ints (a mask made with torch.ones(n, n) from x.shape, a buffer
    sliced by the sequence's length, unpacking a split's parts: all constants for these shapes).
    Values still never steer the trace: control flow on a tensor's values fails as in symbolic_trace.
    The batch size is fixed too where the code reads it; the cut frees the head reshapes' leading
    sizes, and traced_head_groups runs the result at another batch before offering it."""

    def __init__(self, example: Sequence[Any]) -> None:
        super().__init__()
        # Placeholders take them in the signature's order; copies, as an in-place op would change them.
        self.example = [a.clone() if isinstance(a, torch.Tensor) else a for a in example]
        self.values: dict[torch.fx.Node, Any] = {}
        self.eager = False  # computing a value: modules and attributes are the real ones

    def proxy(self, node: torch.fx.Node) -> torch.fx.Proxy:
        return ExampleProxy(node, self)

    def call_module(self, m: nn.Module, forward: Any, args: tuple, kwargs: dict) -> Any:
        return forward(*args, **kwargs) if self.eager else super().call_module(m, forward, args, kwargs)

    def getattr(self, attr: str, attr_val: Any, parameter_proxy_cache: dict) -> Any:
        return attr_val if self.eager else super().getattr(attr, attr_val, parameter_proxy_cache)

    def create_proxy(self, kind: str, target: Any, args: tuple, kwargs: dict, *rest: Any, **more: Any) -> Any:
        def value(a: Any) -> Any:
            return self.values[a.node] if isinstance(a, torch.fx.Proxy) else a

        values = torch.fx.node.map_aggregate((args, kwargs), value)
        if kind == "call_method" and target in _SHAPE_METHODS:
            return getattr(values[0][0], target)(*values[0][1:], **values[1])
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **more)
        self.eager = True
        try:
            with torch.no_grad():
                self.values[proxy.node] = self._run(kind, target, *values)
        finally:
            self.eager = False
        return proxy

    def _run(self, kind: str, target: Any, args: tuple, kwargs: dict) -> Any:
        if kind == "placeholder":
            return self.example.pop(0)
        if kind == "get_attr":
            return operator.attrgetter(target)(self.root)
        if kind == "call_module":
            return self.root.get_submodule(target)(*args, **kwargs)
        if kind == "call_method":
            return getattr(args[0], target)(*args[1:], **kwargs)
        return target(*args, **kwargs)


def trace(
    m: nn.Module, concrete: dict[str, Any], example: Sequence[Any] | None = None
) -> torch.fx.GraphModule:
    """The module's symbolic trace, or with `example` (every argument of one call, in order) its trace
    by ExampleTracer."""
    with _attributes_kept(m):  # the GraphModule made inside: it copies the constants fx put on `m`
        if example is None:
            return _same_signature(torch.fx.symbolic_trace(m, concrete_args=concrete or None), m)
        tracer = ExampleTracer(example)
        graph = tracer.trace(m, concrete_args=concrete or None)
        return _same_signature(torch.fx.GraphModule(tracer.root, graph, m.__class__.__name__), m)


@contextlib.contextmanager
def _attributes_kept(m: nn.Module) -> Iterator[None]:
    """Each submodule's own attributes as they were before the trace: fx runs the forward on proxies,
    and a forward that caches a value in an attribute (timm's LeViT: attention_bias_cache, filled in
    eval) would keep a Proxy there, which fails the next trace and every deepcopy of the model. A dict
    or list is emptied and refilled in place (whoever holds it sees the same object); attributes the
    trace added (fx's _tensor_constant0, copied into the GraphModule) are removed."""
    saved = [(x, {k: (v, _contents(v)) for k, v in plain_attributes(x).items()}) for x in m.modules()]
    try:
        yield
    finally:
        for x, attrs in saved:
            for key in [k for k in plain_attributes(x) if k not in attrs]:
                del x.__dict__[key]
            for key, (value, contents) in attrs.items():
                if isinstance(value, dict):
                    value.clear()
                    value.update(contents)
                elif isinstance(value, list):
                    value[:] = contents
                x.__dict__[key] = value


def _contents(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else None


def _same_signature(gm: torch.fx.GraphModule, m: nn.Module) -> torch.fx.GraphModule:
    """`gm` taking its arguments under `m.forward`'s names: fx may rename a concrete argument's
    placeholder (timm's Attention: attn_mask -> attn_mask_1), and the trace replaces the module in
    a model whose caller passes it by keyword (timm's Block: self.attn(x, attn_mask=attn_mask))."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    names = list(inspect.signature(m.forward).parameters)
    if len(placeholders) == len(names) and [n.target for n in placeholders] != names:
        for node, name in zip(placeholders, names, strict=True):
            node.target = name
        gm.recompile()
    return gm


def _traced_with_shapes(
    m: nn.Module, args: tuple, kwargs: dict
) -> tuple[torch.fx.GraphModule, Traced] | None:
    """The module's trace with every node's output shape, and how to trace it again: symbolically
    when fx can, else on the call's arguments (ExampleTracer); None when neither traces (control flow
    on tensor values, *args...)."""
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
    for example in (None, tuple(bound.arguments.values())):
        try:
            gm = trace(m, concrete, example)
            with torch.no_grad():  # every argument in order: the trace keeps a placeholder for each
                ShapeProp(gm).propagate(*bound.arguments.values())
        except Exception:  # noqa: BLE001, S112 - a module fx cannot trace has no heads found here
            continue
        return gm, Traced(concrete, example=example)
    return None


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


# Modules that return their input in eval: timm's Attention puts its `norm` (an nn.Identity unless
# scale_norm) between the heads' merge and `proj`, and many attentions a Dropout.
_PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.Identity, nn.Dropout)


def _merge_reader(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str | None:
    """The Linear that alone reads `node`'s values, directly or through _PASS_THROUGH modules."""
    users = _value_users(node)
    while len(users) == 1 and users[0].op == "call_module":
        if not isinstance(gm.get_submodule(str(users[0].target)), _PASS_THROUGH):
            break
        users = _value_users(users[0])
    return _linear_of(gm, users[0]) if len(users) == 1 else None


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


def _split_part(gm: torch.fx.GraphModule, node: Any) -> tuple[str, int, torch.fx.Node] | None:
    """(Linear, parts, the split) when `node` is one of `parts` equal parts of a Linear's output split
    along its last axis (t.split(size, -1), t.chunk(parts, -1), torch.split / torch.chunk: q, k and v
    packed in one Linear), each part read once and the Linear's output by the split only."""
    getitem = (
        isinstance(node, torch.fx.Node) and node.op == "call_function" and node.target is operator.getitem
    )
    split = node.args[0] if getitem else None
    method = (
        isinstance(split, torch.fx.Node) and split.op == "call_method" and split.target in ("split", "chunk")
    )
    function = isinstance(split, torch.fx.Node) and split.target in (torch.split, torch.chunk)
    if not (method or function) or len(split.args) < 2:  # type: ignore[union-attr]
        return None
    source, part = split.args[0], _shape(node)  # type: ignore[union-attr]
    linear, whole = _linear_of(gm, source), _shape(source)
    dim = split.kwargs.get("dim", split.args[2] if len(split.args) > 2 else 0)  # type: ignore[union-attr]
    if not linear or whole is None or part is None or dim not in (-1, len(whole) - 1):
        return None
    parts = list(split.users)  # type: ignore[union-attr]
    even = all(_shape(u) == part for u in parts) and len(parts) * part[-1] == whole[-1]
    indexed = {u.args[1] for u in parts if u.op == "call_function" and u.target is operator.getitem}
    if not even or indexed != set(range(len(parts))) or len(_value_users(source)) != 1:
        return None
    return (linear, len(parts), split) if len(_value_users(node)) == 1 else None  # type: ignore[return-value]


@dataclass(frozen=True)
class Found:
    """The one attention of a trace: its heads, where they are split and merged."""

    heads: int
    size: int
    producers: dict[str, int]  # split Linear -> blocks of heads x size rows (3: q, k and v packed)
    consumer: str  # the merging Linear
    reshapes: list[Reshape]
    resized: list[str]  # split nodes (t.split(size)) whose size narrows with the heads


def _heads_in(gm: torch.fx.GraphModule) -> Found | str | None:
    """The one attention in the trace; None when nothing splits heads; why not, when something does
    but the rest does not agree."""
    # (Linear, parts, heads, size, reshape, lead, the split it goes through or None)
    splits: list[tuple[str, int, int, int, str, int, torch.fx.Node | None]] = []
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
        linear, part = _linear_of(gm, source), _split_part(gm, source)
        direct = linear is not None and len(_value_users(source)) == 1
        if (direct or part) and out[: len(given) - 1] == given[:-1]:
            tail = out[len(given) - 1 :]
            if len(tail) in (2, 3 if direct else 2) and tail[-2] > 1 and math.prod(tail) == given[-1]:
                if part is not None:
                    splits.append((part[0], part[1], tail[-2], tail[-1], node.name, len(given) - 1, part[2]))
                else:
                    parts = tail[0] if len(tail) == 3 else 1
                    splits.append((linear, parts, tail[-2], tail[-1], node.name, len(given) - 1, None))  # type: ignore[arg-type]
        reader = _merge_reader(gm, node)
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
    # One reshape per Linear, or one per part of a Linear split into parts.
    expected = {s[0]: s[1] if s[6] is not None else 1 for s in splits}
    if not all((s[2], s[3]) == (heads, size) for s in splits) or Counter(s[0] for s in splits) != expected:
        return "its reshapes do not agree on one head count and size"
    if not all(calls[n] == 1 for n in [*producers, consumer]) or consumer in producers:
        return "a Linear of its heads is called more than once"
    reshapes = [Reshape(s[4], True, s[5], 1 if s[6] is not None else s[1]) for s in splits]
    resized = sorted(
        {s[6].name for s in splits if s[6] is not None and s[6].target in ("split", torch.split)}
    )
    return Found(heads, size, producers, consumer, [*reshapes, Reshape(merge, False, lead)], resized)


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
    doubled: dict | None = None  # the calls at batch 2, for what ExampleTracer traced
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
        gm, spec = traced
        batch = int(inputs[0].shape[0]) if inputs and inputs[0].dim() else 1
        prefix = f"{names[m]}." if names[m] else ""
        full = {prefix + n: parts for n, parts in found.producers.items()}
        if any(dict(model.named_modules())[n] in skip for n in [*full, prefix + found.consumer]):
            continue
        taken.update(m.modules())
        spec.reshapes, spec.resized = found.reshapes, found.resized
        macs = products(gm) // max(1, batch)
        if spec.example is not None:
            doubled = _batch_of_two(model, inputs, candidates) if doubled is None else doubled
            problem = _other_batch(m, rewritten(gm, spec, found.size, found.heads), doubled.get(m))
            if problem:
                notes.append(f"{names[m] or 'the model'}: heads kept whole, {problem}")
                continue
        groups.append(
            HeadGroup(
                names[m],
                found.heads,
                found.size,
                producers=full,
                consumer=prefix + found.consumer,
                trace=spec,
                products=macs,
                out_modules=list(full),  # the split Linears' rows narrow with the heads
                in_modules=[prefix + found.consumer],  # and the merging Linear's input columns
                in_counts={prefix + found.consumer: found.heads * found.size},
            )
        )
    return groups, notes


def _batch_of_two(model: nn.Module, inputs: Sequence[torch.Tensor], candidates: list[nn.Module]) -> dict:
    """Each candidate's first call with the sample twice in the batch; {} when the model does not run so."""
    try:
        return _calls(model, [torch.cat([x, x]) if x.dim() else x for x in inputs], candidates)
    except Exception:  # noqa: BLE001 - a model fixed to one sample: nothing to compare
        return {}


def _other_batch(m: nn.Module, gm: torch.fx.GraphModule, call: tuple[tuple, dict] | None) -> str | None:
    """Why `gm` (m's trace on the example, head reshapes freed) is not `m` at batch 2; None when it is
    (or when the model does not run at batch 2 itself)."""
    if call is None:
        return None
    args, kwargs = call
    with torch.no_grad():
        want = m(*args, **kwargs)
        try:
            # forward, not the call: GraphModule's call prints the failing line to stderr
            got = gm.forward(*inspect.signature(m.forward).bind(*args, **kwargs).arguments.values())
        except Exception as exc:  # noqa: BLE001 - any failure is the reason given
            return f"its trace on the example fixes the batch size ({type(exc).__name__})"
    pairs = list(zip(flat_outputs(got), flat_outputs(want), strict=False))
    if len(pairs) != len(flat_outputs(want)) or not all(
        g.shape == w.shape and torch.allclose(g.float(), w.float(), rtol=1e-4, atol=1e-5) for g, w in pairs
    ):
        return "its trace on the example fixes the batch size"
    return None


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


def rewritten(gm: torch.fx.GraphModule, spec: Traced, head_dim: int, kept: int) -> torch.fx.GraphModule:
    """`gm` (the attention's trace) with its head reshapes and splits rewritten for `kept` heads, in
    place: each reshape's leading sizes read from its input whatever form the shape had (ints, x.shape,
    a tuple sum, -1), so the batch stays free, and the heads as constants."""
    nodes = {n.name: n for n in gm.graph.nodes}
    for r in spec.reshapes:
        node = nodes[r.node]
        with gm.graph.inserting_before(node):
            shape: list[Any] = [gm.graph.call_method("size", (node.args[0], i)) for i in range(r.lead)]
        if r.split:
            shape += ([r.parts] if r.parts > 1 else []) + [kept, head_dim]
        else:
            shape += [kept * head_dim]
        _set_shape(node, shape)
    for name in spec.resized:  # t.split(size): each part is kept heads x head_dim wide
        node = nodes[name]
        size = node.args[1]
        width = [kept * head_dim] * len(size) if isinstance(size, list | tuple) else kept * head_dim
        node.args = (node.args[0], width, *node.args[2:])
    gm.recompile()
    return gm


def cut_traced(model: nn.Module, group: HeadGroup, kept: Sequence[int]) -> nn.Module:
    """`model` with the attention `group.name` keeping `kept` heads: its Linears sliced, the module
    replaced by its trace with the reshapes rewritten (a new model when the attention is the model)."""
    attention = group.attention(model)
    spec: Traced = group.trace
    gm = trace(attention, spec.concrete, spec.example)  # before the slicing: the example runs it whole
    modules = dict(model.named_modules())
    columns = group.columns(kept)
    block = group.heads * group.head_dim
    for name, parts in group.producers.items():
        _slice_linear(modules[name], [p * block + c for p in range(parts) for c in columns], None)  # type: ignore[arg-type]
    _slice_linear(modules[group.consumer], None, columns)  # type: ignore[arg-type]
    rewritten(gm, spec, group.head_dim, len(kept))
    gm.train(attention.training)
    if not group.name:
        return gm
    parent_name, _, attr = group.name.rpartition(".")
    setattr(modules[parent_name] if parent_name else model, attr, gm)
    return model
