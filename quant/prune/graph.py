"""Coupled channel groups of a PyTorch module, from torch-pruning's dependency graph.

A group is the set of channels that must go together: a convolution's output channels with its
BatchNorm, every consumer's input channels (through residual adds, concat, split/chunk, flatten into
the first Linear, depthwise convolutions), each as torch-pruning maps the indices. What this module
adds to torch-pruning: groups that would change a model output are never offered, groups that touch
an excluded module or a module torch-pruning cannot prune consistently (attention, recurrent layers)
are kept whole, and a failure is named by module.
"""

from __future__ import annotations

import contextlib
import difflib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from edgeport.errors import EdgeportError, exception_line
from edgeport.quant.prune.channel_pads import customized_pruners, is_selection

if TYPE_CHECKING:  # blocks.py reaches this module through traced_heads.py
    from edgeport.quant.prune.blocks import Block

# Modules whose input and output channels are kept whole (the rest of the model still prunes):
# attention (ATTENTION_WHY below; its heads prune) and recurrent layers (their hidden channels feed
# back into every gate: not pruned).
KEPT_WHOLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.MultiheadAttention,
    nn.LSTM,
    nn.GRU,
    nn.RNN,
    nn.LSTMCell,
    nn.GRUCell,
    nn.RNNCell,
)
ROOT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# torch-pruning can follow a coupling without end (a circular padding's concat of slices along time):
# one group's analysis gets this long (a ResNet-56 group takes well under a second).
GROUP_SECONDS = 30


@contextlib.contextmanager
def _time_limit(seconds: int, name: str, module: nn.Module) -> Iterator[None]:
    """Stop torch-pruning's analysis of one group after `seconds` with a one-line error naming the
    module (SIGALRM: only in the main thread of a Unix process; elsewhere no limit)."""
    if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        raise EdgeportError(
            f"the pruning dependency analysis does not finish for the channels of {name} "
            f"({type(module).__name__}) within {seconds} s (torch-pruning follows a coupling without end)",
            "keep it whole with --prune-exclude NAME, or convert without --prune, and report the model",
        )

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _known_widths_only() -> None:
    """torch-pruning infers a concat input's width as the concat's width less its siblings'; after a
    chunk whose half is concatenated again (ShuffleNetV2's unit: chunk, cat, channel shuffle) that gives
    0, and the channel shuffle's reshape then divides by it. A width of 0 or less is taken for what it
    is, unknown (as torch-pruning takes a width it cannot infer): the reshape keeps its channels in
    place, and a group it couples wrongly is kept whole by the cut check (prune.checked_groups).
    Installed once, for good: torch-pruning infers widths again for every group it builds."""
    from torch_pruning.dependency import shape_infer

    infer = shape_infer.infer_in_channels_recursively
    if getattr(infer, "known_widths_only", False):
        return

    def known(graph: Any, node: Any, recursive_depth: list[int]) -> int | None:
        width = infer(graph, node, recursive_depth)
        return width if width is None or width > 0 else None

    known.known_widths_only = True  # type: ignore[attr-defined]
    # The recursion and index_mapping.py call it through the module, so both see this one.
    shape_infer.infer_in_channels_recursively = known


# What nn.Module keeps in every instance's __dict__ (parameters, buffers, submodules, hooks, training).
MODULE_INTERNALS = frozenset(vars(nn.Module()))


def plain_attributes(m: nn.Module) -> dict[str, Any]:
    """`m`'s own attributes beside nn.Module's bookkeeping: where a forward may cache values."""
    return {k: v for k, v in vars(m).items() if k not in MODULE_INTERNALS}


