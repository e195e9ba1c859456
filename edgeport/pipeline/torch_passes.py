"""The PyTorch passes, in the order they run on the loaded module, before the ONNX export.

A PyTorch pass is one module with a function `(TorchModel) -> (TorchModel, PassReport)` plus one line
in TORCH_PASSES (and, when it runs only if asked, one in ASKED). The passes run on a deep copy of the
loaded module: the original stays the distillation input, so a pass that changes weights in place
cannot change what it is compared with. A pass that changes the model's function on purpose (pruning)
records its own fidelity against the loaded model and hands its result on as `reference`: the
conversion is then verified against the model it converts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgeport.options import flag_spell
from edgeport.pipeline.passes import Pass, PassReport
from edgeport.tempdirs import tempdir
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

    state = model.state
    options = state.options.prune
    assert options is not None, "asked only with --prune"
    check_later_files(model)
    exporter = prune_exporter(state.options.opset)
    # An ONNX source is pruned as a module (quant/prune/onnx_source.py) and handed on re-exported.
    graph = model.module if isinstance(model.module, onnx.ModelProto) else None
    module = _onnx_module(graph, model) if graph is not None else model.module
    result = prune_module(
        module,
        model.specs,
        model.input_stats,
        options,
        state.step,
        flag_spell(PruneOptions),
        exporter=exporter,
    )
    result.section.record(state.manifest)
    pruned = result.module
    if graph is not None:
        pruned = reexported(result.module, model.specs, exporter)
    model.module = model.reference = pruned
    # An ONNX source's module says how its graph became one (a quantized graph pruned as float).
    notes = [*module.notes, *result.notes] if graph is not None else result.notes
    return model, PruneReport(summary=result.section.describe(), notes=notes)


def check_later_files(model: TorchModel) -> None:
    """Refuse the files the stages after the PyTorch passes read (--calibration: the quantize stage)
    before a pass that takes minutes (pruning); the export stage checks them again for a conversion
    without passes. Checked on the names the export gives the inputs (--input-name renames an ONNX
    source's)."""
    from edgeport.quant.calibration import check_calibration_inputs

    opts = model.state.options
    calibration = opts.quantize.calibration if opts.quantize is not None else None
    names = opts.input_names if len(opts.input_names) == len(model.specs) else [s.name for s in model.specs]
    shapes = {name: s.shape for name, s in zip(names, model.specs, strict=True)}
    check_calibration_inputs(calibration, shapes, opts.keep_nchw)


@dataclass(frozen=True)
class PruneExporter:
    """quant/prune/export.py's Exporter: the module exported as the export stage exports it, and a
    float32 .tflite made of it through the ONNX passes and onnx2tf as convert makes it (without its
    verification or float16 model)."""

    opset: int

    def graph(self, module: Any, inputs: Sequence[Any], names: Sequence[str]) -> Any:
        from edgeport.converters.torch_to_onnx import export_onnx

        with tempdir("prune") as workdir:
            return export_onnx(
                module,
                [x[:1] for x in inputs],
                workdir / "m.onnx",
                list(names),
                self.opset,
                fold_constants=False,
            )

    def float_tflite(self, graph: Any) -> bytes:
        import onnx

        from edgeport.converters import onnx_prepare
        from edgeport.converters.onnx_to_tflite import keras_to_tflite, onnx_to_keras
        from edgeport.converters.rewrites import onnx2tf_options_for
        from edgeport.pipeline.onnx_passes import ONNX_PASSES
        from edgeport.pipeline.passes import run_passes

        passed, _, _ = run_passes(ONNX_PASSES, graph, (), "ONNX")
        with tempdir("prune") as workdir:
            path = workdir / "model.onnx"
            onnx.save(passed, str(path))
            keras = onnx_to_keras(
                path, workdir, onnx_prepare.channels_first_inputs(passed), False, onnx2tf_options_for(passed)
            )
            return keras_to_tflite(keras.model, "float32")


def prune_exporter(opset: int | None = None) -> PruneExporter:
    """The exporter pruning is handed (edgeport.quant.prune.prune_module(..., exporter=)): the one
    an API caller passes to count MACs on the exported graph or to prune for a latency target."""
    from edgeport.converters.torch_to_onnx import DEFAULT_OPSET

    return PruneExporter(DEFAULT_OPSET if opset is None else opset)


def reexported(module: Any, specs: Sequence[TensorSpec], exporter: PruneExporter) -> Any:
    """A pruned ONNX source (quant/prune/onnx_source.py's module) exported to ONNX under the source's
    input and output names (BatchNorms kept as nodes, as the export stage leaves them for the ONNX
    passes to fold)."""
    import torch

    from edgeport.converters.onnx_prepare import rename_io
    from edgeport.tensors import random_inputs

    (sample,) = random_inputs(specs, 1, 0)
    inputs = [torch.from_numpy(sample[s.name]) for s in specs]
    graph = exporter.graph(module, inputs, [s.name for s in specs])
    outputs = [o.name for o in graph.graph.output]
    return rename_io(graph, dict(zip(outputs, module.output_names, strict=True)))


def _onnx_module(graph: Any, model: TorchModel) -> Any:
    from edgeport.converters.onnx_prepare import fix_input_shapes
    from edgeport.converters.verify import scale_floors
    from edgeport.quant.prune.onnx_source import prunable_module

    fixed = fix_input_shapes(graph, [s.shape for s in model.specs])
    return prunable_module(fixed, model.specs, scale_floors(fixed))


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
