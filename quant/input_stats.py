"""What a model's input values look like, with no data: per-channel mean/std and a hard range.

A model fed raw 0..255 pixels must not be calibrated with N(0, 1) inputs: every activation range
would be ~100x too small and the int8 input scale would clip almost everything. In order of trust:

0. the user fixed the value: `--input-value sr=16000` (a sample rate, a mode flag);
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

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeport.errors import EdgeportError
from edgeport.options import Spell
from edgeport.tensors import Sample, TensorSpec, index_values, random_inputs

_ELEMENTWISE = ("Sub", "Div", "Mul", "Add")
FIXED = "fixed"  # InputStats.source of a value the user fixed (std 0: every draw is the value)
EVERY_INPUT = "*"  # the key of a range given for every input (`--input-range lo,hi`)


@dataclass
class InputStats:
    """Statistics of one input along its channel axis (axis 1, source layout); scalars broadcast."""

    mean: np.ndarray
    std: np.ndarray
    source: str  # how they were found: "fixed", "user", "normalization", "batchnorm", "default"
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

    def fixed_value(self, spec: TensorSpec) -> np.ndarray:
        """The value of a FIXED input, shaped and typed as `spec`."""
        mean, _ = self.broadcast(list(spec.shape))
        return np.broadcast_to(mean, spec.shape).astype(spec.dtype)


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


def _channels(spec: TensorSpec) -> int:
    return spec.shape[1] if len(spec.shape) >= 2 else 1


def fixed_stats(spec: TensorSpec, values: Sequence[float], what: str) -> InputStats:
    """`--input-value NAME=VALUE` for input `spec`: one number, or one per channel (axis 1)."""
    given = f"{what} {spec.name}={','.join(f'{v:g}' for v in values)}"
    channels = _channels(spec)
    if len(values) not in (1, channels):
        takes = "one number" + (f" or {channels} (one per channel)" if channels > 1 else "")
        raise EdgeportError(
            f"{given} has {len(values)} values, but input {spec.name!r} "
            f"(shape {list(spec.shape)}) takes {takes}",
            f"give {takes}",
        )
    if not _is_float(spec) and any(v != round(v) for v in values):
        raise EdgeportError(f"{given}: input {spec.name!r} is {spec.dtype}", "give an integer value")
    value = np.asarray(values, np.float64)
    return InputStats(value, np.zeros_like(value), FIXED, float(value.min()), float(value.max()))


def user_stats(
    spec: TensorSpec,
    mean: list[float] | None,
    std: list[float] | None,
    value_range: tuple[float, float] | None,
    spell: Spell,
) -> InputStats | None:
    """The statistics the user gave for input `spec` (mean/std per channel of a float input; an integer
    input takes a range only, which must hold an integer)."""
    if not _is_float(spec):
        if value_range is not None and math.ceil(value_range[0]) > math.floor(value_range[1]):
            raise EdgeportError(
                f"{spell('input_range')} {spec.name}={value_range[0]:g},{value_range[1]:g} holds no integer, "
                f"and input {spec.name!r} is {spec.dtype}",
                "give integer bounds, e.g. 0,999 for token ids",
            )
        return from_user(None, None, value_range)
    channels = _channels(spec)
    for values, option in ((mean, "mean"), (std, "std")):
        if values is not None and len(values) not in (1, channels):
            raise EdgeportError(
                f"{spell(option)} has {len(values)} values, input {spec.name!r} has {channels} channels",
                f"give one value or {channels}",
            )
    return from_user(mean, std, value_range)


def resolve_input_stats(
    specs: Sequence[TensorSpec],
    inferred: Mapping[str, InputStats],
    ranges: Mapping[str, tuple[float, float]],
    mean: list[float] | None,
    std: list[float] | None,
    values: Mapping[str, Sequence[float]],
    spell: Spell,
) -> dict[str, InputStats]:
    """Per input, what verification and calibration draw it from: a fixed value, else what the user
    said (a range for that input, else the one for every input, with --mean/--std), else what the graph
    showed. A range for every input applies to the float inputs, or to the integer ones (token ids)
    when there is no float input; --mean/--std describe float inputs only."""
    by_name = {s.name: s for s in specs}
    for option, names in (("input_values", values), ("input_range", ranges)):
        unknown = [n for n in names if n != EVERY_INPUT and n not in by_name]
        if unknown:
            raise EdgeportError(
                f"{spell(option)} {unknown[0]}=... names no input of the model",
                f"name one of its inputs: {', '.join(by_name)}",
            )
    floats = [s for s in specs if _is_float(s)]
    described = next((o for o, v in (("mean", mean), ("std", std)) if v is not None), None)
    if described and not floats:
        raise EdgeportError(
            f"{spell(described)} describes float inputs, and the model has none",
            f"drop it; an integer input takes {spell('input_range')} NAME=lo,hi",
        )
    stats = dict(inferred)
    every = ranges.get(EVERY_INPUT)
    given = {s.name: every for s in floats or specs} if every is not None or described else {}
    given.update((name, value_range) for name, value_range in ranges.items() if name != EVERY_INPUT)
    for name, value_range in given.items():
        found = user_stats(by_name[name], mean, std, value_range, spell)
        if found is not None:
            stats[name] = found
    for name, value in values.items():
        stats[name] = fixed_stats(by_name[name], value, spell("input_values"))
    return stats


def with_fixed_values(sample: Sample, specs: Sequence[TensorSpec], stats: Mapping[str, InputStats]) -> Sample:
    """`sample` with every FIXED input set to its value."""
    fixed = {
        s.name: stats[s.name].fixed_value(s)
        for s in specs
        if s.name in stats and stats[s.name].source == FIXED
    }
    return {**sample, **fixed}


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
    really see. An input's values always stay inside its hard range, where the model is defined; an
    integer input with a range (token ids) is drawn uniformly over its integers; a fixed input has its
    value in every sample.
    """
    stats = _known(specs, stats)
    drawn = _drawn(stats)
    samples = random_inputs(specs, count, seed)
    rng = np.random.default_rng([seed, 1])
    for kind in _kinds(drawn):
        samples += [
            {
                spec.name: _draw(rng, spec, kind if spec.name in drawn else "normal", drawn.get(spec.name))
                for spec in specs
            }
            for _ in range(count)
        ]
    by_name = {s.name: s for s in specs}
    for index, sample in enumerate(samples):
        for name, st in drawn.items():
            if st.low is not None:
                low, high = _bounds(by_name[name], st)
                # asarray: np.clip of a 0-d array (a scalar input) returns a numpy scalar, not an array.
                sample[name] = np.asarray(np.clip(sample[name], low, high), sample[name].dtype)
        samples[index] = with_fixed_values(sample, specs, stats)
    return samples


