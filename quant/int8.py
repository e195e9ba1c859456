"""The TFLite converter call that quantizes the Keras model onnx2tf built (edgeport.runtimes.litert runs it).

Full-integer int8 follows TFLite's quantization spec (per-channel symmetric weights, per-tensor
asymmetric activations, int32 biases). By default (`ranges="minmax"`) the converter computes every
activation range as the min/max over the representative samples it is fed, so *which* samples is
the lever calibration has (quant/calibration.py's job). The other range methods (quant/ranges.py)
split the converter's work in two, as it does internally: calibrate (a float model with each
tensor's min/max recorded), then quantize that model with TFLite's MLIR quantizer; between the two,
the recorded ranges are replaced by ranges computed from the activations observed in LiteRT.
Builtin int8 kernels only: no Flex, no float fallback, so a layer with no int8 kernel fails the
conversion instead of silently staying float.

What the TFLite quantizer (tensorflow 2.19, RemoveRedundantStatsOps) does with recorded ranges,
measured on edited ranges: the output range of an op with a fixed output range (SOFTMAX,
LOGISTIC, TANH...) is ignored; a single-input op that keeps scales (MAX_POOL_2D, RESHAPE, ...)
takes its input's range, whatever its own; a CONCATENATION's output range is imposed on all its
inputs (and further up through scale-keeping ops), whatever theirs; ADD, CONV_2D, FULLY_CONNECTED,
MEAN outputs keep their own. Which recorded range ends up on which tensor is therefore probed,
not assumed (`probe_range_use`).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.keras_export import keras_converter
from edgeport.quant.bounded_outputs import widen_bounded_outputs
from edgeport.quant.calibrated import recorded_range, recorded_ranges, set_recorded_range
from edgeport.quant.ranges import HISTOGRAM_BINS, RANGE_FUNCTIONS, RANGE_METHODS, Histogram
from edgeport.quant.tflm_ops import KeptFloat, replace_for_tflm
from edgeport.quant.tflm_saturation import ACTIVATION_BOUND, bound_activation_inputs
from edgeport.runtimes import litert
from edgeport.tensors import Sample, TensorSpec, to_channels_last
from edgeport.tflite_file import (
    builtin_code,
    edit_tflite,
    op_name,
    parse_tflite,
    schema,
    serialize_tflite,
    tensor_name,
)

T = TypeVar("T")


def _keras_feed(
    sample: Sample, specs: Sequence[TensorSpec], dtypes: Sequence[Any] | None = None
) -> list[np.ndarray]:
    """One representative sample in the Keras model's input order, layout and dtypes (`dtypes`, one per
    spec; default: float32 for a float input, its own dtype for an integer one such as token ids,
    which the converter refuses as float)."""
    feed = []
    for i, spec in enumerate(specs):
        own = np.dtype(spec.dtype)
        dtype = np.dtype(dtypes[i] if dtypes is not None else own if own.kind in "iub" else np.float32)
        value = np.asarray(sample[spec.name])
        if dtype.kind in "iu" and value.dtype.kind == "f":
            value = np.rint(value)  # integer data read as floats (calibration files): exact, not truncated
        value = value.astype(dtype)
        feed.append(np.ascontiguousarray(to_channels_last(value) if spec.channels_last else value))
    return feed


def _numpy_dtype(tensor: Any) -> np.dtype:
    """A Keras input's dtype as numpy's (tf_keras gives a tf.DType, Keras 3 a string)."""
    dtype = tensor.dtype
    return np.dtype(getattr(dtype, "as_numpy_dtype", dtype))


def named_feed(keras_model: Any, sample: Sample, in_specs: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
    """One sample by signature input name (a Keras input's name without ':0'), in that input's dtype.
    By name, not position: a list is fed in the order of the converted graph's input tensors, which
    need not be the Keras input order (a two-input model got its image and vector swapped)."""
    names = [str(t.name).split(":")[0] for t in keras_model.inputs]
    dtypes = [_numpy_dtype(t) for t in keras_model.inputs]
    return dict(zip(names, _keras_feed(sample, in_specs, dtypes), strict=True))


def int8_converter(
    keras_model: Any, in_specs: Sequence[TensorSpec], samples: Sequence[Sample], io: str
) -> Any:
    """The TFLite converter set up for full-integer int8 with `samples` as the representative dataset."""
    import tensorflow as tf

    if not samples:
        raise ValueError("int8 quantization needs representative samples")

    def representative() -> Iterator[dict[str, np.ndarray]]:
        for sample in samples:
            yield named_feed(keras_model, sample, in_specs)

    converter = keras_converter(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io == "int8":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif io != "float":
        raise ValueError(f"unknown io {io!r}")
    return converter


def keras_to_quantized(
    keras_model: Any,
    mode: str,
    in_specs: Sequence[TensorSpec],
    samples: Sequence[Sample] = (),
    io: str = "int8",
    ranges: str = "minmax",
    report: dict[str, Any] | None = None,
    keep_float: Sequence[str] = (),
) -> bytes:
    """Quantize with the TFLite converter.

    mode "int8": full-integer with `samples` as the representative dataset; `io` "int8" makes the
    model's inputs and outputs int8 too (what a microcontroller wants), "float" keeps float I/O
    with QUANTIZE/DEQUANTIZE at the boundary. `ranges` picks how activation ranges are set (one
    of quant/ranges.py's RANGE_METHODS): "minmax" is the converter's own min/max in one call;
    "percentile" and "mse" go through `quantize_with_ranges`, and `report`, if given, receives
    what they changed. mode "dynamic": int8 weights, float activations (no samples needed; for
    Android CPU, not TFLite Micro). `in_specs` must be in the Keras model's input order.
    `keep_float` names ops (by output tensor name) left float32 between DEQUANTIZE and QUANTIZE
    (quant/tflm_ops.py chooses them: ops TFLite Micro has no int8 kernel for).
    """
    import tensorflow as tf

    if ranges not in RANGE_METHODS:
        raise ValueError(f"unknown activation range method {ranges!r} (one of {', '.join(RANGE_METHODS)})")
    if mode == "int8":
        converter = int8_converter(keras_model, in_specs, samples, io)
    elif mode == "dynamic":
        if ranges != "minmax":
            raise ValueError("activation ranges apply to --quantize int8 only (dynamic has no calibration)")
        converter = keras_converter(keras_model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        raise ValueError(f"unknown quantization mode {mode!r}")
    if mode == "dynamic":
        return converter_step(mode, converter.convert)
    # In two halves even for plain min/max: quantize_calibrated bounds max-pool padding first.
    clamped: list[str] = []
    calibrated = converter_step(
        mode, lambda: bound_activation_inputs(calibrate_only(converter), clamped=clamped)
    )
    if report is not None and clamped:
        report["clamped_for_logistic_tanh"] = {"bound": ACTIVATION_BOUND, "tensors": clamped}
    if ranges == "minmax":
        return converter_step(mode, lambda: quantize_calibrated(converter, calibrated, io, keep_float))
    feeds = [named_feed(keras_model, sample, in_specs) for sample in samples]
    return quantize_with_ranges(
        converter, calibrated, feeds, io, RANGE_FUNCTIONS[ranges], report, keep_float=keep_float
    )


def probe_quantizer(
    keras_model: Any, in_specs: Sequence[TensorSpec], samples: Sequence[Sample], io: str
) -> Callable[[Sequence[str]], bytes]:
    """`quantize(keep_float)`: int8 models from one calibration on `samples`, with the named ops left
    float; the converter's slow half (calibration) runs once, each call only re-runs the quantizer."""
    converter = int8_converter(keras_model, in_specs, samples, io)
    calibrated = converter_step("int8", lambda: bound_activation_inputs(calibrate_only(converter)))
    return lambda keep_float: converter_step(
        "int8", lambda: quantize_calibrated(converter, calibrated, io, keep_float)
    )


INT8_CONVERTER_FIX = (
    "a layer has no int8 builtin kernel: try --quantize dynamic or --quantize float16, or rewrite that layer"
)


def converter_step(mode: str, convert: Callable[[], T], fix: str = INT8_CONVERTER_FIX) -> T:
    """Run a converter step; its failure becomes one EdgeportError line with the converter's own reason
    (the CLI hides its logs)."""
    try:
        return convert()
    except EdgeportError:
        raise
    except Exception as exc:
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EdgeportError(
            f"the TFLite converter could not quantize the model to {mode} ({first[:200]})", fix
        ) from exc


def calibrate_only(converter: Any) -> bytes:
    """The converter's first half: the float model with each activation's min/max recorded, and the
    ops TFLite Micro has no kernel for written out in ops it has (quant/tflm_ops.py's OP_REPLACEMENTS).

    Conversion metadata is left out here and added by `quantize_calibrated`, after quantizing,
    as the converter itself does (its hash is of the final model).
    """
    converter._experimental_calibrate_only = True
    converter.exclude_conversion_metadata = True
    return replace_for_tflm(bytes(converter.convert()))


def quantize_calibrated(converter: Any, calibrated: bytes, io: str, keep_float: Sequence[str] = ()) -> bytes:
    """The converter's second half, as tensorflow 2.19's lite.py runs it for full-integer int8.

    `_quantize` calls mlir_quantize with the converter's per-channel and variable-quantization
    settings and its debug options (empty unless IR dumps are asked for); `_optimize_tflite_model`
    deduplicates read-only buffers; `_convert_and_export_metrics` adds the conversion metadata.
    Given `calibrate_only`'s unedited output this returns the bytes `converter.convert()` would
    have (tested), except that max-pool padding is first bounded (`bound_max_pool_padding`) and a
    Sigmoid / Tanh model output's input range reaches its output range (quant/bounded_outputs.py). The
    private helpers are those of the pinned tensorflow version. `keep_float`: output tensor names of
    ops the quantizer leaves float (its `denylisted_nodes`).
    """
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    io_type = tf.int8 if io == "int8" else tf.float32
    model = mlir_quantize(
        widen_bounded_outputs(bound_max_pool_padding(calibrated)),
        converter._experimental_disable_per_channel,
        input_data_type=io_type,
        output_data_type=io_type,
        enable_variable_quantization=converter._experimental_variable_quantization,
        disable_per_channel_for_dense_layers=(
            converter._experimental_disable_per_channel_quantization_for_dense_layers
        ),
        denylisted_nodes=list(keep_float) or None,
    )
    quantized = finish_quantized(converter, model)
    refuse_overflowing_steps(quantized)
    return quantized


def finish_quantized(converter: Any, model: bytes) -> bytes:
    """What tensorflow 2.19's converter does to a model after its quantizer: read-only buffers
    deduplicated (`_optimize_tflite_model`), then the conversion metadata added
    (`_convert_and_export_metrics`; its hash is of the final model)."""
    from tensorflow.lite.python import util
    from tensorflow.lite.python.convert import deduplicate_readonly_buffers

    model = deduplicate_readonly_buffers(model)
    # TensorFlow's helpers take any object tree of the TFLite schema: edgeport's packs to the same bytes.
    model_object = edit_tflite(model)
    # A copy: the probe and the final model are both quantized from one converter's metadata.
    metadata = copy.deepcopy(converter._metadata)
    metadata.options.modelOptimizationModes.extend(util.get_sparsity_modes(model_object))
    metadata.environment.modelHash = util.get_model_hash(model_object)
    return serialize_tflite(util.populate_conversion_metadata(model_object, metadata))


# No activation a model computes has an int8 step this large; one comes from an infinite or float32-max
# constant (an additive attention mask of -inf) reaching a calibrated range.
MAX_STEP = 1e20


def refuse_overflowing_steps(model: bytes) -> None:
    """Raise a one-line EdgeportError if an int8 activation got a step over MAX_STEP.

    LiteRT and TFLite Micro abort preparing such a model (a rescale factor overflows): a masked
    attention's `scores + mask` with a -inf causal mask is quantized with a step of ~1e36. Checked on
    every quantized model, so the TFLite Micro probe refuses it before calibration.
    """
    graph = parse_tflite(model).raw.subgraphs[0]
    for tensor in graph.tensors:
        q = tensor.quantization
        if tensor.type != 9 or q is None or q.scale is None or len(q.scale) != 1:  # 9: INT8
            continue
        if float(q.scale[0]) > MAX_STEP:
            name = tensor_name(tensor)
            raise EdgeportError(
                f"int8 tensor {name!r} gets a quantization step of {float(q.scale[0]):.1e}: an infinite or "
                "float32-max constant reaches it (an additive attention mask of -inf, for one), and no "
                "runtime can run that int8 model",
                "for TFLite Micro keep the model float32 (no --quantize); for Android use --quantize "
                "dynamic or float16",
            )


def bound_max_pool_padding(calibrated: bytes) -> bytes:
    """Max-pool padding at the low end of its input's recorded range instead of the float lowest.

    onnx2tf writes a MaxPool whose padding TensorFlow cannot express as PADV2 with the float32
    lowest value (-3.4e38), then a VALID MAX_POOL_2D. The calibrator records that value in the
    PADV2 output's range, the quantizer gives PADV2's input the same scale (a scale-keeping op), and
    the layer before gets a step of ~1e36: LiteRT and TFLite Micro abort preparing the next conv
    (its rescale factor overflows). Padded with min(input's recorded low, 0), the value the int8
    model cannot go below, the max over each window is unchanged: every int8 value is >= it.
    Only PADV2 ops whose every reader is a MAX_POOL_2D and whose pad value lies below the input's
    range are changed; the returned model is `calibrated` when there is none.
    """
    model = edit_tflite(calibrated)
    graph = model.subgraphs[0]

    def opcode(op: Any) -> int:
        return builtin_code(model.operatorCodes[op.opcodeIndex])

    def recorded(index: int) -> tuple[float, float] | None:
        return recorded_range(graph.tensors[index])

    readers: dict[int, list[int]] = {}
    for op in graph.operators:
        for index in op.inputs:
            readers.setdefault(int(index), []).append(opcode(op))
    changed = False
    for op in graph.operators:
        if opcode(op) != schema.BuiltinOperator.PADV2 or len(op.inputs) < 3:
            continue
        source, value_index, out = int(op.inputs[0]), int(op.inputs[2]), int(op.outputs[0])
        value_tensor = graph.tensors[value_index]
        data = model.buffers[value_tensor.buffer].data
        in_range = recorded(source)
        if (
            in_range is None
            or recorded(out) is None
            or value_tensor.type != schema.TensorType.FLOAT32
            or data is None
            or len(data) != 4
            or out in graph.outputs
            or set(readers.get(out, [])) != {schema.BuiltinOperator.MAX_POOL_2D}
        ):
            continue
        low = min(in_range[0], 0.0)
        if float(np.frombuffer(bytes(data), np.float32)[0]) >= low:
            continue
        # A buffer of its own: the lowest float may be shared with another constant.
        model.buffers.append(schema.BufferT())
        model.buffers[-1].data = np.frombuffer(np.float32(low).tobytes(), np.uint8).copy()
        value_tensor.buffer = len(model.buffers) - 1
        set_recorded_range(graph.tensors[out], (low, in_range[1]))
        changed = True
    return serialize_tflite(model) if changed else calibrated


def quantizer_kept_float(model: bytes, denylisted: Collection[str] = ()) -> list[KeptFloat]:
    """The ops the TFLite quantizer itself left float32, in regions between DEQUANTIZE and QUANTIZE
    (not counting those `denylisted`, by output tensor name: the ones edgeport asked it to leave float).

    Even with int8-only builtins it leaves an op float when it has no int8 form of it (ELU in
    tensorflow 2.19, though LiteRT has an int8 ELU kernel), sometimes a few ops in a row. TFLite Micro
    runs such ops in float32 like those quant/tflm_ops.py keeps float, so they are reported the same
    way, not refused. A region counts only when closed: every float input is a constant, a
    DEQUANTIZE's output or another region op's, and every output is read only by QUANTIZE or region
    ops (never a model output); anything else stays for the full-integer check to refuse.
    """
    graph = parse_tflite(model).raw
    codes = [op_name(code) for code in graph.operatorCodes]
    sub = graph.subgraphs[0]
    ops = sub.operators
    producer = {int(out): i for i, op in enumerate(ops) for out in op.outputs}
    readers: dict[int, list[int]] = {}
    for i, op in enumerate(ops):
        for index in op.inputs:
            readers.setdefault(int(index), []).append(i)
    boundary = {int(t) for t in (*sub.inputs, *sub.outputs)}

    def is_float(index: int) -> bool:
        return index >= 0 and sub.tensors[index].type == 0  # FLOAT32

    def code(i: int) -> str:
        return codes[ops[i].opcodeIndex]

    region = {
        i
        for i, op in enumerate(ops)
        if code(i) not in ("QUANTIZE", "DEQUANTIZE")
        and any(is_float(int(t)) for t in (*op.inputs, *op.outputs))
    }

    def closed(i: int) -> bool:
        for t in map(int, ops[i].inputs):
            if is_float(t) and (
                t in boundary
                or (t in producer and code(producer[t]) != "DEQUANTIZE" and producer[t] not in region)
            ):
                return False
        return all(
            t not in boundary and all(r in region or code(r) == "QUANTIZE" for r in readers.get(t, []))
            for t in map(int, ops[i].outputs)
        )

    while open_ops := {i for i in region if not closed(i)}:
        region -= open_ops
    kept = []
    for i in sorted(region):
        node = tensor_name(sub.tensors[ops[i].outputs[0]])
        if node not in denylisted:
            why = "the TFLite quantizer has no int8 form of it"
            kept.append(KeptFloat(code(i), node, "left float by the TFLite quantizer", why))
    return kept


def set_ranges(calibrated: bytes, ranges: Mapping[int, tuple[float, float]]) -> bytes:
    """The calibrated model with the recorded min/max of the given tensors (main subgraph) replaced."""
    model = edit_tflite(calibrated)
    tensors = model.subgraphs[0].tensors
    for index, (low, high) in ranges.items():
        q = tensors[index].quantization
        if q is None or q.min is None:
            raise ValueError(f"tensor {index} has no recorded range")
        set_recorded_range(tensors[index], (low, high))
    return serialize_tflite(model)


def observe_activations(
    calibrated: bytes,
    feeds: Sequence[Mapping[str, np.ndarray]],
    tensors: Collection[int],
    bins: int = HISTOGRAM_BINS,
) -> dict[int, Histogram]:
    """Histograms of the float values the given tensors take on `feeds`, run in LiteRT.

    `feeds` are fed by signature input name, as the calibrator feeds the representative
    dataset (`named_feed`). Two passes: the first finds each tensor's exact extremes (the
    histogram's edges), the second counts; memory is one histogram per tensor, whatever the
    number of samples. The extremes are not taken from the calibrator: an ADD input that is not
    used after the ADD is recorded with the union of its own range and the ADD's output range
    (measured on tensorflow 2.19; when the inputs stay alive their ranges are exact), consistent
    with the ADD writing its output into that input's buffer before the calibrator reads it.
    """
    if not tensors:
        return {}
    # preserve_all_tensors is what makes intermediates readable.
    interp = litert.interpreter(calibrated, preserve_all_tensors=True)
    interp.allocate_tensors()
    inputs = {name: d["index"] for name, d in interp.get_signature_runner().get_input_details().items()}

    def run(feed: Mapping[str, np.ndarray]) -> None:
        for name, value in feed.items():
            interp.set_tensor(inputs[name], np.ascontiguousarray(value))  # named_feed's dtypes
        interp.invoke()

    lows = dict.fromkeys(tensors, np.inf)
    highs = dict.fromkeys(tensors, -np.inf)
    for feed in feeds:
        run(feed)
        for index in tensors:
            value = interp.get_tensor(index)
            lows[index] = min(lows[index], float(value.min()))
            highs[index] = max(highs[index], float(value.max()))
    hists = {index: Histogram.over(lows[index], highs[index], bins) for index in tensors}
    for feed in feeds:
        run(feed)
        for index in tensors:
            hists[index].add(interp.get_tensor(index))
    return hists


# Probe ranges: tensor k (in index order) gets [-PROBE_UNIT * (k + 1), PROBE_UNIT * (k + 1)], so
# its int8 scale is 2 * PROBE_UNIT * (k + 1) / 255 and any tensor carrying that scale took tensor
# k's range. The unit keeps probe scales (>= 0.125) far from the fixed ones (1/256, 1/128).
PROBE_UNIT = 16.0


@dataclass
class RangeUse:
    """Which recorded ranges the TFLite quantizer puts on int8 tensors (calibrated tensor indices)."""

    used: set[int]  # some int8 activation tensor of the quantized model carries this range
    at_io: set[int]  # a model input or output (its int8 side with float I/O) carries this range


def probe_range_use(converter: Any, calibrated: bytes, io: str, keep_float: Sequence[str] = ()) -> RangeUse:
    """Quantize once with a distinct range on every recorded tensor and read back who got which.

    The quantizer's propagation (see the module docstring) decides which recorded ranges count;
    probing it on the model at hand is exact for any op, where a list of op types would not be.
    """
    order = sorted(recorded_ranges(calibrated))
    probe = {index: (-PROBE_UNIT * (k + 1), PROBE_UNIT * (k + 1)) for k, index in enumerate(order)}
    quantized = converter_step(
        "int8", lambda: quantize_calibrated(converter, set_ranges(calibrated, probe), io, keep_float)
    )
    model = parse_tflite(quantized).raw
    graph = model.subgraphs[0]

    def source(tensor_index: int) -> int | None:
        tensor = graph.tensors[tensor_index]
        q = tensor.quantization
        if tensor.type != schema.TensorType.INT8 or q is None or q.scale is None or len(q.scale) != 1:
            return None
        units = float(q.scale[0]) * 255.0 / (2.0 * PROBE_UNIT)
        k = round(units) - 1
        if abs(units - round(units)) > 1e-3 or not 0 <= k < len(order):
            return None
        return order[k]

    def opcode(op: Any) -> int:
        return builtin_code(model.operatorCodes[op.opcodeIndex])

    activations = {i for op in graph.operators for i in op.outputs} | set(graph.inputs)
    used = {s for s in map(source, activations) if s is not None}
    # With float I/O the int8 side of an input is the QUANTIZE it feeds, of an output the
    # DEQUANTIZE's input.
    io_tensors = set(graph.inputs) | set(graph.outputs)
    for op in graph.operators:
        if opcode(op) == schema.BuiltinOperator.QUANTIZE and op.inputs[0] in graph.inputs:
            io_tensors.add(op.outputs[0])
        if opcode(op) == schema.BuiltinOperator.DEQUANTIZE and op.outputs[0] in graph.outputs:
            io_tensors.add(op.inputs[0])
    at_io = {s for s in map(source, io_tensors) if s is not None}
    return RangeUse(used, at_io)


def _within(chosen: tuple[float, float], recorded: tuple[float, float]) -> tuple[float, float]:
    low, high = recorded
    return min(max(chosen[0], low), high), min(max(chosen[1], low), high)


def quantize_with_ranges(
    converter: Any,
    calibrated: bytes,
    feeds: Sequence[Mapping[str, np.ndarray]],
    io: str,
    range_of: Callable[[Histogram], tuple[float, float]],
    report: dict[str, Any] | None = None,
    keep_float: Sequence[str] = (),
) -> bytes:
    """Quantize `calibrated` with activation ranges `range_of(histogram of observed values)`.

    Only ranges the quantizer uses are computed. The ranges on the model's inputs and outputs keep
    the calibrator's min/max: the input's is the range calibration chose (quant/calibration.py
    bounds synthetic inputs by the known or mean +- 3 std range) and narrowing it would clip real
    inputs; clipping the output would saturate the largest logits together and make argmax ties.
    """
    recorded = recorded_ranges(calibrated)
    use = probe_range_use(converter, calibrated, io, keep_float)
    chosen = sorted(use.used - use.at_io)
    hists = observe_activations(calibrated, feeds, chosen)
    # Never wider than recorded: bound_activation_inputs may have narrowed a recorded range.
    ranges = {index: _within(range_of(hists[index]), recorded[index]) for index in chosen}
    edited = set_ranges(calibrated, ranges)
    model = converter_step("int8", lambda: quantize_calibrated(converter, edited, io, keep_float))
    if report is not None:
        graph = parse_tflite(calibrated).raw.subgraphs[0]

        def name(index: int) -> str:
            return tensor_name(graph.tensors[index])

        fractions = [
            (hi - lo) / (hists[i].high - hists[i].low)
            for i, (lo, hi) in ranges.items()
            if hists[i].high > hists[i].low
        ]
        report.update(
            {
                "method": getattr(range_of, "__name__", str(range_of)),
                "recorded": len(recorded),
                "set": len(ranges),
                "kept_at_io": sorted(name(i) for i in use.at_io),
                # The quantizer takes these from a neighbour (concat, pooling, reshape) or fixes them.
                "not_used_by_quantizer": len(set(recorded) - use.used),
                "median_width_vs_observed_minmax": round(float(np.median(fractions)), 4)
                if fractions
                else None,
                "narrower_than_recorded": sum(
                    1 for i, (lo, hi) in ranges.items() if hi - lo < recorded[i][1] - recorded[i][0]
                ),
            }
        )
    return model
