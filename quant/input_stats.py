"""What a model's input values look like, with no data: per-channel mean/std and a hard range.

A model fed raw 0..255 pixels must not be calibrated with N(0, 1) inputs: every activation range
would be ~100x too small and the int8 input scale would clip almost everything. In order of trust:

1. the user said so: `--mean/--std` (the input's per-channel statistics) or `--input-range lo,hi`;
2. the model normalises its input itself: a leading chain of Sub/Div/Mul/Add by constants maps the
   raw input to what the first layer was trained on; inverting that chain from N(0, 1) gives the
   raw input's statistics (this is what `(x / 255 - mean) / std` inside the model exports to);
3. the first layer is Conv/Gemm followed by a BatchNorm: the BN's running mean/var are the
   statistics of W x + b on the training data, so E[x] per channel solves a least-squares system
   and Var[x] another (assuming independent input elements: this underestimates the correlated
   pixels of natural images, so it is a starting point that BN-matching distillation refines);
4. nothing known: N(0, 1), and the caller says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeport.tensors import Sample, TensorSpec, random_inputs

_ELEMENTWISE = ("Sub", "Div", "Mul", "Add")


@dataclass
class InputStats:
    """Statistics of one input along its channel axis (axis 1, source layout); scalars broadcast."""

    mean: np.ndarray
    std: np.ndarray
    source: str  # how they were found: "user", "normalization", "batchnorm", "default"
    low: float | None = None  # hard range the values never leave (e.g. 0..255), when known
    high: float | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "mean": np.round(np.atleast_1d(self.mean), 6).tolist(),
            "std": np.round(np.atleast_1d(self.std), 6).tolist(),
        }
        if self.low is not None:
            out["range"] = [self.low, self.high]
        out.update(self.detail)
        return out

    def broadcast(self, shape: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """mean and std shaped to broadcast against a tensor of `shape` (channels on axis 1)."""
        mean, std = np.atleast_1d(self.mean), np.atleast_1d(self.std)
        if mean.size == 1 or len(shape) < 2:
            return mean.reshape(-1)[:1].reshape([1] * len(shape)), std.reshape(-1)[:1].reshape(
                [1] * len(shape)
            )
        view = [1, -1] + [1] * (len(shape) - 2)
        return mean.reshape(view), std.reshape(view)


def default_stats() -> InputStats:
    return InputStats(np.zeros(1), np.ones(1), "default")


def from_user(
    mean: list[float] | None, std: list[float] | None, input_range: tuple[float, float] | None
) -> InputStats | None:
    """Statistics the user gave; a range alone becomes a uniform distribution's mean/std."""
    if mean is None and std is None and input_range is None:
        return None
    low, high = input_range if input_range else (None, None)
    if mean is None:
        mean = [(low + high) / 2] if input_range else [0.0]
    if std is None:
        # The std of a uniform distribution over the range: every value in range is plausible.
        std = [(high - low) / np.sqrt(12.0)] if input_range else [1.0]
    return InputStats(np.asarray(mean, np.float64), np.asarray(std, np.float64), "user", low, high)


def _const(model: onnx.ModelProto, name: str) -> np.ndarray | None:
    for init in model.graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init).astype(np.float64)
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            return numpy_helper.to_array(node.attribute[0].t).astype(np.float64)
    return None


def _consumers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if tensor in n.input]


def _per_channel(c: np.ndarray, rank: int) -> np.ndarray | None:
    """A constant that broadcasts per channel (axis 1) or as a scalar -> 1-D vector, else None."""
    if c.size == 1:
        return c.reshape(1)
    squeezed = c.reshape(c.shape[-rank:]) if c.ndim > rank else c
    full = [1] * (rank - squeezed.ndim) + list(squeezed.shape)
    if rank >= 2 and all(d == 1 for i, d in enumerate(full) if i != 1):
        return squeezed.reshape(-1)
    return None


def _normalization(model: onnx.ModelProto, name: str, rank: int) -> InputStats | None:
    """Invert a leading chain of elementwise ops by constants: y = a * x + b per channel."""
    a, b = np.ones(1), np.zeros(1)
    tensor, steps = name, []
    while True:
        readers = _consumers(model, tensor)
        if len(readers) != 1 or readers[0].op_type not in _ELEMENTWISE:
            break
        node = readers[0]
        if node.input[0] != tensor:
            break  # constant - x or constant / x: not an affine map of x we invert here
        c = _const(model, node.input[1])
        vec = _per_channel(c, rank) if c is not None else None
        if vec is None or (node.op_type == "Div" and np.any(vec == 0)):
            break
        if node.op_type == "Sub":
            b = b - vec
        elif node.op_type == "Add":
            b = b + vec
        elif node.op_type == "Mul":
            a, b = a * vec, b * vec
        else:
            a, b = a / vec, b / vec
        steps.append(node.op_type)
        tensor = node.output[0]
    if not steps or np.any(a == 0):
        return None
    # The normalised value y is N(0, 1): x = (y - b) / a.
    return InputStats(-b / a, 1.0 / np.abs(a), "normalization", detail={"ops": steps})


