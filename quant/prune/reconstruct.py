"""Layer-wise least-squares reconstruction: after a cut, each layer whose output keeps the unpruned
model's shape (those that read pruned channels, and the layers after them, which inherit their error)
gets new weights (and an intercept) that make its output on the pruned model's own inputs match the
unpruned model's output at that layer (He et al. 2017's channel-pruning reconstruction, ThiNet's idea; RED's
merge-and-compensate is its special case of exact duplicates). Closed form, data-free: it runs on the
synthetic inputs recovery already distils on.

Layers are solved one at a time in forward order, each on inputs that come through the layers already
solved, so a later layer corrects what an earlier one could not. Where a layer's output (or its
BatchNorm's) is added to a residual shortcut, its target is what makes the sum match the unpruned
model's sum: the error the shortcut carries from earlier blocks is corrected there too, not passed on
(the additions are seen with a TorchFunctionMode, so a functional `a + b` in forward() counts).
Every output channel is its own ridge regression on the same inputs (the normal equations are
accumulated in float64 over a random subset of output positions, the same positions for both models).
A removed channel that is a linear combination of kept ones is reconstructed exactly. The intercept
goes into the layer's bias, or, for a layer without one that feeds a BatchNorm directly, into that
BatchNorm's running mean.

When the cut also narrows layers' outputs (a residual stream pruned with its shortcuts), `kept` maps each
narrowed module to the unpruned model's indices of the channels it keeps: the teacher's tensor there,
cut to those channels, is the target (and the student's BatchNorm scale the divisor).
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from edgeport.quant.prune.count import forward_with_hooks, in_width

RIDGE = 1e-4  # times the mean diagonal of the normal matrix: a little shrinkage where inputs are collinear
POSITIONS = 64  # output positions per sample that enter the regression (all when fewer)
CHUNK = 64  # samples per forward
EXACT = 1e-10  # relative squared error below which a layer's output already matches
ROWS_PER_COLUMN = 8  # a layer is solved only with at least this many regression rows per weight
MAX_COLUMNS = 4608  # weights per output channel of the largest layer solved (its normal matrix in float64)
MAX_SAMPLES = 256  # the first this many inputs enter the regressions (a layer has at most a few
# hundred weights per output channel: 256 samples x POSITIONS rows determine them well)


@dataclass
class ReconstructionLog:
    layers: list[str]
    seconds: float
    error_before: float  # mean over the layers of the relative output error before / after
    error_after: float


class _Stop(Exception):
    """Ends a forward once the layer being solved has been reached."""


def solvable(module: nn.Module) -> bool:
    """A Linear, or a Conv1d/Conv2d whose input patches unfold into a matrix (one group, zero padding
    given as numbers)."""
    if isinstance(module, nn.Linear):
        return True
    if not isinstance(module, nn.Conv1d | nn.Conv2d) or module.groups != 1:
        return False
    return module.padding_mode == "zeros" and not isinstance(module.padding, str)


Kept = Mapping[str, Sequence[int]]  # {module: the unpruned model's indices of its output channels kept}


def narrowed_axis(mine: Sequence[int], theirs: Sequence[int], keep: Sequence[int] | None) -> int | None:
    """The one axis along which a teacher tensor of shape `theirs`, cut to the channels `keep`, has the
    student's shape `mine`; None when there is none (equal shapes included)."""
    if keep is None or len(mine) != len(theirs):
        return None
    differ = [i for i, (a, b) in enumerate(zip(mine, theirs, strict=True)) if a != b]
    if len(differ) != 1 or mine[differ[0]] != len(keep) or not keep or max(keep) >= theirs[differ[0]]:
        return None
    return differ[0]


def corresponds(mine: Sequence[int], theirs: Sequence[int], keep: Sequence[int] | None) -> bool:
    """Whether a student tensor of shape `mine` has a teacher counterpart of shape `theirs`: the same
    shape, or narrowed to `keep`."""
    return tuple(mine) == tuple(theirs) or narrowed_axis(mine, theirs, keep) is not None