def verification_sample_kinds(
    specs: Sequence[TensorSpec], count: int, stats: Mapping[str, InputStats] | None = None
) -> list[str]:
    """What verification_samples draws, one line per group, for the manifest."""
    stats = _known(specs, stats)
    drawn = _drawn(stats)
    lines = [f"{count} standard-normal"]
    for kind in _kinds(drawn):
        if kind == "stats":
            found = ", ".join(f"{name}: {st.source}" for name, st in drawn.items())
            lines.append(f"{count} normal with the inputs' statistics ({found})")
        else:
            ranges = ", ".join(
                f"{n}: [{st.low:g}, {st.high:g}]" for n, st in drawn.items() if st.low is not None
            )
            lines.append(f"{count} uniform over the inputs' ranges ({ranges})")
    fixed = [f"{name} = {_fixed_text(st)}" for name, st in stats.items() if st.source == FIXED]
    if fixed:
        lines.append(f"every sample with {', '.join(fixed)}")
    return lines


def _fixed_text(st: InputStats) -> str:
    return ",".join(f"{v:g}" for v in np.atleast_1d(st.mean))


def _known(specs: Sequence[TensorSpec], stats: Mapping[str, InputStats] | None) -> dict[str, InputStats]:
    """The statistics of the float inputs, and of the integer ones the user gave (a range, a value)."""
    return {
        s.name: stats[s.name]
        for s in specs
        if stats and s.name in stats and (_is_float(s) or stats[s.name].source in ("user", FIXED))
    }


def _drawn(stats: Mapping[str, InputStats]) -> dict[str, InputStats]:
    """The inputs drawn from their statistics (a fixed one is not drawn)."""
    return {name: st for name, st in stats.items() if st.source != FIXED}


def _bounds(spec: TensorSpec, st: InputStats) -> tuple[float, float]:
    """The input's hard range; an integer input's, rounded inward to integers."""
    assert st.low is not None and st.high is not None
    if _is_float(spec):
        return st.low, st.high
    return math.ceil(st.low), math.floor(st.high)


def integer_samples(rng: np.random.Generator, spec: TensorSpec, st: InputStats | None) -> np.ndarray:
    """One value of an integer input (token ids), uniform over its integers: its known range
    (--input-range, --input-value) rounded inward, else DEFAULT_INDEX_RANGE (as random_inputs). Noise
    cast to integers would be 0 and +-1 only (and a negative index), no use for an embedding."""
    known = st is not None and st.low is not None and st.high is not None
    return index_values(rng, spec, *_bounds(spec, st)) if known else index_values(rng, spec)


def _kinds(stats: Mapping[str, InputStats]) -> list[str]:
    """The sample groups drawn besides the standard-normal one."""
    has_range = any(st.low is not None for st in stats.values())
    return (["stats"] if stats else []) + (["uniform"] if has_range else [])


def _is_float(spec: TensorSpec) -> bool:
    return np.dtype(spec.dtype).kind == "f"


def _draw(rng: np.random.Generator, spec: TensorSpec, kind: str, st: InputStats | None) -> np.ndarray:
    """One value of `spec`: N(0, 1), N(mean, std) per channel, or uniform over the input's range (an
    integer input with a range: uniform over its integers, whichever the kind)."""
    if not _is_float(spec):
        return integer_samples(rng, spec, None if kind == "normal" else st)
    if st is None or kind == "normal":
        x = rng.standard_normal(spec.shape)
    elif kind == "uniform" and st.low is not None:
        x = rng.uniform(st.low, st.high, spec.shape)
    else:
        mean, std = st.broadcast(list(spec.shape))
        x = mean + std * rng.standard_normal(spec.shape)
    return np.asarray(x, spec.dtype)  # arithmetic on a 0-d array (a scalar input) gives a numpy scalar
