"""Data-free cross-layer equalization and high-bias absorption (Nagel et al. 2019, "DFQ").

Cross-layer equalization: for two linear layers L1 -> act -> L2 where act is positively homogeneous
(ReLU, LeakyReLU, PReLU, MaxPool, or nothing), act(y / s) = act(y) / s for s > 0, so dividing output
channel i of L1 (weights and bias) by s_i and multiplying input channel i of L2 by s_i leaves the
network unchanged. With r1_i = max|W1[i]| and r2_i = max|W2[:, i]|, s_i = sqrt(r1_i / r2_i) makes both
ranges sqrt(r1_i * r2_i): per-tensor int8 quantization then loses much less on the small channels.
Pairs are equalized in turn until the scales settle (a layer in a chain has two neighbours).
ReLU6 (Clip 0..6) is skipped: its bound would become per-channel, which one Clip cannot express, and
DFQ's ReLU6 -> ReLU substitution changes the function. Scaling is exact with zero padding.

High-bias absorption: with pre-activation statistics (mean beta, std gamma from the folded BN),
c = max(0, beta - 3*gamma) is moved out of L1's bias into L2's bias: relu(x - c) + c = relu(x) for
every x >= c (99.87 % of a Gaussian), so this is exact on every input where that holds and only
done when L2 does not zero-pad (a padded border would not receive the shifted value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from edgeport.onnx_graph import OnnxGraph, attr
from edgeport.quant.bn_fold import LINEAR_OPS, Affine, Folder, Plan, has_padding

_HOMOGENEOUS = ("Relu", "LeakyRelu", "PRelu", "MaxPool", "Identity")


@dataclass
class EqualizationReport:
    pairs: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    iterations: int = 0
    # tensor name -> per-channel factor its values were multiplied by (1/s)
    scales: dict[str, list[float]] = field(default_factory=dict)
    activation_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass": "equalize_cross_layer",
            "pairs": len(self.pairs),
            "iterations": self.iterations,
            "pairs_detail": self.pairs,
            "skipped": self.skipped,
        }


@dataclass
class BiasAbsorptionReport:
    absorbed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"pass": "absorb_high_bias", "absorbed": self.absorbed, "skipped": self.skipped}


@dataclass
class _Pair:
    first: onnx.NodeProto
    act: onnx.NodeProto | None
    second: onnx.NodeProto
    tensor: str  # L1's output


def _weight(g: OnnxGraph, node: onnx.NodeProto) -> np.ndarray | None:
    w = g.input_const(node, 1) if len(node.input) > 1 else None
    return w if w is not None and w.dtype.type in (np.float32, np.float64) else None


def _out_ranges(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    w = np.abs(w.astype(np.float64))
    if node.op_type == "Conv":
        return w.reshape(w.shape[0], -1).max(1)
    if node.op_type == "ConvTranspose":
        group = attr(node, "group", 1)
        wr = w.reshape([group, w.shape[0] // group, w.shape[1], -1])
        return wr.transpose(0, 2, 1, 3).reshape(group * w.shape[1], -1).max(1)
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return w.max(1)
    return w.max(0)  # Gemm / MatMul: [K, N]


def _in_ranges(node: onnx.NodeProto, w: np.ndarray) -> np.ndarray:
    w = np.abs(w.astype(np.float64))
    if node.op_type == "Conv":
        group = attr(node, "group", 1)
        out_c, per_in = w.shape[0], w.shape[1]
        per_out = out_c // group
        r = w.reshape(group, per_out, per_in, -1).max(axis=(1, 3))  # [group, per_in]
        return r.reshape(-1)
    if node.op_type == "ConvTranspose":
        return w.reshape(w.shape[0], -1).max(1)
    if node.op_type == "Gemm" and attr(node, "transB", 0):
        return w.max(0)
    return w.max(1)


def _find_pairs(g: OnnxGraph, report: EqualizationReport | None) -> list[_Pair]:
    pairs = []
    for node in g.graph.node:
        if node.op_type not in LINEAR_OPS or _weight(g, node) is None:
            continue
        t = node.output[0]
        readers = g.consumers(t)
        if g.is_graph_output(t) or len(readers) != 1:
            continue
        act, nxt = None, readers[0]
        if nxt.op_type in _HOMOGENEOUS or nxt.op_type == "Clip":
            act = nxt
            out = act.output[0]
            more = g.consumers(out)
            if g.is_graph_output(out) or len(more) != 1 or len([o for o in act.output if o]) > 1:
                continue
            if act.op_type == "Clip":
                if report is not None:
                    report.skipped.append(
                        {"first": node.name, "reason": "ReLU6/Clip bound would become per-channel"}
                    )
                continue
            if act.op_type == "PRelu" and g.const(act.input[1]) is None:
                continue
            nxt = more[0]
        if nxt.op_type not in LINEAR_OPS or nxt.input[0] != (act.output[0] if act else t):
            continue
        if _weight(g, nxt) is None or list(nxt.input).count(nxt.input[0]) != 1:
            continue
        if nxt.op_type == "Gemm" and attr(nxt, "transA", 0):
            continue
        pairs.append(_Pair(node, act, nxt, t))
    return pairs


def _affine(g: OnnxGraph, tensor: str, factor: np.ndarray) -> Affine | None:
    rank = g.rank(tensor)
    if rank is None:
        return None
    producer = g.producer(tensor)
    axis = rank - 1 if producer is not None and producer.op_type in ("MatMul", "Gemm") else 1
    return Affine(factor, np.zeros_like(factor), axis, rank)


def _apply_scale(g: OnnxGraph, pair: _Pair, s: np.ndarray) -> str | None:
    """L1 output channel i divided by s_i, L2 input channel i multiplied by s_i."""
    folder = Folder(g)
    plan = Plan(g)
    out_affine = _affine(g, pair.tensor, 1.0 / s)
    if out_affine is None:
        return "unknown rank"
    why = folder.absorb_out(plan, pair.first, out_affine)
    if why is None:
        # L2 now reads act(y / s) = act(y) / s: multiply its input channels back by s.
        why = folder.absorb_in(
            plan, pair.second, Affine(s, np.zeros_like(s), out_affine.axis, out_affine.rank)
        )
    if why is None and not plan.finite():
        why = "non-finite weights"
    if why is None:
        plan.commit()
    return why


def equalize_cross_layer(
    model: onnx.ModelProto,
    max_iterations: int = 20,
    tolerance: float = 1e-4,
    activation_stats: dict[str, dict[str, list[float]]] | None = None,
) -> tuple[onnx.ModelProto, EqualizationReport]:
    """Equalize per-channel weight ranges of consecutive linear layers; exact in float.

    `activation_stats` (from BnFoldReport.activation_stats) are rescaled along with the tensors they
    describe and returned in the report, ready for `absorb_high_bias`.
    """
    g = OnnxGraph(model)
    g.name_unnamed_nodes()  # the report refers to nodes by name
    report = EqualizationReport()
    pairs = _find_pairs(g, report)
    total: dict[str, np.ndarray] = {}
    failed: set[str] = set()
    for it in range(max_iterations):
        report.iterations = it + 1
        worst = 0.0
        for pair in pairs:
            if pair.first.name in failed:
                continue
            r1 = _out_ranges(pair.first, _weight(g, pair.first))
            r2 = _in_ranges(pair.second, _weight(g, pair.second))
            if r1.shape != r2.shape:
                failed.add(pair.first.name)
                report.skipped.append({"first": pair.first.name, "reason": "channel counts differ"})
                continue
            ok = (r1 > 0) & (r2 > 0) & np.isfinite(r1) & np.isfinite(r2)
            s = np.ones_like(r1)
            s[ok] = np.sqrt(r1[ok] / r2[ok])
            why = _apply_scale(g, pair, s)
            if why:
                failed.add(pair.first.name)
                report.skipped.append({"first": pair.first.name, "second": pair.second.name, "reason": why})
                continue
            total[pair.tensor] = total.get(pair.tensor, np.ones_like(s)) / s
            worst = max(worst, float(np.max(np.abs(np.log(s)))))
        if worst < tolerance:
            break
    for pair in pairs:
        if pair.first.name in failed or pair.tensor not in total:
            continue
        r1 = _out_ranges(pair.first, _weight(g, pair.first))
        report.pairs.append(
            {
                "first": pair.first.name,
                "second": pair.second.name,
                "through": pair.act.op_type if pair.act is not None else None,
                "channels": int(r1.shape[0]),
                "range_spread_after": float(r1.max() / max(r1.min(), 1e-30)),
            }
        )
        report.scales[pair.tensor] = total[pair.tensor].tolist()
    for tensor, stats in (activation_stats or {}).items():
        factor = total.get(tensor)
        if factor is None:
            report.activation_stats[tensor] = stats
        else:
            report.activation_stats[tensor] = {
                "mean": (np.asarray(stats["mean"]) * factor).tolist(),
                "std": (np.asarray(stats["std"]) * factor).tolist(),
            }
    return g.finish(), report


def absorb_high_bias(
    model: onnx.ModelProto,
    activation_stats: dict[str, dict[str, list[float]]],
    sigmas: float = 3.0,
) -> tuple[onnx.ModelProto, BiasAbsorptionReport]:
    """Move c = max(0, mean - sigmas*std) from L1's bias into L2's bias across a ReLU.

    `activation_stats` maps L1 output tensors to the pre-activation mean/std (BnFoldReport, or
    EqualizationReport.activation_stats after equalization).
    """
    g = OnnxGraph(model)
    g.name_unnamed_nodes()  # the report refers to nodes by name
    report = BiasAbsorptionReport()
    folder = Folder(g)
    for pair in _find_pairs(g, None):
        stats = activation_stats.get(pair.tensor)
        if stats is None:
            continue
        if pair.act is None or pair.act.op_type != "Relu":
            report.skipped.append({"first": pair.first.name, "reason": "no ReLU between the layers"})
            continue
        if pair.second.op_type in ("Conv", "ConvTranspose") and (
            pair.second.op_type == "ConvTranspose" or has_padding(pair.second)
        ):
            report.skipped.append({"first": pair.first.name, "reason": f"{pair.second.name} zero-pads"})
            continue
        c = np.maximum(
            0.0, np.asarray(stats["mean"], np.float64) - sigmas * np.asarray(stats["std"], np.float64)
        )
        if not np.any(c > 0):
            continue
        plan = Plan(g)
        A = _affine(g, pair.tensor, np.ones_like(c))
        if A is None:
            continue
        # L1 output becomes y - c; L2 reads relu(y - c) = relu(y) - c and adds W2 @ c back.
        why = folder.absorb_out(plan, pair.first, Affine(A.scale, -c, A.axis, A.rank))
        if why is None:
            in_rank = g.rank(pair.second.input[0]) or A.rank
            why = folder.absorb_in(plan, pair.second, Affine(A.scale, c, A.axis, in_rank))
        if why is None and plan.finite():
            plan.commit()
            report.absorbed.append(
                {"first": pair.first.name, "second": pair.second.name, "channels": int(np.sum(c > 0))}
            )
        else:
            report.skipped.append({"first": pair.first.name, "reason": why or "non-finite weights"})
    return g.finish(), report
