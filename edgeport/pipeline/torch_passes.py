"""The PyTorch passes, in the order they run on the loaded module, before the ONNX export.

A PyTorch pass is one module with a function `(TorchModel) -> (TorchModel, PassReport)` plus one line
in TORCH_PASSES (and, when it runs only if asked, one in ASKED). The passes run on a deep copy of the
loaded module: the original stays the distillation input, so a pass that changes weights in place
cannot change what it is compared with. A pass that changes the model's function on purpose (pruning)
records its own fidelity against the loaded model and hands its result on as `reference`: the
conversion is then verified against the model it converts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeport.options import flag_spell
from edgeport.pipeline.passes import Pass, PassReport
from edgeport.tensors import TensorSpec

if TYPE_CHECKING:
    from edgeport.converters.sources import LoadedSource
    from edgeport.pipeline.state import ConvertOptions, ConvertState


@dataclass
class TorchModel:
    """What a PyTorch pass works on: the module (a copy), the conversion, the inputs it will be
    exported with (source layout) and what their values look like."""

    module: Any
    state: ConvertState
    specs: list[TensorSpec]
    input_stats: dict[str, Any]  # name -> quant.input_stats.InputStats
    reference: Any = None  # the model the conversion is verified against (set by a pass that changes it)


class PruneReport(PassReport):
    name: str = "prune"
    summary: str
    notes: list[str] = []

    def headline(self) -> str:
        return self.summary

    def warnings_(self) -> list[str]:
        return list(self.notes)


def _prune(model: TorchModel) -> tuple[TorchModel, PassReport]:
    import onnx

    from edgeport.quant.prune import PruneOptions, prune_module

    options = model.state.options.prune
    assert options is not None, "asked only with --prune"
    # An ONNX source is pruned as a module (quant/prune/onnx_source.py) and handed on re-exported.
    graph = model.module if isinstance(model.module, onnx.ModelProto) else None
    module = _onnx_module(graph, model) if graph is not None else model.module
    result = prune_module(
        module, model.specs, model.input_stats, options, model.state.step, flag_spell(PruneOptions)
    )
    result.section.record(model.state.manifest)
    pruned = result.module
    if graph is not None:
        from edgeport.quant.prune.onnx_source import reexported

        pruned = reexported(result.module, model.specs, model.state.options.opset)
    model.module = model.reference = pruned
    return model, PruneReport(summary=result.section.describe(), notes=result.notes)


def _onnx_module(graph: Any, model: TorchModel) -> Any:
    from edgeport.converters.onnx_prepare import fix_input_shapes
    from edgeport.quant.prune.onnx_source import prunable_module

    return prunable_module(fix_input_shapes(graph, [s.shape for s in model.specs]))


TORCH_PASSES: list[Pass[TorchModel]] = [
    Pass(
        "prune",
        "structured pruning without data, with --prune RATIO (quant/prune/)",
        _prune,
    ),
]
# Passes that run only when an option asks for them.
ASKED: dict[str, Callable[[ConvertOptions], bool]] = {"prune": lambda options: options.prune is not None}


# Passes that also take an ONNX source (through quant/onnx_torch.py's evaluator).
ONNX_SOURCE: set[str] = {"prune"}


def asked_torch_passes(
    options: ConvertOptions, source: LoadedSource, registry: list[Pass[TorchModel]] = TORCH_PASSES
) -> list[Pass[TorchModel]]:
    """The passes of `registry` this conversion runs (skipped ones included: the stage reports them)."""
    asked = [p for p in registry if ASKED.get(p.name, lambda _o: True)(options)]
    if not source.is_torch:
        return [p for p in asked if p.name in ONNX_SOURCE and p.name in ASKED]
    return asked
