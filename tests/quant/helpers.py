"""Hand-built ONNX graphs and onnxruntime comparisons for the quant/ pass tests."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

RNG_SEED = 0


def make_model(
    nodes: list[onnx.NodeProto],
    inputs: dict[str, list[int]],
    outputs: list[str],
    inits: dict[str, np.ndarray],
    opset: int = 17,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    # Graph optimisations off: compare the graphs as written, not as onnxruntime rewrites them.
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def random_feeds(model: onnx.ModelProto, seed: int = RNG_SEED) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        feeds[inp.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


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


def op_count(model: onnx.ModelProto, op: str) -> int:
    return sum(1 for n in model.graph.node if n.op_type == op)


def bn_params(prefix: str, channels: int, rng: np.random.Generator, positive: bool = True, **over) -> dict:
    gamma = rng.uniform(0.5, 2.0, channels) * (1 if positive else rng.choice([-1, 1], channels))
    params = {
        f"{prefix}_g": gamma,
        f"{prefix}_b": rng.standard_normal(channels),
        f"{prefix}_m": rng.standard_normal(channels),
        f"{prefix}_v": rng.uniform(0.5, 2.0, channels),
    }
    for key, value in over.items():
        params[f"{prefix}_{key}"] = np.broadcast_to(np.asarray(value, np.float64), (channels,)).copy()
    return params


def bn_node(prefix: str, x: str, y: str, eps: float = 1e-5) -> onnx.NodeProto:
    return helper.make_node(
        "BatchNormalization",
        [x, f"{prefix}_g", f"{prefix}_b", f"{prefix}_m", f"{prefix}_v"],
        [y],
        name=prefix,
        epsilon=eps,
    )
