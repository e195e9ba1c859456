"""`edgeport convert --quantize MODE`: calibrate, quantize, verify in LiteRT and TFLite Micro, report.

One call from the pipeline (`quantize_stage`) after the float .tflite is verified; it reads what it
needs from the conversion through the FloatModel protocol. For int8 it
builds the calibration set (quant/calibration.py), has the TFLite converter quantize the Keras model
(quant/int8.py), checks the result is full-integer, runs it in LiteRT and in the TFLite Micro
runtime on the same raw inputs (quant/tflm_check.py), and measures its fidelity against the float
model (quant/fidelity.py). Everything it measured goes into the manifest's `quantization` section.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgeport.errors import EdgeportError
from edgeport.options import Options, Spell, cli, refuse_without, spell_of, validate_options
from edgeport.quant.a16w8 import ACTIVATIONS as A16W8_ACTIVATIONS
from edgeport.quant.a16w8 import TENSOR_TYPES as A16W8_TENSOR_TYPES
from edgeport.quant.a16w8 import WEIGHTS as A16W8_WEIGHTS
from edgeport.quant.a16w8 import io_type, keras_to_a16w8, plan_a16w8_for_tflm
from edgeport.quant.calibration import (
    CLIP_SIGMAS,
    DISTILL_STEPS,
    METHODS,
    gaussian_samples,
    has_batchnorm,
    make_calibration,
)
from edgeport.quant.cluster import MAX_CLUSTERS, MIN_CLUSTERS, cluster_weights
from edgeport.quant.cost import DISTILL_BUDGET, MIN_DISTILL_STEPS, step_work, steps_within
from edgeport.quant.fidelity import fidelity_report
from edgeport.quant.input_stats import InputStats, integer_samples
from edgeport.quant.int4 import ROUNDINGS, to_w4a8
from edgeport.quant.int8 import keras_to_quantized, probe_quantizer, quantizer_kept_float
from edgeport.quant.mixed import budget_problem, fit_flash_budget, parse_size
from edgeport.quant.ranges import RANGE_METHODS
from edgeport.quant.section import QuantSection
from edgeport.quant.tflm_check import TflmComparison, compare_raw
from edgeport.quant.tflm_ops import (
    TflmPlan,
    arena_for,
    plan_int8_for_tflm,
    refuse_skipped_replacements,
    replacement_notes,
)
from edgeport.quant.tflm_pad_value import pad_value_problem
from edgeport.quant.tflm_saturation import clamp_note, saturation_problem
from edgeport.runtimes.litert import LiteRTRunner, check_allocates, match_signature
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import parse_tflite, tensor_name, type_name

MODES = ("int8", "w8a8", "w4a8", "a16w8", "dynamic", "float16")
ALIASES = {"w8a8": "int8"}
# Mode -> the file it writes. float16 writes nothing new: model_float16.tflite is always written
# (and verified) by the converter; the mode adds its fidelity report to the manifest.
MODE_FILES = {
    "int8": "model_int8.tflite",
    "w4a8": "model_w4a8.tflite",
    "a16w8": "model_a16w8.tflite",
    "dynamic": "model_dynamic.tflite",
    "float16": "model_float16.tflite",
}
IO_TYPES = ("int8", "float")
# Tensor types of a full-integer int8 model; bool: what a comparison (GREATER_EQUAL, ...) returns.
INT8_TENSOR_TYPES = ("int8", "int32", "bool")
CALIBRATION_SAMPLES = 64
HELD_OUT_SAMPLES = 16
TFLM_SAMPLES = 4
# Synthetic samples the pre-calibration TFLite Micro probe is quantized from: the probe checks which
# kernels run, not accuracy.
TFLM_PROBE_SAMPLES = 2
# TFLM vs the reference. TFLite Micro's kernels and TensorFlow 2.19's TFLite reference kernels
# (BUILTIN_REF) requantize with the same arithmetic (gemmlowp's doubling high multiply and rounding
# shift, ties away from zero), so their outputs must be bit-identical: any difference fails the
# conversion (measured: every tensor of ResNet-20, 200 samples of a CNN with a dense head, int8 and
# w4a8). LiteRT's own reference FULLY_CONNECTED requantizes in double precision since April 2025,
# so it is not the reference (quant/int8.py). LiteRT's optimized kernels (what an Android CPU runs)
# round ties upward in CONV_2D and FULLY_CONNECTED (ruy), which differs on negative ties: one step
# in ~0.1 % of the elements of a layer without a fused ReLU, grown to a few steps through residual
# ADDs; that difference is recorded (`litert_optimized_vs_tflm`) and noted (printed) when above one
# step. It never refuses the model: TFLite Micro promises bit-exactness with the reference kernels,
# not with the optimized ones, and an Android user reads the note (issue 10: 32 steps on a detector).
TFLM_EXACT_STEPS = 0
TFLM_NOTE_STEPS = 1
# Ops whose int8 reference kernel is no reference: TensorFlow 2.19's BUILTIN_REF SUM is up to 154 steps
# from the exactly rounded sum, where TFLite Micro's and LiteRT's optimized SUM are exact (measured).
UNRELIABLE_REFERENCE_OPS = {"SUM"}
CALIBRATION_SEED = 0
# Bytes by which the probe's int8 file may differ from the calibrated one's (alignment, a padding
# constant): a flash budget is refused before calibration only when missed by more.
FLASH_SLACK = 1024


class QuantOptions(Options):
    """What `--quantize` and its companion options ask for; the CLI flags are made from these fields."""

    mode: Literal[MODES] = Field(  # type: ignore[valid-type]
        "int8",
        description="Also write a quantized model: int8/w8a8 (full-integer, TFLite Micro), w4a8 (packed "
        "4-bit weights, int8 activations), a16w8 (int16 activations, int8 weights: TFLite Micro's int16 "
        "kernels, where int8 activations lose too much), dynamic (int8 weights, Android CPU) or float16 "
        "(report only: model_float16.tflite is always written).",
        json_schema_extra=cli("--quantize", show_default=False),
    )
    # w4a8: the .tflite size the mixed 4/8-bit model must fit in, bytes (quant/mixed.py); None stores
    # every weight layer in 4 bits.
    flash_budget: int | None = Field(
        None,
        description="w4a8: largest .tflite size, e.g. 200KB (KB = 1024 bytes); the layers whose 4-bit "
        "weights cost least accuracy go to 4 bits until it fits, the rest stay 8-bit.",
        json_schema_extra=cli(text=True, needs="w4a8"),
    )
    # int8: weight clustering stored with TFLite Micro's LUT compression (quant/cluster.py,
    # lut_compression.py).
    weight_clusters: int | None = Field(
        None,
        description="int8: cluster each output channel's weights to N values and store them LUT-compressed "
        "for TFLite Micro (16 = 4-bit indices; the file needs TFLite Micro's DECODE op).",
        json_schema_extra=cli(needs="int8"),
    )
    ranges: Literal[RANGE_METHODS] = Field(  # type: ignore[valid-type]
        "minmax",
        description="How int8 activation ranges are set from the calibration samples.",
        json_schema_extra=cli("--activation-ranges", needs="int8"),
    )
    rounding: Literal[ROUNDINGS] = Field(  # type: ignore[valid-type]
        "squant",
        description="w4a8: how weights are rounded to 4 bits (squant: data-free error balancing).",
        json_schema_extra=cli("--weight-rounding", needs="w4a8"),
    )
    io: Literal[IO_TYPES] = Field(  # type: ignore[valid-type]
        "int8",
        description="int8 model input/output type (int8: integer I/O, which is int16 with a16w8).",
        json_schema_extra=cli(needs="int8"),
    )
    calibration: Path | None = Field(
        None,
        description="Real calibration samples (.npy, .npz or a dir).",
        json_schema_extra=cli(needs="int8"),
    )
    method: Literal[METHODS] = Field(  # type: ignore[valid-type]
        "auto",
        description="How int8 activation ranges are calibrated (auto: data if given, else BN-statistics "
        "distillation).",
        json_schema_extra=cli("--calibration-method", needs="int8"),
    )
    # What the input looks like (--input-range, --mean, --std, --input-value) is ConvertOptions': the
    # float models are verified on it too; this stage reads it as FloatModel.input_stats.
    # API-only (Python callers and the bench).
    samples: int = Field(CALIBRATION_SAMPLES, json_schema_extra=cli(cli=False))
    distill_steps: int | None = Field(None, json_schema_extra=cli(cli=False))
    # Clip synthetic inputs to mean ± clip_sigmas * std when the input range is unknown; None turns
    # it off (quant/calibration.py says why 3).
    clip_sigmas: float | None = Field(CLIP_SIGMAS, json_schema_extra=cli(cli=False))

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, mode: Any, info: ValidationInfo) -> Any:
        if mode not in MODES:
            spell = spell_of(info, cls)
            raise EdgeportError(f"unknown {spell('mode')} mode {mode!r}", f"use one of {', '.join(MODES)}")
        return ALIASES.get(mode, mode)

    @field_validator("flash_budget", mode="before")
    @classmethod
    def _size_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        return parse_size(value, spell_of(info, cls)("flash_budget")) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> QuantOptions:
        check_combinations(self, spell_of(info, type(self)))
        return self


def check_combinations(opts: QuantOptions, spell: Spell) -> None:
    """Options that contradict each other or the mode, refused with the option names as given."""
    mode = opts.mode
    quantize = spell("mode")
    if opts.ranges != "minmax" and mode == "a16w8":
        raise EdgeportError(
            f"{spell('ranges')} {opts.ranges} sets int8 activation ranges; a16w8's int16 ranges are the "
            "calibration min/max",
            f"drop {spell('ranges')} (int16 steps are 256 times finer), or use {quantize} int8",
        )
    if opts.ranges != "minmax" and mode not in ("int8", "w4a8"):
        raise EdgeportError(
            f"{spell('ranges')} {opts.ranges} needs calibrated activations, but {quantize} is {mode}",
            f"use it with {quantize} int8 or w4a8",
        )
    if opts.weight_clusters is not None and mode != "int8":
        raise EdgeportError(
            f"{spell('weight_clusters')} applies to int8 weights, but {quantize} is {mode}",
            f"use {quantize} int8 {spell('weight_clusters')} N (or w4a8 alone for 4-bit weights)",
        )
    if opts.weight_clusters is not None and not MIN_CLUSTERS <= opts.weight_clusters <= MAX_CLUSTERS:
        raise EdgeportError(
            f"{spell('weight_clusters')} {opts.weight_clusters} is out of range",
            f"use {MIN_CLUSTERS}..{MAX_CLUSTERS} (16 = 4-bit indices)",
        )
    if opts.rounding != "squant" and mode != "w4a8":
        raise EdgeportError(
            f"{spell('rounding')} {opts.rounding} applies to 4-bit weights, but {quantize} is {mode}",
            f"add {quantize} w4a8, or drop {spell('rounding')}",
        )
    if opts.flash_budget is not None and mode != "w4a8":
        raise EdgeportError(
            f"{spell('flash_budget')} needs 4-bit weights, but {quantize} is {mode}",
            f"add {quantize} w4a8 (layers stay 8-bit as far as the budget allows)",
        )
    if opts.calibration is not None and opts.method not in ("auto", "data"):
        raise EdgeportError(
            f"{spell('calibration')} data given with {spell('method')} {opts.method}",
            f"drop one of them: data calibration is used whenever {spell('calibration')} is given",
        )


def quant_options(values: Mapping[str, Any], spell: Spell | None = None) -> QuantOptions | None:
    """QuantOptions from what the user gave (flags or keys), None when no mode was given; a companion
    option given without a mode is refused rather than ignored."""
    if values.get("mode") is None:
        refuse_without(QuantOptions, "mode", values, spell)
        return None
    return validate_options(QuantOptions, values, spell)


@dataclass
class QuantResult:
    path: Path
    precision: str
    tensor_names: dict[str, str]  # source name -> tensor name in the .tflite
    section: QuantSection  # the manifest's `quantization` section


def _tensor_types(model: bytes) -> dict[str, int]:
    """How many tensors of each type the model's main subgraph has."""
    counts: dict[str, int] = {}
    for tensor in parse_tflite(model).raw.subgraphs[0].tensors:
        name = type_name(tensor.type)
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))


