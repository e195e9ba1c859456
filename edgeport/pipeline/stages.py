"""The stages of `edgeport convert`, in order; each reads and writes the ConvertState only.

load -> PyTorch passes -> export -> ONNX passes -> tflite -> verify -> quantize -> manifest. The float
models are verified before the quantize stage (which verifies its own model in LiteRT and TFLite
Micro): a model that does not convert in float is refused before minutes of calibration.
A stage that runs third-party converters (onnx2tf, TensorFlow) turns anything they raise into a
conversion error naming the stage and, where bisection finds it, the ONNX node.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edgeport.agreement import compare
from edgeport.converters import onnx_prepare
from edgeport.converters.layer_names import name_layers
from edgeport.converters.localize import NotLocalized, first_diverging_node, prefix_diverges
from edgeport.converters.onnx_to_tflite import (
    KerasResult,
    keras_to_tflite,
    onnx_to_keras,
    wrap_keep_nchw,
)
from edgeport.converters.rewrites import onnx2tf_options_for
from edgeport.converters.sources import LoadedSource, load_source
from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.converters.verify import (
    check_reference,
    check_weights,
    model_inputs,
    run_torch,
    scale_floors,
    verification_failure,
)
from edgeport.errors import EdgeportError, exception_line
from edgeport.manifest import Manifest, PassEntry, StageError, Verification, tool_versions
from edgeport.options import flag_spell
from edgeport.pipeline import artifacts
from edgeport.pipeline import fold_fixed_inputs as fixed
from edgeport.pipeline.onnx_passes import ONNX_PASSES, RewriteReport, manifest_entries, reference_model
from edgeport.pipeline.passes import run_passes
from edgeport.pipeline.state import ConvertOptions, ConvertState
from edgeport.pipeline.torch_passes import TORCH_PASSES, TorchModel, asked_torch_passes
from edgeport.quant.calibration import check_calibration_inputs
from edgeport.quant.input_stats import (
    InputStats,
    infer_input_stats,
    resolve_input_stats,
    verification_sample_kinds,
    verification_samples,
    with_fixed_values,
)
from edgeport.quant.modes import quantize_stage
from edgeport.quant.section import LayerSqnr
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.runtimes.onnxrt import run_onnx, run_source
from edgeport.tensors import TensorSpec, random_inputs

FLOAT32_TOLERANCE = 1e-4  # issue #2: float32 .tflite must match the reference to this relative error
VERIFY_SAMPLES = 3
VERIFY_SEED = 0
TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy")
# The input options' names in the errors raised once the model's inputs are known.
_SPELL = flag_spell(ConvertOptions)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[ConvertState], None]
    when: Callable[[ConvertState], bool] = lambda _state: True
    # Turns an exception raised inside third-party code during `run` into the user's error.
    failure: Callable[[ConvertState, Exception], EdgeportError] | None = None


# 1. load
def load(state: ConvertState) -> None:
    opts = state.options
    source = load_source(opts.source, opts.weights, opts.trust_pickle)
    state.source = source
    state.reference = source.module if source.is_torch else source.onnx_model
    state.module = source.module
    state.manifest = Manifest(command="convert", tools=tool_versions(*TOOLS))
    state.manifest.set_source(source.path, source.kind, opts.source)
    if source.warnings:
        state.manifest.source.warnings = list(source.warnings)


# 2. PyTorch passes
def _torch_passes_to_run(state: ConvertState) -> bool:
    skip = state.options.skipped()
    asked = asked_torch_passes(state.options, _source(state), TORCH_PASSES)  # refuses --prune on ONNX
    return any(p.name not in skip for p in asked)


def torch_passes(state: ConvertState) -> None:
    source, opts = _source(state), state.options
    if source.is_torch:
        shapes = _reference_inputs(source, opts)
        specs = [
            TensorSpec(n, sh) for n, sh in zip(_input_names(source, len(shapes), opts), shapes, strict=True)
        ]
    else:  # pruning an ONNX source: the graph's own inputs (--input-name renames them at export)
        specs = _onnx_input_specs(onnx_prepare.fix_input_shapes(source.onnx_model, opts.input_shapes))
    module = copy.deepcopy(state.reference)  # the reference must not see what the passes change
    model = TorchModel(module, state, specs, _user_input_stats(opts, specs, {}))
    passes = asked_torch_passes(opts, source, TORCH_PASSES)
    model, reports, skipped = run_passes(passes, model, opts.skipped(), "PyTorch")
    state.module = model.module
    state.reference = model.reference if model.reference is not None else state.reference
    state.pass_reports += reports
    state.skipped_passes += [p.name for p in skipped]


# 3. export
def export(state: ConvertState) -> None:
    source, opts = _source(state), state.options
    if source.is_torch:
        import torch

        shapes = _reference_inputs(source, opts)
        names = _input_names(source, len(shapes), opts)
        check_calibration_inputs(_calibration(opts), dict(zip(names, shapes, strict=True)), opts.keep_nchw)
        specs = [TensorSpec(n, sh) for n, sh in zip(names, shapes, strict=True)]
        # Traced with the fixed values (--input-value): a branch on a sample rate follows the real one.
        (sample,) = random_inputs(specs, 1, VERIFY_SEED)
        sample = with_fixed_values(sample, specs, _user_input_stats(opts, specs, {}))
        # BNs stay nodes at export: fold_batch_norms is the one place they are folded (the
        # exporter would fuse only Conv+BN, and silently), so the manifest accounts for each.
        model = export_onnx(
            state.module,
            [torch.from_numpy(sample[n]) for n in names],
            state.onnx_path,
            names,
            opts.opset,
            fold_constants=False,
        )
        model = onnx_prepare.fix_input_shapes(model, shapes)
    else:  # the source, or what the PyTorch passes made of it (pruned)
        model = onnx_prepare.fix_input_shapes(state.reference, opts.input_shapes)
        if opts.input_names:
            current = list(onnx_prepare.input_shapes_of(model))
            model = onnx_prepare.rename_io(
                model, dict(zip(current, _input_names(source, len(current), opts), strict=True))
            )
        check_calibration_inputs(_calibration(opts), onnx_prepare.input_shapes_of(model), opts.keep_nchw)
        _user_input_stats(opts, _onnx_input_specs(model), {})  # refused here, before any slow stage
    state.exported = model


def _calibration(opts: ConvertOptions) -> Path | None:
    """--calibration: checked before export and onnx2tf, which take most of a conversion's time."""
    return opts.quantize.calibration if opts.quantize is not None else None