def to_student(theirs: torch.Tensor, mine: Sequence[int], keep: Sequence[int] | None) -> torch.Tensor:
    """The teacher's tensor cut to the student's channels (`keep` along the narrowed axis), else as it is."""
    axis = narrowed_axis(mine, tuple(theirs.shape), keep)
    return theirs if axis is None else theirs.index_select(axis, torch.as_tensor(list(keep)))


def _columns(module: nn.Module) -> int:
    return module.weight[0].numel()


def patches(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The layer's input as [samples, positions, in * kernel] (a Linear's leading dims are positions),
    in the column order of its weight reshaped to [out, in * kernel]."""
    if isinstance(module, nn.Linear):
        return x.reshape(x.shape[0], -1, x.shape[-1])
    conv1d = isinstance(module, nn.Conv1d)
    pair = (lambda v: (1, v[0])) if conv1d else tuple
    x4 = x.unsqueeze(2) if conv1d else x
    cols = F.unfold(
        x4,
        pair(module.kernel_size),
        dilation=pair(module.dilation),
        padding=(0, module.padding[0]) if conv1d else module.padding,
        stride=pair(module.stride),
    )
    return cols.transpose(1, 2)


def outputs(module: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """The layer's output as [samples, positions, out]."""
    if isinstance(module, nn.Linear):
        return y.reshape(y.shape[0], -1, y.shape[-1])
    return y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2)


def solve(gram: torch.Tensor, cross: torch.Tensor, ridge: float = RIDGE) -> torch.Tensor:
    """argmin_W |X W - Y|^2 + lam |W|^2 from gram = X'X [k, k] and cross = X'Y [k, out], with lam =
    `ridge` times the mean diagonal of X'X: W [k, out]."""
    k = gram.shape[0]
    lam = ridge * float(gram.diagonal().mean().clamp_min(1e-30))
    return torch.linalg.solve(gram + lam * torch.eye(k, dtype=gram.dtype), cross)


def _pick(rows: torch.Tensor, gen: torch.Generator, count: int) -> torch.Tensor:
    """Indices [samples, count] of `count` random positions per sample (all when fewer)."""
    samples, total = rows.shape[0], rows.shape[1]
    if total <= count:
        return torch.arange(total).expand(samples, total)
    return torch.stack([torch.randperm(total, generator=gen)[:count] for _ in range(samples)])