def _check_full_integer(
    model: bytes, io: str, keep_float: Sequence[str] = (), types: Sequence[str] = INT8_TENSOR_TYPES
) -> None:
    """Every tensor of one of `types` (float only at the I/O boundary with --io float, and around the ops
    named in `keep_float` by output tensor name)."""
    graph = parse_tflite(model).raw.subgraphs[0]
    boundary = set(graph.inputs) | set(graph.outputs)
    names, kept = set(keep_float), set()
    for op in graph.operators:
        if tensor_name(graph.tensors[op.outputs[0]]) in names:
            kept |= set(op.inputs) | set(op.outputs)
    # With float I/O the QUANTIZE/DEQUANTIZE at the boundary touch float tensors; nothing else may.
    for index, tensor in enumerate(graph.tensors):
        name = type_name(tensor.type)
        if name in types:
            continue
        if name == "float32" and (index in kept or (io == "float" and index in boundary)):
            continue
        raise EdgeportError(
            f"the quantized model is not full-integer: tensor {tensor_name(tensor)!r} is {name}",
            "report this model; edgeport expected the converter to quantize every layer",
        )


class FloatModel(Protocol):
    """What the quantize stage reads from the conversion (edgeport.pipeline's state provides it)."""

    @property
    def keras_model(self) -> Any: ...  # what the TFLite converter quantizes

    @property
    def keras_input_names(self) -> list[str]: ...  # ONNX input names, in Keras input order

    @property
    def in_specs(self) -> list[TensorSpec]: ...

    @property
    def out_specs(self) -> list[TensorSpec]: ...

    @property
    def float_tflite(self) -> bytes: ...  # the verified float32 model: the fidelity reference

    @property
    def distill_source(self) -> Any: ...  # torch module or ONNX model with its BatchNorms (distillation)

    @property
    def input_stats(self) -> dict[str, InputStats]: ...  # resolve_input_stats over the unfolded graph

    def step(self, text: str) -> None: ...  # what the stage does now, shown while it runs


