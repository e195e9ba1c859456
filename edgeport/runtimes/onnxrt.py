"""onnxruntime on the CPU: the reference run of an ONNX graph."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtimes.result import RunResult
from edgeport.tensors import Sample


def session(model_bytes: bytes, optimize: bool = True) -> Any:
    """An onnxruntime CPU session, quiet; `optimize=False` runs the graph as written (no graph rewrites)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def run_samples(model_bytes: bytes, samples: Sequence[Sample]) -> RunResult:
    """Every sample through the graph, outputs by the graph's output names, with each run's wall time."""
    start = time.perf_counter()
    runner = session(model_bytes)
    result = RunResult("onnxruntime", raw_outputs=[], init_seconds=time.perf_counter() - start)
    names = [o.name for o in runner.get_outputs()]
    for sample in samples:
        start = time.perf_counter()
        raw = runner.run(None, sample)
        result.invoke_seconds.append(time.perf_counter() - start)
        result.raw_outputs.append(raw)
        result.outputs.append(dict(zip(names, raw, strict=True)))
    return result


def run_onnx(model_bytes: bytes, samples: Sequence[Sample]) -> list[Sample]:
    """The outputs alone, by name, per sample."""
    return run_samples(model_bytes, samples).outputs


def run_source(model_bytes: bytes, samples: Sequence[Sample]) -> list[Sample]:
    """run_onnx on the user's source graph: one that does not run at the samples' shapes (an exporter
    that fixed an axis it marks dynamic, e.g. in a Reshape) is refused in one line naming the node."""
    try:
        return run_onnx(model_bytes, samples)
    except Exception as error:
        failure = run_failure(error)
        if failure is None:
            raise
        shapes = ", ".join(f"{name} {list(np.shape(value))}" for name, value in samples[0].items())
        raise EdgeportError(
            f"the source model does not run in onnxruntime at its input shape ({shapes}): {failure}",
            "give --input-shape the shape it was exported with (an exporter can fix an axis it marks "
            "dynamic, e.g. in a Reshape)",
        ) from None


_NODE_FAILURE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: (.*)")
# onnxruntime's status messages start with the C++ source and the check that failed:
# "/onnxruntime_src/.../reshape_helper.h:45 onnxruntime::ReshapeHelper::ReshapeHelper(...) a == b was false."
_CHECK = re.compile(r"^\S+\.(?:h|cc|cpp):\d+ .*? was false\.\s*")


def run_failure(error: Exception) -> str | None:
    """What an onnxruntime run failure says, in one line (the node and its message), or None when
    `error` is not onnxruntime's."""
    if not type(error).__module__.startswith("onnxruntime"):
        return None
    text = " ".join(str(error).split())
    found = _NODE_FAILURE.search(text)
    if found is None:
        return re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    op, node, message = found.groups()
    return f"{op} node '{node}': {_CHECK.sub('', message).rstrip('. ')}"