def _gather(rows: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return torch.gather(rows, 1, index.unsqueeze(-1).expand(-1, -1, rows.shape[-1])).reshape(
        -1, rows.shape[-1]
    )


def _capture(
    model: nn.Module, inputs: Sequence[torch.Tensor], module: nn.Module, source: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The input of `module` in one forward of `model`, stopped there; with `source` (the module whose
    output a residual addition takes: the layer or its BatchNorm), stopped at that addition instead, and
    the other addend."""
    got: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        got.append(args[0])
        if source is None:
            raise _Stop

    handles = [module.register_forward_pre_hook(hook)]
    watch = _Addends(stop=True)
    if source is not None:
        handles.append(source.register_forward_hook(watch.hook("addend")))
    try:
        with torch.no_grad(), watch:
            model(*inputs)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if not got:
        raise RuntimeError("the layer did not run")
    return got[0], watch.found.get("addend")


class _Addends(TorchFunctionMode):
    """The other operand of the first addition that takes a watched tensor (a residual shortcut), per
    name; `stop`: end the forward there."""

    def __init__(self, stop: bool = False) -> None:
        super().__init__()
        self.stop = stop
        self.watched: dict[int, tuple[str, torch.Tensor]] = {}  # the tensor itself keeps its id unique
        self.found: dict[str, torch.Tensor] = {}

    def hook(self, name: str):  # noqa: ANN201 - a forward hook
        def watch(_m: nn.Module, _a: tuple, out: object) -> None:
            if isinstance(out, torch.Tensor) and name not in self.found:
                self.watched[id(out)] = (name, out)

        return watch

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", "") in _ADDS and len(args) >= 2:
            for mine, other in ((args[0], args[1]), (args[1], args[0])):
                name = self.watched.get(id(mine), (None,))[0]
                if name is None or name in self.found or not isinstance(other, torch.Tensor):
                    continue
                if other.shape == mine.shape:
                    self.found[name] = other.detach().clone()
                    if self.stop:
                        raise _Stop
        return func(*args, **(kwargs or {}))


_ADDS = {"add", "add_", "__add__", "__radd__", "__iadd__"}


def _targets(
    teacher: nn.Module,
    inputs: Sequence[torch.Tensor],
    names: Sequence[str],
    gens: Sequence[torch.Generator],
    positions: int,
    sources: dict[str, str] | None = None,
    kept: Kept | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """{layer: (positions picked [samples, count], the teacher's output there [samples * count, out],
    the other addend of the residual addition that takes `sources[layer]`'s output there, or None),
    each cut to the channels `kept[layer]` when the cut narrowed the layer}."""
    kept = kept or {}

    def channels(name: str, rows: torch.Tensor) -> torch.Tensor:
        keep = kept.get(name)
        return rows if keep is None else rows[..., list(keep)]

    modules = dict(teacher.named_modules())
    picked: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    watch = _Addends()

    def keep(name: str, gen: torch.Generator):  # noqa: ANN202 - a forward hook
        def hook(m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
            if name not in picked:
                y = channels(name, outputs(m, out))
                index = _pick(y, gen, positions)
                picked[name] = (index, _gather(y, index).double())

        return hook

    hooks = [(modules[n], keep(n, g)) for n, g in zip(names, gens, strict=True)]
    hooks += [(modules[src], watch.hook(n)) for n, src in (sources or {}).items()]
    forward_with_hooks(teacher, inputs, hooks, mode=watch)
    found = {}
    for name, (index, y) in picked.items():
        other = watch.found.get(name)
        layer = modules[name]
        found[name] = (
            index,
            y,
            None if other is None else _gather(channels(name, outputs(layer, other)), index).double(),
        )
    return found


def _scale(bn: nn.Module | None, width: int) -> torch.Tensor:
    """What a BatchNorm (eval) multiplies each channel by; 1 without one. A near-zero scale gives an
    infinite one: no correction goes through a channel the BatchNorm all but switches off."""
    if bn is None:
        return torch.ones(width, dtype=torch.float64)
    a = (bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)).double()
    return torch.where(a.abs() > 1e-3 * a.abs().max(), a, torch.full_like(a, math.inf))


def _fed_batchnorms(model: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str]) -> dict:
    """{layer name: the BatchNorm that reads that layer's output tensor itself} (eval statistics)."""
    modules = dict(model.named_modules())
    # The outputs themselves are kept: an id is only unique among live objects, and a layer's output
    # freed during the forward (DenseNet's, once concatenated) lends its id to the next tensor made,
    # which a BatchNorm of another width then reads.
    made: dict[int, tuple[str, object]] = {}
    found: dict[str, nn.Module] = {}
    handles = []

    def out_hook(name: str):  # noqa: ANN202 - a forward hook
        def hook(_m: nn.Module, _a: tuple, out: object) -> None:
            made[id(out)] = (name, out)

        return hook

    def bn_hook(bn: nn.Module, args: tuple) -> None:
        name, out = made.get(id(args[0]), (None, None)) if args else (None, None)
        if name is not None and out is args[0] and name not in found and bn.running_mean is not None:
            found[name] = bn

    handles += [modules[n].register_forward_hook(out_hook(n)) for n in names]
    handles += [
        m.register_forward_pre_hook(bn_hook)
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    try:
        with torch.no_grad():
            model(*[x[:1] for x in inputs])
    finally:
        for h in handles:
            h.remove()
    return found


def layers_to_solve(
    student: nn.Module,
    teacher: nn.Module,
    inputs: Sequence[torch.Tensor],
    pruned_only: bool = False,
    kept: Kept | None = None,
) -> list[str]:
    """Names of the student's solvable layers, in the order they run, run once per forward, whose output
    has the teacher's shape (the target), or its shape cut to `kept[name]` along the layer's output
    channels, and (`pruned_only`) that read fewer channels than in the teacher."""
    kept = kept or {}
    theirs = dict(teacher.named_modules())
    order: list[str] = []
    shapes: dict[str, dict[str, tuple]] = {"s": {}, "t": {}}
    calls: dict[str, dict[str, int]] = {"s": {}, "t": {}}

    def hook(which: str, name: str):  # noqa: ANN202 - a forward hook
        def record(_m: nn.Module, _a: tuple, out: object) -> None:
            calls[which][name] = calls[which].get(name, 0) + 1
            if isinstance(out, torch.Tensor) and name not in shapes[which]:
                shapes[which][name] = tuple(out.shape)
                if which == "s":
                    order.append(name)

        return record

    pairs = [
        (name, m)
        for name, m in student.named_modules()
        if name and solvable(m) and name in theirs and type(theirs[name]) is type(m)
    ]
    probe = [x[:1] for x in inputs]
    forward_with_hooks(student, probe, ((m, hook("s", name)) for name, m in pairs))
    forward_with_hooks(teacher, probe, ((theirs[name], hook("t", name)) for name, _ in pairs))
    modules = dict(student.named_modules())
    return [
        n
        for n in order
        if _matches(modules[n], shapes["s"][n], shapes["t"].get(n), kept.get(n))
        and calls["s"][n] == calls["t"][n] == 1  # a layer run twice has no one input to fit
        and _columns(modules[n]) <= MAX_COLUMNS
        and (not pruned_only or in_width(modules[n]) < in_width(theirs[n]))
    ]


def _matches(layer: nn.Module, mine: tuple, theirs: tuple | None, keep: Sequence[int] | None) -> bool:
    """The layer's output has the teacher's shape, or the teacher's cut to `keep` along its channels."""
    if theirs is None or tuple(mine) == tuple(theirs):
        return theirs is not None
    axis = narrowed_axis(mine, theirs, keep)
    return axis is not None and axis % len(mine) == (len(mine) - 1 if isinstance(layer, nn.Linear) else 1)


def reconstruct(
    student: nn.Module,
    teacher: nn.Module,
    inputs: Sequence[torch.Tensor],
    seed: int = 0,
    ridge: float = RIDGE,
    positions: int = POSITIONS,
    pruned_only: bool = False,
    residual: bool = True,
    kept: Kept | None = None,
) -> ReconstructionLog:
    """Re-solve, in place, the weights of each layer of `student` whose output has the teacher's shape
    (`pruned_only`: only those that read pruned channels) so that its output on the student's own inputs
    matches `teacher`'s output at that layer (both in eval mode, names as in the unpruned model). A
    layer whose output already matches (nothing before it changed) is left as it is.

    `residual`: where the layer's output (or its BatchNorm's) is added to another tensor (a residual
    shortcut), the target also makes up for that tensor's difference from the teacher's (divided by the
    BatchNorm's scale), so that the sum matches: the error the stream brings from earlier blocks is
    corrected here rather than carried on.

    `kept`: {module: the unpruned model's indices of the output channels the cut kept} for the modules
    whose outputs the cut narrowed: their targets are the teacher's outputs at those channels."""
    started = time.perf_counter()
    student.eval()
    teacher.eval()
    inputs = [x[:MAX_SAMPLES] for x in inputs]
    names = layers_to_solve(student, teacher, inputs, pruned_only, kept)
    mine = dict(student.named_modules())
    bns = _fed_batchnorms(student, inputs, names)
    total = int(inputs[0].shape[0])
    chunks = [[x[i : i + CHUNK] for x in inputs] for i in range(0, total, CHUNK)]
    gens = [torch.Generator().manual_seed(seed * 1_000_003 + i) for i in range(len(names))]
    # The unpruned model's outputs at every layer, at the positions each layer's regression uses: one
    # forward per chunk.
    where = {m: n for n, m in student.named_modules()}
    sources = {n: where[bns[n]] if n in bns else n for n in names} if residual else None
    targets = [_targets(teacher, chunk, names, gens, positions, sources, kept) for chunk in chunks]
    solved, before, after = [], [], []
    for name in names:
        layer = mine[name]
        bias = layer.bias is not None or name in bns
        rows = sum(found[name][1].shape[0] for found in targets)
        if rows < ROWS_PER_COLUMN * (_columns(layer) + bias):
            continue  # too few rows to determine the weights: a fit would learn these inputs by heart
        gram = cross = None
        target_sq = err_sq = 0.0
        source = mine[sources[name]] if sources else None
        for chunk, found in zip(chunks, targets, strict=True):
            index, y, theirs = found[name]
            x, ours = _capture(student, chunk, layer, source if theirs is not None else None)
            x = _gather(patches(layer, x), index).double()
            if theirs is not None and ours is not None:
                y = y + (theirs - _gather(outputs(layer, ours), index).double()) / _scale(
                    bns.get(name), y.shape[1]
                )
            with torch.no_grad():
                now = x @ _weight(layer).double().T + _intercept(layer).double()
            err_sq += float(((now - y) ** 2).sum())
            target_sq += float((y**2).sum())
            if bias:
                x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], 1)
            g, c = x.T @ x, x.T @ y
            gram, cross = (g, c) if gram is None else (gram + g, cross + c)
        if err_sq <= EXACT * target_sq:
            continue  # nothing to correct: the ridge would only shrink the weights
        w = solve(gram, cross, ridge)
        _write(layer, w, bns.get(name) if bias and layer.bias is None else None)
        solved.append(name)
        before.append(err_sq / max(target_sq, 1e-30))
        after.append(_fit_error(gram, cross, w, target_sq))
    mean = lambda v: float(sum(v) / len(v)) if v else 0.0  # noqa: E731
    return ReconstructionLog(solved, time.perf_counter() - started, mean(before), mean(after))


def _fit_error(gram: torch.Tensor, cross: torch.Tensor, w: torch.Tensor, target_sq: float) -> float:
    """|XW - Y|^2 / |Y|^2 on the regression's rows, from the normal equations."""
    sq = target_sq - 2 * float((w * cross).sum()) + float((w * (gram @ w)).sum())
    return max(sq, 0.0) / max(target_sq, 1e-30)


def _weight(layer: nn.Module) -> torch.Tensor:
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


def _intercept(layer: nn.Module) -> torch.Tensor:
    """The layer's bias (a layer without one: zero; each layer is solved once, so no intercept has
    been moved into its BatchNorm yet)."""
    if layer.bias is not None:
        return layer.bias.detach()
    return torch.zeros(layer.weight.shape[0])


def _write(layer: nn.Module, w: torch.Tensor, bn: nn.Module | None) -> None:
    """Store the solution [k (+1), out]: weights, then the intercept in the bias or in `bn`'s mean."""
    k = _weight(layer).shape[1]
    with torch.no_grad():
        layer.weight.copy_(w[:k].T.reshape(layer.weight.shape).to(layer.weight.dtype))
        if w.shape[0] == k:
            return
        b = w[k].to(layer.weight.dtype)
        if layer.bias is not None:
            layer.bias.copy_(b)
        elif bn is not None:
            bn.running_mean.sub_(b)