def quantize_stage(
    opts: QuantOptions, model: FloatModel, outdir: Path, skipped: Collection[str] = ()
) -> QuantResult:
    """Quantize, verify and write `model_<mode>.tflite` into `outdir`; returns the manifest section.
    `skipped`: the --skip-pass names (OP_REPLACEMENTS' among them apply to the integer modes)."""
    started = time.perf_counter()
    in_specs, out_specs, float_model = model.in_specs, model.out_specs, model.float_tflite
    keras_model = model.keras_model
    by_name = {s.name: s for s in in_specs}
    keras_specs = [by_name[n] for n in model.keras_input_names]
    stats = model.input_stats
    path = outdir / MODE_FILES[opts.mode]
    if opts.mode == "dynamic":
        model.step("quantizing")
        quantized = keras_to_quantized(keras_model, "dynamic", keras_specs)
        path.write_bytes(quantized)
        # The converter quantizes the weights of large layers only (>= 1024 elements); smaller
        # ones stay float32, and tensor_types shows how many of each there are.
        scheme = {
            "weights": "int8 per-channel (symmetric) for layers with >= 1024 weights, else float32",
            "activations": "float32 (hybrid kernels quantize them on the fly, per inference)",
            "tensor_types": _tensor_types(quantized),
        }
    elif opts.mode == "float16":
        # Written and verified by the converter already; this adds the integer modes' fidelity report.
        quantized = path.read_bytes()
        scheme = {
            "weights": "float16 (dequantized to float32 when the model is loaded)",
            "activations": "float32",
        }
    else:
        refuse_skipped_replacements(skipped, float_model, path.name)
        return _integer_stage(
            opts,
            keras_model,
            keras_specs,
            in_specs,
            out_specs,
            float_model,
            path,
            model.distill_source,
            stats,
            model.step,
        )
    # No calibration: the held-out inputs only measure fidelity (input statistics, else N(0, 1)).
    model.step("measuring fidelity")
    held_out = gaussian_samples(in_specs, HELD_OUT_SAMPLES, CALIBRATION_SEED, stats)
    fidelity = fidelity_report(float_model, quantized, in_specs, out_specs, held_out)
    section = QuantSection.model_validate(
        {
            "mode": opts.mode,
            "io": "float",
            **scheme,
            "fidelity": {
                "reference": "model_float32.tflite",
                "inputs": "held-out Gaussian samples with the input statistics",
                **fidelity,
            },
            "seconds": _since(started),
        }
    )
    return QuantResult(path, opts.mode, _names(LiteRTRunner(quantized, in_specs, out_specs)), section)