# 4. ONNX passes
def onnx_passes(state: ConvertState) -> None:
    check_weights(_exported(state))  # NaN weights give NaN outputs everywhere, which nothing can verify
    model = onnx.ModelProto()
    model.CopyFrom(_exported(state))  # later stages read the graph as exported (unfolded BNs)
    if fixed.NAME not in state.options.skipped():  # --input-value inputs get the default it folds
        specs = _onnx_input_specs(model)
        model = fixed.with_defaults(
            model, with_fixed_values({}, specs, _user_input_stats(state.options, specs, {}))
        )
    model, reports, skipped = run_passes(ONNX_PASSES, model, state.options.skipped(), "ONNX")
    options = onnx2tf_options_for(model)
    for entry in skipped:
        options.update(entry.options_when_skipped)
    state.model, state.onnx2tf_options = model, options
    state.pass_reports += reports
    state.skipped_passes += [p.name for p in skipped]
    entries = manifest_entries(reports, state.skipped_passes, options)
    state.manifest.passes = [PassEntry.model_validate(e.entry()) for e in entries]
    onnx.save(model, str(state.onnx_path))


# 5. reference
def reference(state: ConvertState) -> None:
    """The source model on the verification inputs, before the slow conversion: a model that gives
    NaN or inf itself is refused here, not after onnx2tf."""
    model = _exported(state)
    specs = _onnx_input_specs(model)
    state.input_stats = _input_stats(state, specs)
    state.samples = verification_samples(specs, VERIFY_SAMPLES, VERIFY_SEED, state.input_stats)
    if _source(state).is_torch:
        outputs = [o.name for o in model.graph.output]
        state.reference_outputs = run_torch(state.reference, state.samples, [s.name for s in specs], outputs)
        state.reference_name = "pytorch"
    else:  # the source as the passes that change its function leave it (a QDQ model as float)
        model, changed = reference_model(model, state.skipped_passes)
        state.reference_outputs = run_source(model.SerializeToString(), state.samples)
        state.reference_name = f"onnx (source{''.join(f' after {name}' for name in changed)})"
    notes = [note for report in state.pass_reports for note in report.warnings_()]
    check_reference(state.reference_outputs, state.reference_name, notes)


