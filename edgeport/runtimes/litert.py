"""LiteRT: the one place a .tflite interpreter is built, and a runner addressed by source tensor names.

Kernels:
- "optimized": LiteRT's builtin kernels, what an Android CPU runs. Without delegates by default:
  verification measures the conversion, and XNNPACK's packed-weight cache has been seen to refuse a
  second model in one process. `delegates=True` adds LiteRT's default delegate (XNNPACK), as the
  latency benchmarks run it.
- "reference": TensorFlow 2.19's TFLite reference kernels (BUILTIN_REF), the integer arithmetic
  TFLite Micro's kernels share (gemmlowp double rounding). Not LiteRT's own reference kernels: since
  April 2025 its reference FULLY_CONNECTED requantizes in double precision with a single rounding,
  one step away from TFLite Micro in ~0.1 % of the outputs (measured: 13 of 12,000 on a small CNN's
  logits; TF 2.19's kernels 0).
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from edgeport.runtimes.result import RunResult
from edgeport.tensors import Sample, TensorSpec, signature_name, to_channels_first, to_channels_last

Kernels = Literal["optimized", "reference"]
KERNELS: tuple[str, ...] = ("optimized", "reference")


# Allocates the model with the optimized kernels in a child process (the model's path is argv[1]).
_ALLOCATE = (
    "import sys\n"
    "from ai_edge_litert.interpreter import Interpreter, OpResolverType\n"
    "Interpreter(model_path=sys.argv[1], experimental_op_resolver_type="
    "OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES).allocate_tensors()\n"
)


def check_allocates(model: bytes, name: str, timeout_s: float = 300) -> None:
    """Raise a one-line EdgeportError if LiteRT crashes preparing `model`.

    Some models the TFLite converter writes make LiteRT abort the process inside allocate_tensors
    (a native check, not an exception: seen on an int8 residual net from the zoo). In-process that
    ends the caller with no message, so a model fresh from the quantizer is allocated in a child
    first. Python-level failures (a ValueError) are left to the in-process interpreter to report.
    """
    import subprocess
    import sys

    from edgeport.errors import EdgeportError
    from edgeport.tempdirs import tempdir

    with tempdir("litert") as work:
        path = work / "model.tflite"
        path.write_bytes(model)
        try:
            done = subprocess.run(
                [sys.executable, "-c", _ALLOCATE, str(path)], capture_output=True, timeout=timeout_s
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgeportError(
                f"LiteRT did not finish preparing {name} in {timeout_s:.0f} s",
                "report this model with --debug output",
            ) from exc
    if done.returncode < 0:
        raise EdgeportError(
            f"LiteRT crashes (signal {-done.returncode}) preparing {name}: the TFLite converter wrote a "
            "model its own runtime cannot run",
            "report this model with --debug output; --quantize dynamic or float16 avoid the int8 kernels",
        )


def interpreter(
    model: bytes,
    kernels: Kernels = "optimized",
    delegates: bool = False,
    threads: int | None = 1,
    preserve_all_tensors: bool = False,
) -> Any:
    """A LiteRT (or, for reference kernels, TensorFlow Lite) interpreter over `model`, not yet allocated.

    `threads=None` leaves the runtime's default. `preserve_all_tensors` keeps intermediates readable
    after invoke (slower; LiteRT warns it is for debugging, which is what it is used for).
    Construction runs the flatbuffers Verifier on the buffer: a corrupt model raises ValueError.
    """
    if kernels not in KERNELS:
        raise ValueError(f"unknown LiteRT kernels {kernels!r} (use one of {', '.join(KERNELS)})")
    if kernels == "reference":
        if delegates:
            raise ValueError("the reference kernels run without delegates")
        import tensorflow as tf

        factory = tf.lite.Interpreter
        resolver = tf.lite.experimental.OpResolverType.BUILTIN_REF
    else:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        factory = Interpreter
        resolver = OpResolverType.BUILTIN if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return factory(
            model_content=model,
            num_threads=threads,
            experimental_op_resolver_type=resolver,
            experimental_preserve_all_tensors=preserve_all_tensors,
        )


def _key(name: str) -> str:
    """onnx2tf and the TFLite converter rewrite punctuation in names; compare on the rest."""
    return re.sub(r"[^0-9a-zA-Z]", "", name).lower()


def match_signature(specs: Sequence[TensorSpec], keys: Sequence[str]) -> dict[str, str]:
    """Source tensor name -> the signature key that holds it (a lone tensor matches a lone key)."""
    by_key = {_key(k): k for k in keys}
    matched = {}
    for spec in specs:
        for candidate in (spec.name, signature_name(spec.name)):
            if _key(candidate) in by_key:
                matched[spec.name] = by_key[_key(candidate)]
                break
    if len(matched) != len(specs):
        if len(specs) == len(keys) == 1:
            return {specs[0].name: keys[0]}
        missing = [s.name for s in specs if s.name not in matched]
        raise RuntimeError(f"TFLite signature has no tensors for {missing} (has {list(keys)})")
    return matched


class LiteRTRunner:
    """A .tflite in LiteRT, fed and read in float by source tensor name, in the source layout.

    Quantized inputs are quantized with the input tensor's scale/zero point and outputs dequantized,
    so an int8 model is compared with the float one on the same float samples; `run_raw` feeds and
    returns the model's own tensors (subgraph order). Source names are matched through the signature.
    """

    def __init__(
        self,
        model: bytes,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        kernels: Kernels = "optimized",
        delegates: bool = False,
        threads: int | None = 1,
        preserve_all_tensors: bool = False,
    ) -> None:
        self._model = model  # the interpreter reads from this buffer; keep it alive
        self.kernels = kernels
        start = time.perf_counter()
        self.interpreter = interpreter(model, kernels, delegates, threads, preserve_all_tensors)
        self.interpreter.allocate_tensors()
        self.init_seconds = time.perf_counter() - start
        signature = self.interpreter.get_signature_runner()
        entry = next(iter(self.interpreter.get_signature_list().values()))
        in_keys = match_signature(inputs, entry["inputs"])
        out_keys = match_signature(outputs, entry["outputs"])
        in_index = {d["name"]: d["index"] for d in self.interpreter.get_input_details()}
        out_index = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        sig_in, sig_out = signature.get_input_details(), signature.get_output_details()
        self.inputs = [(spec, in_index[sig_in[in_keys[spec.name]]["name"]]) for spec in inputs]
        self.outputs = [(spec, out_index[sig_out[out_keys[spec.name]]["name"]]) for spec in outputs]
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}

    @property
    def runtime(self) -> str:
        return "litert" if self.kernels == "optimized" else "litert-reference"

    def tensor_names(self) -> dict[str, str]:
        """Source tensor name -> the .tflite tensor name that holds it."""
        return {spec.name: self.details[index]["name"] for spec, index in self.inputs + self.outputs}

    def quantize_inputs(self, sample: Sample) -> list[np.ndarray]:
        """The sample as the model's raw input tensors (int8 for an int8-I/O model), subgraph order."""
        by_index = {}
        for spec, index in self.inputs:
            value = np.asarray(sample[spec.name])
            if value.dtype.kind == "f":
                value = value.astype(np.float32)
            if spec.channels_last:
                value = to_channels_last(value)
            by_index[index] = quantize(value, self.details[index])
        return [by_index[d["index"]] for d in self.interpreter.get_input_details()]

    def run_raw(self, raw_inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Raw output tensors (subgraph order) for raw input tensors (subgraph order).

        An input of another shape than the tensor's is resized to it first, as LiteRT's signature
        runner does (models with a dynamic batch).
        """
        details = self.interpreter.get_input_details()
        # A scalar (rank-0) model input is a [1] tensor in the .tflite: a Keras input has a batch axis.
        raw_inputs = [
            np.reshape(v, d["shape"]) if np.ndim(v) == 0 and np.prod(d["shape"]) == 1 else v
            for d, v in zip(details, raw_inputs, strict=True)
        ]
        resized = False
        for detail, value in zip(details, raw_inputs, strict=True):
            if tuple(detail["shape"]) != np.shape(value):
                self.interpreter.resize_tensor_input(detail["index"], list(np.shape(value)), strict=False)
                resized = True
        if resized:
            self.interpreter.allocate_tensors()
        for detail, value in zip(details, raw_inputs, strict=True):
            self.interpreter.set_tensor(detail["index"], np.ascontiguousarray(value))
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.interpreter.get_output_details()]

    def _named(self, raw: Sequence[np.ndarray]) -> Sample:
        by_index = dict(zip([d["index"] for d in self.interpreter.get_output_details()], raw, strict=True))
        result = {}
        for spec, index in self.outputs:
            value = dequantize(by_index[index], self.details[index])
            result[spec.name] = to_channels_first(value) if spec.channels_last else value
        return result

    def run(self, sample: Sample) -> Sample:
        return self._named(self.run_raw(self.quantize_inputs(sample)))

    def run_samples(self, samples: Sequence[Sample]) -> RunResult:
        """Every sample in order, with each invoke's wall time."""
        result = RunResult(self.runtime, raw_outputs=[], init_seconds=self.init_seconds)
        for sample in samples:
            raw_inputs = self.quantize_inputs(sample)
            start = time.perf_counter()
            raw = self.run_raw(raw_inputs)
            result.invoke_seconds.append(time.perf_counter() - start)
            result.raw_outputs.append(raw)
            result.outputs.append(self._named(raw))
        return result

    def tensor(self, index: int) -> np.ndarray:
        """A tensor after the last invoke (needs preserve_all_tensors for intermediates), dequantized."""
        return dequantize(self.interpreter.get_tensor(index), self.details[index])


def quantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A float value as the tensor `detail` holds it (affine per-tensor quantization; a cast otherwise)."""
    dtype = detail["dtype"]
    if np.dtype(dtype).kind == "f":
        return value.astype(dtype)
    scale, zero = detail["quantization"]
    if scale == 0:
        return value.astype(dtype)
    info = np.iinfo(dtype)
    return np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)


def dequantize(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """A tensor's value in float32: per-tensor or per-channel scales applied, a cast without them."""
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


def delegated_nodes(ops: Sequence[dict[str, Any]]) -> tuple[int, int]:
    """(nodes a delegate took, nodes of the model) from an allocated interpreter's `_get_ops_details()`.

    LiteRT keeps the model's own nodes and appends one DELEGATE node per partition it replaced, whose
    inputs and outputs are the partition's boundary tensors; the partition's nodes are those found by
    walking back from its outputs through producers until its inputs.
    """
    own = [op for op in ops if op["op_name"] != "DELEGATE"]
    producer = {int(t): op["index"] for op in own for t in op["outputs"]}
    inputs_of = {op["index"]: [int(t) for t in op["inputs"]] for op in own}
    taken: set[int] = set()
    for op in ops:
        if op["op_name"] != "DELEGATE":
            continue
        boundary = {int(t) for t in op["inputs"]}
        frontier = [int(t) for t in op["outputs"]]
        while frontier:
            tensor = frontier.pop()
            node = producer.get(tensor)
            if tensor in boundary or node is None or node in taken:
                continue
            taken.add(node)
            frontier += inputs_of[node]
    return len(taken), len(own)


def interleaved_invoke_times(
    models: Sequence[bytes], rounds: int = 15, round_seconds: float = 5e-4, seed: int = 0
) -> list[list[float]]:
    """Seconds per invoke of each float model, one figure per round, timed in this process.

    Each model gets an interpreter as the host bench builds its own (XNNPACK on, one thread), seeded
    standard-normal inputs and a few warm-up invokes; then every round times each model in turn (so
    drift and load hit all alike), each model invoked often enough to fill about `round_seconds`
    (a 10 µs layer is below the clock's useful resolution once, not ten times). For many tiny models
    (a layer each) where the host bench's process per model would cost more than the timing.
    """
    from edgeport.tensors import TensorSpec, random_inputs

    interpreters, repeats = [], []
    for index, model in enumerate(models):
        runner = interpreter(model, delegates=True, threads=1)
        runner.allocate_tensors()
        details = runner.get_input_details()
        specs = [
            TensorSpec(d["name"], [int(n) for n in d["shape"]], np.dtype(d["dtype"]).name) for d in details
        ]
        values = random_inputs(specs, 1, seed + index)[0]
        for detail, spec in zip(details, specs, strict=True):
            runner.set_tensor(detail["index"], values[spec.name])
        for _ in range(3):
            runner.invoke()
        start = time.perf_counter()
        runner.invoke()
        once = time.perf_counter() - start
        interpreters.append(runner)
        repeats.append(max(1, min(100, round(round_seconds / max(once, 1e-7)))))
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for runner, count, measured in zip(interpreters, repeats, times, strict=True):
            invoke = runner.invoke
            start = time.perf_counter()
            for _ in range(count):
                invoke()
            measured.append((time.perf_counter() - start) / count)
    return times
