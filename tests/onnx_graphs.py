"""Hand-built ONNX graphs and onnxruntime comparisons, shared by the graph-pass tests
(tests/converters: the onnx2tf rewrites; tests/quant: BN folding and equalization)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgeport.runtimes import onnxrt


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int]],
    outputs: list[str],
    inits: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> onnx.ModelProto:
    """A float32 graph; float64 constants become float32, integer ones (shapes, indices) stay."""
    tensors = []
    for name, value in (inits or {}).items():
        array = np.asarray(value)
        tensors.append(
            numpy_helper.from_array(array.astype(np.float32) if array.dtype == np.float64 else array, name)
        )
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [],
        tensors,
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    # Graph outputs take their types from shape inference, as an exporter would write them.
    inferred = {v.name: v for v in onnx.shape_inference.infer_shapes(m).graph.value_info}
    m.graph.output.extend(
        inferred.get(name) or helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs
    )
    onnx.checker.check_model(m)
    return m


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    # Graph optimisations off: compare the graphs as written, not as onnxruntime rewrites them.
    return onnxrt.session(model.SerializeToString(), optimize=False).run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    return {
        inp.name: rng.standard_normal([d.dim_value for d in inp.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for inp in model.graph.input
        if inp.name not in inits
    }


def ops(model: onnx.ModelProto) -> dict[str, int]:
    return dict(Counter(n.op_type for n in model.graph.node))


def max_rel_error(before: onnx.ModelProto, after: onnx.ModelProto, samples: int = 3) -> float:
    """Largest |after - before| / max|before| over all outputs, on random inputs."""
    worst = 0.0
    for seed in range(samples):
        feeds = random_feeds(before, seed)
        for a, b in zip(run(before, feeds), run(after, feeds), strict=True):
            assert a.shape == b.shape
            assert np.all(np.isfinite(b))
            worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-12)))
    return worst


def assert_same_outputs(before: onnx.ModelProto, after: onnx.ModelProto, seed: int = 0) -> None:
    onnx.checker.check_model(after)
    feeds = random_feeds(before, seed)
    for a, b in zip(run(before, feeds), run(after, feeds), strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