def _first_bn(model: onnx.ModelProto, name: str) -> InputStats | None:
    """input -> Conv/Gemm -> BatchNormalization: solve for the input's per-channel mean and std."""
    readers = _consumers(model, name)
    if len(readers) != 1 or readers[0].op_type not in ("Conv", "Gemm"):
        return None
    layer = readers[0]
    bns = _consumers(model, layer.output[0])
    if len(bns) != 1 or bns[0].op_type != "BatchNormalization":
        return None
    w = _const(model, layer.input[1])
    bias = _const(model, layer.input[2]) if len(layer.input) > 2 and layer.input[2] else None
    mean = _const(model, bns[0].input[3])
    var = _const(model, bns[0].input[4])
    if w is None or mean is None or var is None:
        return None
    if layer.op_type == "Gemm":
        trans_b = any(a.name == "transB" and a.i for a in layer.attribute)
        w = w if trans_b else w.T  # -> [out, in]
        group = 1
        per_in = w[:, :, None]
    else:
        group = next((a.i for a in layer.attribute if a.name == "group"), 1)
        per_in = w.reshape(w.shape[0], w.shape[1], -1)
    if group != 1:
        return None
    s1 = per_in.sum(axis=2)  # [out, in]: E[y] = s1 @ m + bias
    s2 = (per_in**2).sum(axis=2)  # [out, in]: Var[y] = s2 @ v (independent inputs)
    target = mean - (bias if bias is not None else 0.0)
    m, *_ = np.linalg.lstsq(s1, target, rcond=None)
    v, *_ = np.linalg.lstsq(s2, np.maximum(var, 0.0), rcond=None)
    positive = v[v > 0]
    floor = positive.min() if positive.size else 1.0
    v = np.where(v > 0, v, floor)
    if not (np.all(np.isfinite(m)) and np.all(np.isfinite(v))):
        return None
    return InputStats(m, np.sqrt(v), "batchnorm", detail={"layer": layer.name, "bn": bns[0].name})


def infer_input_stats(model: onnx.ModelProto) -> dict[str, InputStats]:
    """Per graph input, what its values look like, from the graph alone (before BN folding)."""
    inits = {i.name for i in model.graph.initializer}
    found = {}
    for inp in model.graph.input:
        if inp.name in inits or inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        rank = len(inp.type.tensor_type.shape.dim)
        stats = _normalization(model, inp.name, rank) or _first_bn(model, inp.name)
        if stats is not None:
            found[inp.name] = stats
    return found


# ---- inputs drawn with these statistics (verification) ---------------------------------------------


def verification_samples(
    specs: Sequence[TensorSpec], count: int, seed: int, stats: Mapping[str, InputStats] | None = None
) -> list[Sample]:
    """Inputs for verification: `count` standard-normal samples, and, for inputs whose values are known
    (--input-range / --mean / --std, or the model's own normalisation or first BatchNorm), `count` more
    from those statistics and, with a hard range, `count` uniform over it.

    A rewrite that is exact only for N(0, 1)-sized inputs is then caught on the inputs the model will
    really see. An input's values always stay inside its hard range, where the model is defined.
    """
    stats = _known(specs, stats)
    samples = random_inputs(specs, count, seed)
    rng = np.random.default_rng([seed, 1])
    for kind in _kinds(stats):
        samples += [
            {
                spec.name: _draw(rng, spec, kind if spec.name in stats else "normal", stats.get(spec.name))
                for spec in specs
            }
            for _ in range(count)
        ]
    for sample in samples:
        for name, st in stats.items():
            if st.low is not None:
                # asarray: np.clip of a 0-d array (a scalar input) returns a numpy scalar, not an array.
                sample[name] = np.asarray(np.clip(sample[name], st.low, st.high), sample[name].dtype)
    return samples


def verification_sample_kinds(
    specs: Sequence[TensorSpec], count: int, stats: Mapping[str, InputStats] | None = None
) -> list[str]:
    """What verification_samples draws, one line per group, for the manifest."""
    stats = _known(specs, stats)
    lines = [f"{count} standard-normal"]
    for kind in _kinds(stats):
        if kind == "stats":
            found = ", ".join(f"{name}: {st.source}" for name, st in stats.items())
            lines.append(f"{count} normal with the inputs' statistics ({found})")
        else:
            ranges = ", ".join(
                f"{n}: [{st.low:g}, {st.high:g}]" for n, st in stats.items() if st.low is not None
            )
            lines.append(f"{count} uniform over the inputs' ranges ({ranges})")
    return lines


def _known(specs: Sequence[TensorSpec], stats: Mapping[str, InputStats] | None) -> dict[str, InputStats]:
    return {s.name: stats[s.name] for s in specs if stats and s.name in stats and _is_float(s)}


def _kinds(stats: Mapping[str, InputStats]) -> list[str]:
    """The sample groups drawn besides the standard-normal one."""
    has_range = any(st.low is not None for st in stats.values())
    return (["stats"] if stats else []) + (["uniform"] if has_range else [])


def _is_float(spec: TensorSpec) -> bool:
    return np.dtype(spec.dtype).kind == "f"


def _draw(rng: np.random.Generator, spec: TensorSpec, kind: str, st: InputStats | None) -> np.ndarray:
    """One value of `spec`: N(0, 1), N(mean, std) per channel, or uniform over the input's range."""
    if not _is_float(spec):
        return rng.integers(0, 8, size=spec.shape).astype(spec.dtype)  # as random_inputs: index inputs
    if st is None or kind == "normal":
        x = rng.standard_normal(spec.shape)
    elif kind == "uniform" and st.low is not None:
        x = rng.uniform(st.low, st.high, spec.shape)
    else:
        mean, std = st.broadcast(list(spec.shape))
        x = mean + std * rng.standard_normal(spec.shape)
    return np.asarray(x, spec.dtype)  # arithmetic on a 0-d array (a scalar input) gives a numpy scalar