# 6. tflite
def tflite(state: ConvertState) -> None:
    opts, model = state.options, _model(state)
    state.image_inputs = onnx_prepare.channels_first_inputs(model)
    workdir = state.stage_dir / ".work"
    workdir.mkdir()
    keras = onnx_to_keras(
        state.onnx_path, workdir, state.image_inputs, opts.keep_nchw, state.onnx2tf_options, opts.debug
    )
    state.keras = keras
    state.keras_model = wrap_keep_nchw(keras) if opts.keep_nchw else keras.model
    for precision in ("float32", "float16"):
        path = state.stage_dir / f"model_{precision}.tflite"
        path.write_bytes(keras_to_tflite(state.keras_model, precision))
        state.tflite_paths[precision] = path
    shutil.rmtree(workdir, ignore_errors=True)
    state.in_specs, state.out_specs = _io_specs(model, keras, opts.keep_nchw)


def _tflite_failure(state: ConvertState, exc: Exception) -> EdgeportError:
    what = exc.problem if isinstance(exc, EdgeportError) else exception_line(exc)
    where = _locate_crash(state)
    rewrites = [r.name for r in state.pass_reports if isinstance(r, RewriteReport) and r.applied]
    skip = f"--skip-pass {rewrites[-1]}" if rewrites else "--skip-pass NAME (edgeport convert --list-passes)"
    return EdgeportError(
        f"the model does not convert to TFLite{where}: {what}",
        f"rerun with --debug for the traceback; --keep-nchw or {skip} sometimes avoid it; "
        "otherwise report the model",
    )


def _locate_crash(state: ConvertState) -> str:
    """`, at ONNX node NAME (Op)` for the first node whose prefix does not convert, or ""."""
    model = _model(state)
    specs = _onnx_input_specs(model)
    samples = random_inputs(specs, 1, VERIFY_SEED)
    args = (samples, specs, state.image_inputs, state.onnx2tf_options, FLOAT32_TOLERANCE)
    outputs = [o.name for o in model.graph.output]
    try:
        # Bisection assumes the output it starts from fails: checked, since the failure may lie in
        # what only the full conversion does (float16, the Keras wrapper), where no node is to blame.
        failing = next((o for o in outputs if prefix_diverges(model, o, *args)), None)
        node = first_diverging_node(model, *args, failing) if failing else None
    except NotLocalized as err:
        return f" (the failing node could not be localized: {err})"
    except Exception as err:  # noqa: BLE001 - the diagnosis must not hide the failure it diagnoses
        return f" (the failing node could not be localized: the search failed with {type(err).__name__})"
    return f" at ONNX node {node}" if node else ""


# 7. verify
def verify(state: ConvertState) -> None:
    model = _model(state)
    state.manifest.verification, state.tflite_names = _verify(state)
    # The reference's inputs: a fixed input folded into the model is still named (sr = 16000).
    specs = _onnx_input_specs(_exported(state))
    kinds = verification_sample_kinds(specs, VERIFY_SAMPLES, state.input_stats)
    state.manifest.verification.inputs = kinds
    failed = [e for e in state.manifest.verification.errors if _diverges(e)]
    if failed:
        first = failed[0]
        where = ""
        if first.stage == "tflite_float32" and first.problem is None:
            try:
                node = first_diverging_node(
                    model,
                    model_inputs(state.samples, state.in_specs),
                    state.in_specs,
                    state.image_inputs,
                    state.onnx2tf_options,
                    FLOAT32_TOLERANCE,
                    first.output,
                )
                where = f", first diverging ONNX node {node}" if node else ""
            except NotLocalized as err:
                where = f" (the diverging node could not be localized: {err})"
        notes = [note for report in state.pass_reports for note in report.warnings_()]
        raise verification_failure(
            first, state.manifest.verification.reference, FLOAT32_TOLERANCE, where, notes
        )