def _integer_stage(
    opts: QuantOptions,
    keras_model: Any,
    keras_specs: Sequence[TensorSpec],
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    float_model: bytes,
    path: Path,
    module: Any,
    stats: dict[str, InputStats],
    step: Callable[[str], None],
) -> QuantResult:
    """int8 and w4a8 (and clustered int8): calibrate, quantize, check in TFLite Micro, report."""
    started = time.perf_counter()
    # Before calibration (minutes): which ops TFLite Micro cannot run in int8 (kept float or refused).
    plan = _tflm_plan(keras_model, keras_specs, in_specs, out_specs, stats, opts, path.name)
    step("calibrating activation ranges")
    method, distill_steps, cost, skipped = _bounded_distillation(opts, float_model, module, bool(stats))
    steps = {} if distill_steps is None else {"distill_steps": distill_steps}
    cal = make_calibration(
        method,
        in_specs,
        stats,
        module=None if skipped else module,
        data=opts.calibration,
        count=opts.samples,
        held_out=HELD_OUT_SAMPLES,
        seed=CALIBRATION_SEED,
        **steps,
        clip_sigmas=opts.clip_sigmas,
    )
    range_report: dict[str, Any] = {}
    step("quantizing")
    a16 = opts.mode == "a16w8"
    if a16:
        model = keras_to_a16w8(keras_model, keras_specs, cal.samples, opts.io, report=range_report)
    else:
        model = keras_to_quantized(
            keras_model,
            "int8",
            keras_specs,
            cal.samples,
            opts.io,
            ranges=opts.ranges,
            report=range_report,
            keep_float=plan.denylist,
        )
    # Checked before the int4 rewrite, which only turns int8 filters into int4 ones.
    left_float = quantizer_kept_float(model, plan.denylist)
    types = A16W8_TENSOR_TYPES if a16 else INT8_TENSOR_TYPES
    _check_full_integer(model, opts.io, [*plan.denylist, *(k.node for k in left_float)], types)
    if skipped:
        cal.notes.append(skipped)
    cal.notes.extend(k.note() for k in [*plan.kept_float, *left_float])
    cal.notes.extend(replacement_notes(model))  # e.g. GELU's tanh form for TFLite Micro
    if clamped := range_report.get("clamped_for_logistic_tanh"):
        cal.notes.append(clamp_note(clamped["tensors"], clamped["bound"]))
    if plan.inconclusive:
        cal.notes.append(
            "the TFLite Micro probe before calibration was inconclusive "
            f"({plan.inconclusive.rstrip('.')}); TFLite Micro was checked on the calibrated model"
        )
    weights: dict[str, Any] = {"weights": A16W8_WEIGHTS if a16 else "int8 per-channel (symmetric)"}
    if opts.mode == "w4a8":
        step("4-bit weights")
        model, weights = _four_bit_weights(model, float_model, opts, in_specs, out_specs, cal.held_out)
    tensor_types = _tensor_types(model)
    # What TFLite Micro runs can differ from what LiteRT runs: the LUT-compressed file has
    # TFLM_DECODE ops LiteRT lacks (LiteRT runs the clustered model they decode to).
    tflm_model = model
    if opts.weight_clusters is not None:
        step("clustering weights")
        model, tflm_model, weights = _clustered_weights(model, opts.weight_clusters, path.name)
    step("checking in TFLite Micro")
    tflm, optimized = _tflm_agreement(model, tflm_model, in_specs, out_specs, cal.held_out, path.name)
    note = optimized_kernels_note(optimized, reference_checked=tflm is not None)
    if note:
        cal.notes.append(note)
    step("measuring fidelity")
    fidelity = fidelity_report(float_model, model, in_specs, out_specs, cal.held_out)
    path.write_bytes(tflm_model)
    section = QuantSection.model_validate(
        {
            "mode": opts.mode,
            "io": io_type(opts.io) if a16 else opts.io,
            **weights,
            "activations": A16W8_ACTIVATIONS if a16 else "int8 per-tensor (asymmetric)",
            "activation_ranges": {"method": opts.ranges, **range_report},
            "calibration": {
                "method": cal.method,
                "data_free": cal.method != "data",
                "samples": len(cal.samples),
                "input_stats": {name: st.to_dict() for name, st in stats.items()},
                **cal.detail,
                # What distillation was allowed to cost (quant/cost.py), when it ran or was skipped for it.
                **({"cost": cost} if cal.method == "distill" or skipped else {}),
                "notes": cal.notes,
            },
            "tensor_types": tensor_types,
            "kept_float": [k.to_dict() for k in plan.kept_float],
            "tflm_vs_litert": {
                "kernels": "TFLite reference (BUILTIN_REF, TensorFlow 2.19)",
                **tflm.to_dict(),
            }
            if tflm
            else None,
            "litert_optimized_vs_tflm": optimized.to_dict(),
            "fidelity": {
                "reference": "model_float32.tflite",
                "inputs": f"held-out {cal.method} samples",
                **fidelity,
            },
            "seconds": _since(started),
        }
    )
    return QuantResult(path, opts.mode, _names(LiteRTRunner(model, in_specs, out_specs)), section)


