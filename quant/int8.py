"""The TFLite converter call that quantizes the Keras model onnx2tf built, and a runner for the result.

Full-integer int8 follows TFLite's quantization spec (per-channel symmetric weights, per-tensor
asymmetric activations, int32 biases); the converter computes every activation range from the
representative samples it is fed, so *which* samples is the only lever calibration has here —
that is quant/calibration.py's job. Builtin int8 kernels only: no Flex, no float fallback, so a
layer with no int8 kernel fails the conversion instead of silently staying float.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edgeport.converters.verify import Sample, TensorSpec, to_channels_first, to_channels_last
from edgeport.errors import EdgeportError
from edgeport.quiet import silenced

# Artifact precision -> (file name, what it is).
MODE_FILES = {
    "int8": "model_int8.tflite",
    "dynamic": "model_dynamic.tflite",
}


def _keras_feed(sample: Sample, specs: Sequence[TensorSpec]) -> list[np.ndarray]:
    """One representative sample in the Keras model's input order and layout."""
    feed = []
    for spec in specs:
        value = np.asarray(sample[spec.name], dtype=np.float32)
        feed.append(np.ascontiguousarray(to_channels_last(value) if spec.channels_last else value))
    return feed


def keras_to_quantized(
    keras_model: Any,
    mode: str,
    in_specs: Sequence[TensorSpec],
    samples: Sequence[Sample] = (),
    io: str = "int8",
) -> bytes:
    """Quantize with the TFLite converter.

    mode "int8": full-integer with `samples` as the representative dataset; `io` "int8" makes the
    model's inputs and outputs int8 too (what a microcontroller wants), "float" keeps float I/O
    with QUANTIZE/DEQUANTIZE at the boundary. mode "dynamic": int8 weights, float activations
    (no samples needed; for Android CPU, not TFLite Micro).
    `in_specs` must be in the Keras model's input order.
    """
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "int8":
        if not samples:
            raise ValueError("int8 quantization needs representative samples")

        def representative() -> Iterator[list[np.ndarray]]:
            for sample in samples:
                yield _keras_feed(sample, in_specs)

        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io == "int8":
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        elif io != "float":
            raise ValueError(f"unknown io {io!r}")
    elif mode == "dynamic":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        raise ValueError(f"unknown quantization mode {mode!r}")
    try:
        with silenced():
            return converter.convert()
    except Exception as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise EdgeportError(
            f"the TFLite converter could not quantize the model to {mode} ({first[:200]})",
            "a layer has no int8 builtin kernel: try --quantize dynamic or --quantize float16, "
            "or rewrite that layer",
        ) from exc


class QuantizedRunner:
    """LiteRT interpreter for a (possibly int8-I/O) model, fed and read in float, source layout.

    Inputs are quantized with the input tensor's scale/zero point and outputs dequantized, so an
    int8 model is compared with the float one on the same float samples. Tensors are addressed in
    the subgraph's input/output order, matched to source names through the signature.
    """

    def __init__(
        self,
        model: bytes,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        preserve_all_tensors: bool = False,
        reference_kernels: bool = False,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        from edgeport.converters.verify import TfliteRunner

        self._model = model  # the interpreter reads from this buffer; keep it alive
        # reference_kernels: LiteRT's plain reference kernels (BUILTIN_REF), the arithmetic TFLite
        # Micro's kernels share; by default the optimized builtin kernels an Android CPU runs.
        resolver = (
            OpResolverType.BUILTIN_REF
            if reference_kernels
            else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        self.interpreter = Interpreter(
            model_content=model,
            num_threads=1,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )
        self.interpreter.allocate_tensors()
        # Which source tensor each subgraph I/O tensor is: matched by name via the signature.
        signature = self.interpreter.get_signature_runner()
        entry = next(iter(self.interpreter.get_signature_list().values()))
        in_keys = TfliteRunner._match(inputs, entry["inputs"])
        out_keys = TfliteRunner._match(outputs, entry["outputs"])
        in_index = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
        out_index = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        sig_in, sig_out = signature.get_input_details(), signature.get_output_details()
        self.inputs = [(spec, in_index[sig_in[in_keys[spec.name]]["name"]]) for spec in inputs]
        self.outputs = [(spec, out_index[sig_out[out_keys[spec.name]]["name"]]) for spec in outputs]
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}

    def quantize_inputs(self, sample: Sample) -> list[np.ndarray]:
        """The sample as the model's raw input tensors (int8 for an int8-I/O model), subgraph order."""
        by_index = {}
        for spec, index in self.inputs:
            value = np.asarray(sample[spec.name], dtype=np.float32)
            if spec.channels_last:
                value = to_channels_last(value)
            by_index[index] = quantize(value, self.details[index])
        return [by_index[d["index"]] for d in self.interpreter.get_input_details()]

    def run_raw(self, raw_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw output tensors (subgraph order) for raw input tensors (subgraph order)."""
        for detail, value in zip(self.interpreter.get_input_details(), raw_inputs, strict=True):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(value))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.interpreter.get_output_details()]

    def run(self, sample: Sample) -> Sample:
        raw = self.run_raw(self.quantize_inputs(sample))
        by_index = dict(zip([d["index"] for d in self.interpreter.get_output_details()], raw, strict=True))
        result = {}
        for spec, index in self.outputs:
            value = dequantize(by_index[index], self.details[index])
            result[spec.name] = to_channels_first(value) if spec.channels_last else value
        return result

    def tensor(self, index: int) -> np.ndarray:
        """A tensor after the last invoke (needs preserve_all_tensors for intermediates), dequantized."""
        return dequantize(self.interpreter.get_tensor(index), self.details[index])


def quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    dtype = detail["dtype"]
    if np.dtype(dtype).kind == "f":
        return value.astype(dtype)
    scale, zero = detail["quantization"]
    if scale == 0:
        return value.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    if np.dtype(value.dtype).kind == "f":
        return value.astype(np.float32)
    params = detail.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float32)
    zeros = np.asarray(params.get("zero_points", []), np.float32)
    if scales.size == 0:
        return value.astype(np.float32)
    if scales.size == 1:
        return (value.astype(np.float32) - zeros[0]) * scales[0]
    axis = int(params.get("quantized_dimension", 0))
    shape = [1] * value.ndim
    shape[axis] = -1
    return (value.astype(np.float32) - zeros.reshape(shape)) * scales.reshape(shape)
