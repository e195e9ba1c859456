"""Hand-built ONNX graphs and onnxruntime comparisons for the quant/ pass tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from tests.onnx_graphs import make_model, max_rel_error, random_feeds, run

__all__ = ["bn_node", "bn_params", "make_model", "max_rel_error", "op_count", "random_feeds", "run"]


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