def _bounded_distillation(
    opts: QuantOptions, float_model: bytes, module: Any, has_stats: bool
) -> tuple[str, int | None, dict[str, int], str | None]:
    """(method, distillation steps, cost record, note when distillation was skipped).

    The steps are bounded by quant/cost.py's fixed work budget (unless given explicitly), so the
    calibration of a large model takes minutes at most; when fewer than MIN_DISTILL_STEPS fit, "auto"
    calibrates on the input statistics instead and says so.
    """
    batch = opts.samples + HELD_OUT_SAMPLES
    work = step_work(float_model, batch)
    steps = opts.distill_steps
    if steps is None:
        steps = steps_within(DISTILL_BUDGET, work, DISTILL_STEPS)
        if opts.method == "distill":
            steps = max(steps, MIN_DISTILL_STEPS)
    cost = {"work_per_step": work, "batch": batch, "budget": DISTILL_BUDGET, "distill_steps": steps}
    would_distill = has_batchnorm(module)  # a PyTorch module's or an ONNX graph's BatchNorms
    fits = steps >= MIN_DISTILL_STEPS or opts.distill_steps is not None  # steps the user gave are kept
    if opts.method != "auto" or opts.calibration is not None or not would_distill or fits:
        return opts.method, steps, cost, None
    note = (
        f"distillation skipped: {MIN_DISTILL_STEPS} steps on a batch of {batch} would cost "
        f"{MIN_DISTILL_STEPS * work / 1e9:.0f} G operations, over the budget of "
        f"{DISTILL_BUDGET / 1e9:.0f} G; calibrated on "
        + ("the input statistics" if has_stats else "N(0, 1) noise")
        + "; pass --calibration samples.npy for real ranges"
    )
    return ("input-stats" if has_stats else "gaussian"), None, cost, note