# 8. quantize
def quantize(state: ConvertState) -> None:
    assert state.options.quantize is not None
    result = quantize_stage(state.options.quantize, state, state.stage_dir, state.options.skipped())
    state.quantized = result
    fidelity = result.section.fidelity
    if state.keras_model is not None:
        # The user's layer names beside TensorFlow's (converters/layer_names.py).
        source = _source(state)
        modules = {name for name, _ in source.module.named_modules() if name} if source.is_torch else None
        named = name_layers(
            [layer.model_dump() for layer in fidelity.worst_layers], state.keras_model, _model(state), modules
        )
        fidelity.worst_layers = [LayerSqnr.model_validate(layer) for layer in named]
    result.section.record(state.manifest)
    state.tflite_paths[result.precision] = result.path
    state.tflite_names[result.precision] = result.tensor_names


def _quantize_failure(state: ConvertState, exc: Exception) -> EdgeportError:
    mode = state.options.quantize.mode if state.options.quantize else "?"
    return EdgeportError(
        f"quantizing to {mode} failed ({exception_line(exc)})",
        "rerun with --debug for the traceback and report the model; without --quantize the float "
        "models convert",
    )


# 9. manifest
def manifest(state: ConvertState) -> None:
    opts, man, stage = state.options, state.manifest, state.stage_dir
    man.layout = artifacts.model_layout(state.in_specs, opts.keep_nchw)
    onnx_in = artifacts.source_infos(state.in_specs, opts.keep_nchw)
    onnx_out = artifacts.source_infos(state.out_specs, opts.keep_nchw)
    man.artifacts.append(artifacts.artifact(state.onnx_path, stage, "onnx", "float32", onnx_in, onnx_out))
    specs = state.in_specs + state.out_specs
    for precision, path in state.tflite_paths.items():
        ins, outs = artifacts.tflite_infos(path, specs, state.tflite_names[precision], opts.keep_nchw)
        man.artifacts.append(artifacts.artifact(path, stage, "tflite", precision, ins, outs))
    for name, seconds in state.timings.items():
        man.run.seconds[f"stage {name}"] = round(seconds, 2)
    man.write(stage)


STAGES: tuple[Stage, ...] = (
    Stage("load", load),
    Stage("pytorch passes", torch_passes, when=_torch_passes_to_run),
    Stage("export", export),
    Stage("onnx passes", onnx_passes),
    Stage("reference", reference),
    Stage("tflite", tflite, failure=_tflite_failure),
    Stage("verify", verify),
    Stage(
        "quantize", quantize, when=lambda state: state.options.quantize is not None, failure=_quantize_failure
    ),
    Stage("manifest", manifest),
)


def _source(state: ConvertState) -> LoadedSource:
    assert state.source is not None, "the load stage runs first"
    return state.source


def _input_stats(state: ConvertState, specs: list[TensorSpec]) -> dict[str, InputStats]:
    """What the inputs' values look like (--input-value/--input-range/--mean/--std, else the graph):
    verification inputs then cover them, not only N(0, 1), and calibration draws from them."""
    return _user_input_stats(state.options, specs, infer_input_stats(_exported(state)))


def _user_input_stats(
    opts: ConvertOptions, specs: list[TensorSpec], inferred: dict[str, InputStats]
) -> dict[str, InputStats]:
    return resolve_input_stats(
        specs, inferred, opts.input_range, opts.mean, opts.std, opts.input_values, _SPELL
    )


def _exported(state: ConvertState) -> onnx.ModelProto:
    assert state.exported is not None, "the export stage runs first"
    return state.exported


def _model(state: ConvertState) -> onnx.ModelProto:
    assert state.model is not None, "the ONNX passes stage runs first"
    return state.model


