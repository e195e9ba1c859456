"""Find the first ONNX node whose TFLite translation diverges, by bisection over graph prefixes.

When a converted model disagrees with its reference, the useful answer is *where*. Each probe cuts
the ONNX graph after one node (onnx.utils.Extractor), converts that prefix with the same onnx2tf
settings and compares it with onnxruntime on the same inputs. Divergence propagates downstream, so
a binary search over the topologically ordered nodes needs only log2(N) conversions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
from onnx import shape_inference

from edgeport.agreement import compare
from edgeport.converters.onnx_to_tflite import keras_to_tflite, onnx_to_keras
from edgeport.errors import EdgeportError
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.runtimes.onnxrt import run_onnx
from edgeport.tempdirs import make_tempdir, remove_tempdir
from edgeport.tensors import Sample, TensorSpec

MAX_PROBES = 12
# Ops whose subgraphs may read tensors of the enclosing graph, which a prefix cut can leave out.
_CONTROL_FLOW = ("If", "Loop", "Scan")


class NotLocalized(Exception):
    """Bisection cannot go on: a prefix of the graph is not a model onnxruntime runs. The message is
    the plain reason (no runtime internals), for the user's error line."""


def _unrunnable_prefix(model: onnx.ModelProto, prefix: onnx.ModelProto, tensor: str) -> NotLocalized:
    producer = next((n for n in model.graph.node if tensor in n.output), None)
    where = f"node {producer.name or tensor} ({producer.op_type})" if producer else f"tensor {tensor}"
    why = "is not a valid model for onnxruntime"
    flow = sorted({n.op_type for n in prefix.graph.node if n.op_type in _CONTROL_FLOW})
    if flow:
        why += f"; its {'/'.join(flow)} subgraphs read tensors the cut leaves out"
    return NotLocalized(f"the graph cut after {where} {why}")


def _float_outputs(model: onnx.ModelProto) -> list[tuple[int, str]]:
    """(node index, first output) for nodes whose output is a float tensor of known shape."""
    typed = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}
    found = []
    for index, node in enumerate(model.graph.node):
        info = typed.get(node.output[0]) if node.output else None
        if info is None or info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        if info.type.tensor_type.HasField("shape"):
            found.append((index, node.output[0]))
    return found


def prefix_diverges(
    model: onnx.ModelProto,
    tensor: str,
    samples: Sequence[Sample],
    in_specs: Sequence[TensorSpec],
    channels_first_inputs: Sequence[str],
    onnx2tf_options: dict[str, Any],
    tolerance: float,
) -> bool:
    """Convert the graph cut at `tensor`; True when its TFLite output disagrees with onnxruntime.

    Raises NotLocalized when onnxruntime cannot run the cut graph (no reference to compare with)."""
    workdir = make_tempdir("localize")
    try:
        path = workdir / "prefix.onnx"
        inputs = [s.name for s in in_specs]
        onnx.save(model, str(workdir / "full.onnx"))
        onnx.utils.extract_model(str(workdir / "full.onnx"), str(path), inputs, [tensor], check_model=False)
        prefix = onnx.load(str(path))
        try:
            reference = run_onnx(prefix.SerializeToString(), samples)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for a bad graph
            raise _unrunnable_prefix(model, prefix, tensor) from exc
        try:
            keras = onnx_to_keras(path, workdir, channels_first_inputs, False, onnx2tf_options)
            tflite = keras_to_tflite(keras.model)
        except EdgeportError:
            return True  # a prefix that does not even convert is where things go wrong
        out = prefix.graph.output[0]
        dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
        out_spec = TensorSpec(tensor, dims, channels_last=keras.output_channels_last.get(tensor, False))
        prefix_inputs = [
            TensorSpec(s.name, s.shape, s.dtype, keras.input_channels_last.get(s.name, False))
            for s in in_specs
        ]
        try:
            runner = LiteRTRunner(tflite, prefix_inputs, [out_spec])
            outputs = [runner.run(s) for s in samples]
        except (RuntimeError, ValueError):
            return True  # a prefix LiteRT refuses to run is broken too
        (error,) = compare("prefix", reference, outputs)
        return not error.max_rel_error < tolerance
    finally:
        remove_tempdir(workdir)


def first_diverging_node(
    model: onnx.ModelProto,
    samples: Sequence[Sample],
    in_specs: Sequence[TensorSpec],
    channels_first_inputs: Sequence[str],
    onnx2tf_options: dict[str, Any],
    tolerance: float,
    diverging_output: str,
) -> str | None:
    """'NodeName (OpType)' of the earliest node before `diverging_output` whose prefix diverges.

    Returns None when it cannot be pinned down within MAX_PROBES conversions; raises NotLocalized
    when a probe's prefix is not a model onnxruntime runs.
    """
    model = shape_inference.infer_shapes(model)
    candidates = _float_outputs(model)
    ends = [i for i, (_, name) in enumerate(candidates) if name == diverging_output]
    if not ends:
        return None
    lo, hi = 0, ends[0]  # invariant: candidates[hi] diverges (the converted model showed it)
    probes = 0
    while lo < hi and probes < MAX_PROBES:
        mid = (lo + hi) // 2
        probes += 1
        args = (samples, in_specs, channels_first_inputs, onnx2tf_options, tolerance)
        if prefix_diverges(model, candidates[mid][1], *args):
            hi = mid
        else:
            lo = mid + 1
    if lo != hi:
        return None
    node = model.graph.node[candidates[hi][0]]
    return f"{node.name or node.output[0]} ({node.op_type})"