def _tflm_plan(
    keras_model: Any,
    keras_specs: Sequence[TensorSpec],
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    opts: QuantOptions,
    name: str,
) -> TflmPlan:
    """quant/tflm_ops.py's probe on a model quantized from TFLM_PROBE_SAMPLES synthetic samples."""
    samples = gaussian_samples(in_specs, TFLM_PROBE_SAMPLES, CALIBRATION_SEED, stats, opts.clip_sigmas)

    def raw_inputs(model: bytes) -> list[list[np.ndarray]]:
        return probe_inputs(model, in_specs, stats)

    if opts.mode == "a16w8":
        return plan_a16w8_for_tflm(keras_model, keras_specs, samples, opts.io, raw_inputs, name)
    quantize = probe_quantizer(keras_model, keras_specs, samples, opts.io)
    probed: list[bytes] = []

    def quantize_kept(keep_float: Sequence[str]) -> bytes:
        probed.append(quantize(keep_float))
        return probed[-1]

    plan = plan_int8_for_tflm(quantize_kept, raw_inputs, name)
    # Calibration on the input statistics draws these same samples first and min/max ranges only widen
    # with more, so a LOGISTIC / TANH the probe saturates is saturated after calibration too (after
    # distillation, which starts from them, most likely). Real data decides for itself, after.
    if opts.calibration is None and opts.ranges == "minmax":
        where = f"range on {TFLM_PROBE_SAMPLES} synthetic samples (found before calibration)"
        if (saturated := saturation_problem(probed[-1], name, where)) is not None:
            raise EdgeportError(*saturated)
    # Which tensors the quantizer leaves float does not depend on the ranges: the probe shows it already.
    left_float = quantizer_kept_float(probed[-1], plan.denylist)
    try:
        _check_full_integer(probed[-1], opts.io, [*plan.denylist, *(k.node for k in left_float)])
    except EdgeportError as exc:
        raise EdgeportError(f"{exc.problem}; found before calibration", exc.fix) from exc
    # Nor do the weights' sizes: a flash budget that even all-4-bit weights exceed. The calibrated
    # file can differ from the probe's by a few bytes, so only beyond FLASH_SLACK (the exact check
    # follows calibration).
    if opts.mode == "w4a8" and opts.flash_budget is not None:
        if (problem := budget_problem(probed[-1], opts.flash_budget, FLASH_SLACK)) is not None:
            raise EdgeportError(f"{problem.problem}; found before calibration", problem.fix)
    return plan