def detach_caches(module: nn.Module, forget: bool = False) -> None:
    """Detach the tensors with a grad_fn that modules keep in their plain attributes (dicts and lists
    changed in place); `forget`: delete such a tensor from its dict instead, so the module computes it
    again. timm's LeViT and EfficientFormer cache their attention biases in eval: torch-pruning's
    forward (grad enabled, after its own model.eval()) leaves a non-leaf tensor there, which every deep
    copy of the model refuses (the analysis detaches it, values kept); recovery trains in eval, where
    the cache would carry the first step's freed graph into the second and hold the old parameters'
    values after a step (recovery forgets it)."""

    def detached(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.grad_fn is not None:
            return value.detach()
        if isinstance(value, dict):
            graphs = [k for k, v in value.items() if isinstance(v, torch.Tensor) and v.grad_fn is not None]
            for key in graphs if forget else ():
                del value[key]
            value.update({k: detached(v) for k, v in value.items()})
        elif isinstance(value, list):
            value[:] = [detached(v) for v in value]
        return value

    for m in module.modules():
        for key, value in plain_attributes(m).items():
            m.__dict__[key] = detached(value)


@dataclass
class ChannelGroup:
    """One prunable group: `channels` root output channels in `units` steps of `unit` channels each
    (a grouped convolution removes the same positions in every one of its `repeats` channel groups)."""

    name: str  # the root module's name
    root: nn.Module
    channels: int
    repeats: int  # channel groups of a grouped convolution, or channels a split couples (1 otherwise)
    expands: bool = False  # torch-pruning adds the coupled repeats itself (split/chunk + add)
    out_modules: list[str] = field(default_factory=list)  # modules whose output channels shrink
    in_modules: list[str] = field(default_factory=list)  # modules whose input channels shrink
    in_counts: dict[str, int] = field(default_factory=dict)  # module -> its input columns fed by the group

    @property
    def width(self) -> int:
        """Channels per repeat: what importance ranks and what rounding applies to."""
        return self.channels // self.repeats

    def on(self, module: nn.Module) -> ChannelGroup:
        """This group in a deep copy of the model it was found in (the same names)."""
        return replace(self, root=dict(module.named_modules())[self.name])

    def channel_indices(self, positions: Sequence[int]) -> list[int]:
        """Root channel indices of `positions` (within one repeat) in every repeat."""
        if self.expands:
            return list(positions)
        return [r * self.width + p for r in range(self.repeats) for p in positions]


def flat_outputs(out: Any) -> list[torch.Tensor]:
    """A model's output tensors, in order, from a tensor, tuple, list or dict of them."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, list | tuple):
        return [t for o in out for t in flat_outputs(o)]
    return []


def module_names(module: nn.Module) -> dict[nn.Module, str]:
    return {m: name for name, m in module.named_modules() if name}


def resolve_excluded(
    module: nn.Module, names: Sequence[str], flag: str = "--prune-exclude", blocks: Sequence[Block] = ()
) -> list[nn.Module]:
    """The modules (with their submodules) named by `names`: a module's name, or a residual block's of
    `blocks` (the modules it holds: an ONNX source's blocks are named after their Add node, which names
    no module); an unknown name lists close ones of the same names."""
    by_name = {name: [m] for name, m in module.named_modules() if name}
    by_name.update({b.name: [module.get_submodule(m) for m in b.modules] for b in blocks})
    found: list[nn.Module] = []
    for name in names:
        if name not in by_name:
            close = difflib.get_close_matches(name, list(by_name), n=4, cutoff=0.5)
            listed = "names are as in model.named_modules()"
            listed += ", or a residual block's as pruning.blocks_removed lists it" if blocks else ""
            hint = f"close names: {', '.join(close)}" if close else listed
            what = "module or residual block" if blocks else "module"
            raise EdgeportError(f"{flag} {name!r} names no {what} of the model", hint)
        found.extend(s for m in by_name[name] for s in m.modules())
    return found


class Graph:
    """torch-pruning's DependencyGraph over `module`, traced on `example_inputs`."""

    def __init__(self, module: nn.Module, example_inputs: Sequence[torch.Tensor]) -> None:
        import torch_pruning as tp

        _known_widths_only()
        self.module = module
        self.names = module_names(module)
        module.eval()
        for p in module.parameters():
            p.requires_grad_(True)  # torch-pruning follows grad_fn: a frozen parameter leaves no trace
        try:
            with torch.no_grad():
                outputs = module(*example_inputs)
            self.dg = tp.DependencyGraph().build_dependency(
                module, example_inputs=list(example_inputs), customized_pruners=customized_pruners()
            )
            detach_caches(module)
        except Exception as exc:  # noqa: BLE001 - torch-pruning's own failure, named for the user
            raise EdgeportError(
                f"the pruning dependency analysis cannot trace this model ({exception_line(exc)})",
                "rerun with --debug for the traceback and report the model; convert without --prune",
            ) from exc
        self.output_grad_fns = {t.grad_fn for t in flat_outputs(outputs) if t.grad_fn is not None}

    def is_out(self, handler: Callable[..., Any]) -> bool:
        return bool(self.dg.is_out_channel_pruning_fn(handler))

    def group_of(self, group: ChannelGroup, channel_indices: Sequence[int]) -> Any:
        """torch-pruning's group for these root channels (its items map them onto every module)."""
        pruner = self.dg.get_pruner_of_module(group.root)
        return self.dg.get_pruning_group(group.root, pruner.prune_out_channels, list(channel_indices))

    def kept_outputs(self, group: ChannelGroup, channel_indices: Sequence[int]) -> dict[str, list[int]]:
        """{module: its output channels (indices in this model) that cutting `channel_indices` of the
        group keeps} for every named module whose output channels the cut narrows."""
        kept: dict[str, list[int]] = {}
        for dep, idxs in self.group_of(group, channel_indices):
            module = dep.target.module
            if self.is_out(dep.handler) and module in self.names and not is_selection(module):
                gone, width = set(mapped(idxs)), self.dg.get_out_channels(module)
                kept[self.names[module]] = [i for i in range(width) if i not in gone]
        return kept

    def _touches_output(self, tp_group: Any) -> bool:
        for dep, _ in tp_group:
            if self.is_out(dep.handler):
                node = dep.target
                if not node.outputs or node.grad_fn in self.output_grad_fns:
                    return True
        return False

    def _in_counts(self, tp_group: Any) -> dict[str, int]:
        counts: dict[str, int] = {}
        for dep, idxs in tp_group:
            module = dep.target.module
            if not self.is_out(dep.handler) and module in self.names:
                counts[self.names[module]] = counts.get(self.names[module], 0) + len(set(mapped(idxs)))
        return counts

    def _channel_groups(self, module: nn.Module) -> int:
        """How many equal channel groups `module` needs kept equal (a grouped convolution's groups, a
        GroupNorm's), 1 for a depthwise convolution (each channel its own group) and the rest."""
        if isinstance(module, nn.modules.conv._ConvNd) and module.groups == module.out_channels:
            return 1
        pruner = self.dg.get_pruner_of_module(module)
        if pruner is None:
            return 1
        return max(1, int(pruner.get_out_channel_groups(module)))

    def groups(self, excluded: Sequence[nn.Module] = ()) -> tuple[list[ChannelGroup], list[str]]:
        """The prunable groups, and why others are kept whole (one note per reason and module)."""
        excluded_set = set(excluded)
        found: list[ChannelGroup] = []
        notes: list[str] = []
        seen: set[nn.Module] = set()
        # A channel pad's selection (channel_pads.py) roots a group only when no layer of the model
        # writes that stream (its channels are then the pad's copies and zeros alone).
        roots = sorted(self.dg.module2node, key=is_selection)
        for root in roots:
            if not isinstance(root, ROOT_TYPES) or root in seen or root in excluded_set:
                continue
            pruner = self.dg.get_pruner_of_module(root)
            if pruner is None or pruner.get_out_channels(root) is None:
                continue
            name = self.names.get(root, "?")
            try:
                with _time_limit(GROUP_SECONDS, name, root):
                    tp_group = self.dg.get_pruning_group(
                        root, pruner.prune_out_channels, list(range(pruner.get_out_channels(root)))
                    )
            except EdgeportError:
                raise
            except Exception as exc:  # noqa: BLE001 - torch-pruning's index maps fail on this coupling
                why = exception_line(exc)
                notes.append(f"{name}: kept whole, the dependency analysis fails on its channels ({why})")
                continue
            modules = [dep.target.module for dep, _ in tp_group if isinstance(dep.target.module, nn.Module)]
            seen.update(m for dep, _ in tp_group if self.is_out(dep.handler) for m in [dep.target.module])
            if self._touches_output(tp_group):
                continue  # a model output's channels are the model's interface
            if any(m in excluded_set for m in modules):
                continue
            whole = next((m for m in modules if isinstance(m, KEPT_WHOLE_TYPES)), None)
            if whole is not None:
                notes.append(_kept_whole_note(name, self.names.get(whole, "?"), whole))
                continue
            channels = int(pruner.get_out_channels(root))
            repeats = max([1] + [self._channel_groups(m) for m in modules])
            # A split whose parts meet again (chunk + add) couples channel i with i + channels / k:
            # torch-pruning removes the partners itself.
            coupled = sorted(mapped(self.dg.get_pruning_group(root, pruner.prune_out_channels, [0])[0].idxs))
            expands = len(coupled) > 1
            if expands:
                step = channels // len(coupled)
                if repeats > 1 or coupled != [k * step for k in range(len(coupled))]:
                    notes.append(f"{name}: kept whole, its channels are coupled in a pattern not handled yet")
                    continue
                repeats = len(coupled)
            if channels % repeats:
                notes.append(f"{name}: kept whole, {channels} channels in {repeats} groups do not divide")
                continue
            found.append(
                ChannelGroup(
                    name=name,
                    root=root,
                    channels=channels,
                    repeats=repeats,
                    expands=expands,
                    out_modules=_names(self.names, tp_group, self, out=True),
                    in_modules=_names(self.names, tp_group, self, out=False),
                    in_counts=self._in_counts(tp_group),
                )
            )
        return found, notes


# Why the channels an attention reads and writes are kept whole. nn.MultiheadAttention's embedding
# is both its input and output width and, in a transformer, the residual stream LayerNorm normalizes
# over every channel: removing channels there changes the ones kept (no removal the cut-vs-zero check
# could accept), and torch-pruning's head pruning (prune_num_heads / prune_head_dims) narrows exactly
# that stream. Whole heads are pruned inside the attention instead (heads.py).
ATTENTION_WHY = (
    "the embedding it reads and writes is the LayerNorm-ed stream, where removing channels changes the "
    "ones kept; its heads are pruned inside it instead"
)


def _kept_whole_note(group: str, name: str, module: nn.Module) -> str:
    if isinstance(module, nn.MultiheadAttention):
        return f"{group}: kept whole, its channels are the embedding of {name} (attention): {ATTENTION_WHY}"
    return f"{group}: kept whole, its channels reach {name} ({type(module).__name__}), a recurrent layer"


def _names(names: dict[nn.Module, str], tp_group: Any, graph: Graph, out: bool) -> list[str]:
    result: list[str] = []
    for dep, _ in tp_group:
        module = dep.target.module
        if isinstance(module, nn.Module) and module in names and graph.is_out(dep.handler) == out:
            if names[module] not in result:
                result.append(names[module])
    return result


def mapped(idxs: Sequence[Any]) -> list[int]:
    """torch-pruning's indices as plain ints (some versions wrap them with their root index)."""
    return [int(getattr(i, "idx", i)) for i in idxs]