def _reference_inputs(source: LoadedSource, opts: ConvertOptions) -> list[list[int]]:
    shapes = opts.input_shapes or source.example_shapes
    if source.is_torch and not shapes:
        raise EdgeportError(
            "a PyTorch model needs its input shapes",
            "pass --input-shape once per forward() argument, e.g. --input-shape 1,3,224,224",
        )
    if source.is_torch and source.forward_arg_names and len(shapes) != len(source.forward_arg_names):
        raise EdgeportError(
            f"forward() takes {len(source.forward_arg_names)} input(s) "
            f"({', '.join(source.forward_arg_names)}) but {len(shapes)} --input-shape given",
            "give one --input-shape per forward() argument, in order",
        )
    return shapes


def _input_names(source: LoadedSource, count: int, opts: ConvertOptions) -> list[str]:
    if opts.input_names:
        if len(opts.input_names) != count:
            raise EdgeportError(
                f"{len(opts.input_names)} --input-name given for {count} input(s)", "give one per input"
            )
        return list(opts.input_names)
    if len(source.forward_arg_names) == count:
        return list(source.forward_arg_names)
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _diverges(error: StageError) -> bool:
    """ONNX and float32 TFLite must match the reference; float16 is reported, not enforced."""
    enforced = error.stage in ("onnx", "tflite_float32") and not error.max_rel_error < FLOAT32_TOLERANCE
    return enforced or error.problem is not None  # NaN/inf or a shape mismatch fails any stage


def _onnx_input_specs(model: onnx.ModelProto) -> list[TensorSpec]:
    """The graph's inputs in the source layout (fixed shapes, as the ONNX passes left them)."""
    elem_types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    return [
        TensorSpec(name, [int(d) for d in dims], _np_dtype(elem_types[name]))
        for name, dims in onnx_prepare.input_shapes_of(model).items()
    ]


def _io_specs(
    model: onnx.ModelProto, keras: KerasResult, keep_nchw: bool
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs in the source layout, marked where the .tflite holds them channels-last."""
    in_specs = [
        TensorSpec(s.name, s.shape, s.dtype, channels_last=keras.input_channels_last.get(s.name, False))
        for s in _onnx_input_specs(model)
    ]
    out_specs = [
        TensorSpec(
            o.name,
            [d.dim_value for d in o.type.tensor_type.shape.dim],
            _np_dtype(o.type.tensor_type.elem_type),
            channels_last=keras.output_channels_last.get(o.name, False) and not keep_nchw,
        )
        for o in model.graph.output
    ]
    return in_specs, out_specs


def _verify(state: ConvertState) -> tuple[Verification, dict[str, dict[str, str]]]:
    """Every stage against the reference on the same samples; also each .tflite's tensor names."""
    in_specs, out_specs = state.in_specs, state.out_specs
    samples = model_inputs(state.samples, in_specs)  # the reference's inputs may include folded ones
    # The reference is the source as loaded (the ONNX source too, not model.onnx; a QDQ one as float:
    # reference_model), so the ONNX passes are verified as well.
    reference, ref_name = state.reference_outputs, state.reference_name
    floors = scale_floors(state.model)  # a probability map near 0 is judged against its scale, 1
    errors = compare("onnx", reference, run_onnx(state.onnx_path.read_bytes(), samples), floors)
    tflite_names: dict[str, dict[str, str]] = {}
    for precision, path in state.tflite_paths.items():
        try:
            runner = LiteRTRunner(path.read_bytes(), in_specs, out_specs)
            outputs = [runner.run(s) for s in samples]
        except (RuntimeError, ValueError) as exc:
            raise EdgeportError(
                f"the converted {path.name} does not run in LiteRT ({str(exc).splitlines()[0][:160]})",
                "rerun with --debug and report the model; --keep-nchw sometimes avoids a layout bug",
            ) from exc
        tflite_names[precision] = runner.tensor_names()
        errors += compare(f"tflite_{precision}", reference, outputs, floors)
    passed = not any(_diverges(e) for e in errors)
    verification = Verification(
        reference=ref_name,
        num_samples=len(samples),
        seed=VERIFY_SEED,
        tolerance_rel=FLOAT32_TOLERANCE,
        passed=passed,
        errors=errors,
    )
    return verification, tflite_names


def _np_dtype(elem_type: int) -> str:
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))