def probe_inputs(
    model: bytes, specs: Sequence[TensorSpec] = (), stats: Mapping[str, InputStats] | None = None
) -> list[list[np.ndarray]]:
    """One seeded input per model input, in the file's own order, shape and type.

    The probe only asks whether TFLite Micro runs the ops, so any values do, except for an index input
    (token ids), whose values must be valid indices: calibration's integer draw over its stated range
    (`stats`, by source name: --input-range, --input-value), the file's inputs matched to the source's
    `specs` through its signature as LiteRTRunner matches them; DEFAULT_INDEX_RANGE when not stated. No
    LiteRT interpreter is built on the probe model: on some models quantized from two samples LiteRT
    aborts the whole process inside allocate_tensors (a native check, not an exception: resnet_basic in
    the zoo)."""
    rng = np.random.default_rng(CALIBRATION_SEED)
    parsed = parse_tflite(model)
    source = _source_names(parsed.raw, specs)
    sample = []
    for index, info in zip(parsed.raw.subgraphs[0].inputs, parsed.inputs, strict=True):
        dtype = np.dtype(info.dtype)
        if dtype.kind in "iu" and info.quantization is None:  # an index input (token ids): valid indices
            st = (stats or {}).get(source.get(int(index), ""))
            value = integer_samples(rng, TensorSpec(info.name, info.shape, info.dtype), st)
        elif dtype.kind in "iu":  # a quantized input (integer I/O): any of its values
            limits = np.iinfo(dtype)
            value = rng.integers(max(limits.min, -128), min(limits.max, 127) + 1, size=info.shape)
        else:
            value = rng.standard_normal(info.shape)
        sample.append(value.astype(dtype))
    return [sample]


def _source_names(raw: Any, specs: Sequence[TensorSpec]) -> dict[int, str]:
    """Input tensor index -> the source input it holds, through the first signature ({} when the file
    has none or it does not name every source input)."""
    if not specs or not raw.signatureDefs:
        return {}
    keys = {tensor_name(m): int(m.tensorIndex) for m in raw.signatureDefs[0].inputs or []}
    try:
        matched = match_signature(specs, list(keys))
    except RuntimeError:
        return {}
    return {keys[key]: name for name, key in matched.items()}


def _tflm_agreement(
    model: bytes,
    tflm_model: bytes,
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    samples: Sequence[Any],
    name: str,
) -> tuple[TflmComparison | None, TflmComparison]:
    """TFLite Micro running `tflm_model` vs TFLite's reference kernels (must be bit-exact; None when
    they lack an op of the model) and vs LiteRT's optimized kernels (measured only) running `model`,
    on the same raw inputs."""
    saturated = saturation_problem(tflm_model, name)  # a disagreement no sample may show: by the scales
    if saturated is not None:
        raise EdgeportError(*saturated)
    check_allocates(model, name)
    runner = LiteRTRunner(model, in_specs, out_specs)
    try:
        reference = LiteRTRunner(model, in_specs, out_specs, kernels="reference")
    except ValueError as exc:  # BUILTIN_REF lacks some kernels (ELU; DEPTH_TO_SPACE v2, int8)
        if "Didn't find op" not in str(exc):
            raise
        reference = None
    raw_inputs = [runner.quantize_inputs(s) for s in samples[:TFLM_SAMPLES]]
    tflm_out = run_tflm(tflm_model, raw_inputs, name, arena_size=arena_for(tflm_model)).raw_outputs
    optimized = compare_raw([runner.run_raw(r) for r in raw_inputs], tflm_out)
    if reference is None or UNRELIABLE_REFERENCE_OPS & set(parse_tflite(model).ops):
        # Nothing bit-exact to hold TFLite Micro to: the optimized kernels' difference is recorded.
        return None, optimized
    tflm = compare_raw([reference.run_raw(r) for r in raw_inputs], tflm_out)
    if tflm.max_diff_steps is not None and tflm.max_diff_steps > TFLM_EXACT_STEPS:
        if (known := pad_value_problem(tflm_model, name, tflm.max_diff_steps)) is not None:
            raise EdgeportError(*known)
        raise EdgeportError(
            f"{name}: TFLite Micro and TFLite's reference kernels differ by {tflm.max_diff_steps} "
            "quantization steps (they must agree bit for bit)",
            "report this model: an int8 kernel behaves differently in the two runtimes",
        )
    return tflm, optimized


def optimized_kernels_note(optimized: TflmComparison, reference_checked: bool = True) -> str | None:
    """The note for Android users when LiteRT's optimized kernels differ from TFLite Micro by more
    than TFLM_NOTE_STEPS (None otherwise): a measurement, not a failure."""
    steps = optimized.max_diff_steps
    if not reference_checked:
        return (
            "TFLite's reference kernels lack an op of this model or get it wrong (int8 SUM), so TFLite Micro "
            f"was not checked bit for bit; LiteRT's optimized kernels differ from it by up to {steps} "
            "quantization steps"
        )
    if steps is None or steps <= TFLM_NOTE_STEPS:
        return None
    return (
        f"LiteRT's optimized kernels (Android CPU) differ from TFLite Micro by up to {steps} quantization "
        f"steps ({optimized.exact_fraction:.1%} of output elements identical); TFLite Micro matches "
        "TFLite's reference kernels bit for bit"
    )


def _clustered_weights(model: bytes, clusters: int, name: str) -> tuple[bytes, bytes, dict[str, Any]]:
    """(clustered int8 model, its LUT-compressed file, manifest entries): at most `clusters` int8
    values per output channel, stored as ceil(log2 clusters)-bit indices into per-channel tables
    that TFLite Micro's DECODE op expands before each layer."""
    from edgeport.quant.lut_compression import compress_lut, lut_plan

    clustered = cluster_weights(model, clusters, name)
    if not lut_plan(clustered.model, name=name):
        # Every weight tensor is too small for indices + per-channel tables to beat int8 bytes.
        raise EdgeportError(
            f"--weight-clusters {clusters} would not make {name} smaller: its weight tensors are too small "
            "for lookup tables (indices plus a table per channel) to save flash",
            "drop --weight-clusters, or use --quantize w4a8 (packed 4-bit weights, no tables)",
        )
    compressed = compress_lut(clustered.model, name=name)
    return (
        clustered.model,
        compressed,
        {
            "weights": f"int8 per-channel, clustered to {clusters} values per channel, "
            f"LUT-compressed ({clustered.index_bits}-bit indices, TFLite Micro DECODE)",
            "clustering": {
                **clustered.to_dict(),
                "int8_size_bytes": len(model),
                "compressed_size_bytes": len(compressed),
                "runs_in": "TFLite Micro (LiteRT has no DECODE op: it runs the uncompressed clustered model)",
            },
        },
    )


def _four_bit_weights(
    model: bytes,
    float_model: bytes,
    opts: QuantOptions,
    in_specs: Sequence[TensorSpec],
    out_specs: Sequence[TensorSpec],
    held_out: Sequence[Any],
) -> tuple[bytes, dict[str, Any]]:
    """The int8 model with packed int4 filters: every weight layer, or as many as the flash budget
    needs (chosen on the synthetic held-out inputs, never on user data)."""
    if opts.flash_budget is None:
        w4a8, layers = to_w4a8(model, float_model, None, opts.rounding)
        saved = sum(layer.int8_bytes - layer.int4_bytes for layer in layers)
        return w4a8, {
            "weights": f"int4 packed ({opts.rounding} rounding), per-channel symmetric; "
            "FULLY_CONNECTED per-tensor (TFLite Micro's int4 kernel has no per-channel path)",
            "int4": {
                "rounding": opts.rounding,
                "four_bit_layers": len(layers),
                "weight_bytes_saved": saved,
                "int8_size_bytes": len(model),
                "layers": [vars(layer) for layer in layers],
            },
        }
    mixed, detail = fit_flash_budget(
        model, float_model, opts.flash_budget, in_specs, out_specs, held_out, opts.rounding
    )
    return mixed, {
        "weights": f"mixed: {detail['four_bit_layers']} layers int4 packed ({opts.rounding} rounding), "
        f"{detail['eight_bit_layers']} int8, chosen to fit the flash budget",
        "int4": {"rounding": opts.rounding, **detail},
    }


def _names(runner: LiteRTRunner) -> dict[str, str]:
    return {spec.name: runner.details[i]["name"] for spec, i in runner.inputs + runner.outputs}


def _since(started: float) -> float:
    return round(time.perf_counter() - started, 2)
