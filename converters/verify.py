"""Verification around the comparison itself (edgeport/agreement.py): the PyTorch reference run, NaN /
inf weights and reference outputs refused, and a failed comparison turned into the user's error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from edgeport.agreement import REFERENCE_NOT_FINITE, compare
from edgeport.errors import EdgeportError
from edgeport.manifest import StageError
from edgeport.tensors import Sample, TensorSpec


def run_torch(
    module: Any, samples: Sequence[Sample], input_names: Sequence[str], output_names: Sequence[str]
) -> list[Sample]:
    import torch

    from edgeport.converters.torch_to_onnx import run_module

    results = []
    for sample in samples:
        outs = run_module(module, [torch.from_numpy(sample[n]) for n in input_names])
        results.append({n: o.detach().numpy() for n, o in zip(output_names, outs, strict=True)})
    return results


def model_inputs(samples: Sequence[Sample], specs: Sequence[TensorSpec]) -> list[Sample]:
    """Each sample with only the inputs `specs` names, integers in the spec's type: an input the ONNX
    passes folded into a constant (fold_fixed_inputs) is fed to the reference, not to the converted
    models, and int64 ids the reference takes are int32 in them (index_inputs_int32)."""
    dtypes = {s.name: np.dtype(s.dtype) for s in specs}
    return [{k: _as_spec(v, dtypes[k]) for k, v in sample.items() if k in dtypes} for sample in samples]


def _as_spec(value: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return value.astype(dtype) if value.dtype.kind in "iu" and dtype.kind in "iu" else value


# Ops whose output is bounded by 1 in magnitude (a probability, or tanh): its natural scale.
_UNIT_BOUNDED_OPS = ("Sigmoid", "HardSigmoid", "Softmax", "Tanh")
# The least error scale of such an output, as a fraction of its bound: with the 1e-4 tolerance, absolute
# differences up to 1e-6 (a few float32 steps of 1.0, what approximate logistic / exp kernels differ by
# near 0) pass, while any error that changes a probability at all still fails.
UNIT_BOUNDED_SCALE_FLOOR = 1e-2


def scale_floors(model: onnx.ModelProto) -> dict[str, float]:
    """The least error scale (edgeport.agreement.compare's `scale_floors`) of each output of `model`
    that a Sigmoid, HardSigmoid, Softmax or Tanh produces directly."""
    outputs = {o.name for o in model.graph.output}
    return {
        node.output[0]: UNIT_BOUNDED_SCALE_FLOOR
        for node in model.graph.node
        if node.op_type in _UNIT_BOUNDED_OPS and node.domain in ("", "ai.onnx") and node.output[0] in outputs
    }


def check_reference(outputs: Sequence[Sample], reference: str, notes: Sequence[str] = ()) -> None:
    """Refuse a reference (the source model) that gives NaN or inf on the verification inputs: nothing
    can be verified against it, so this runs before the slow conversion."""
    for error in compare("reference", outputs, outputs):
        if error.problem is not None:
            raise verification_failure(error, reference, 0.0, notes=notes)


def verification_failure(
    error: StageError, reference: str, tolerance: float, where: str = "", notes: Sequence[str] = ()
) -> EdgeportError:
    """The user-facing error for a stage that failed verification (`where`: e.g. the diverging node;
    `notes`: warnings of earlier passes, named when the reference itself is not finite)."""
    if error.problem is None:
        return EdgeportError(
            f"the {error.stage} model diverges from {reference} at output {error.output!r} (max rel. error "
            f"{error.max_rel_error:.2e} > {tolerance:.0e}){where}",
            "rerun with --debug for onnx2tf's per-node log and report the model; "
            "--keep-nchw sometimes avoids a layout bug",
        )
    if error.problem.startswith(REFERENCE_NOT_FINITE):
        return EdgeportError(
            f"the {reference} reference{error.problem.removeprefix('the reference')}: the model itself "
            "gives NaN or inf on these inputs, so no conversion of it can be verified"
            + "".join(f" ({note})" for note in notes),
            "check the weights (a BatchNorm with running variance <= 0 makes NaN) and the model's operations "
            "on standard-normal inputs (log or sqrt of a negative value, division by zero); inputs stay in "
            "their range when it is known (--input-range, --input-value, or a normalisation in the model)",
        )
    return EdgeportError(
        f"{error.problem}{where}",
        "rerun with --debug and report the model; --keep-nchw sometimes avoids a layout bug",
    )


# Ops whose inputs after the first are weights: an infinite value there is never meaningful (while
# -inf in a constant mask or a Clip bound can be).
_WEIGHT_OPS = (
    "Conv",
    "ConvTranspose",
    "Gemm",
    "MatMul",
    "BatchNormalization",
    "InstanceNormalization",
    "LayerNormalization",
    "GroupNormalization",
    "PRelu",
    "LSTM",
    "GRU",
    "RNN",
)


_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph (If / Loop bodies) in it."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def non_finite_weights(model: onnx.ModelProto) -> list[str]:
    """One line per constant tensor of `model` with NaN (anywhere) or inf (in a weight)."""
    problems = []
    for graph in _graphs(model.graph):
        weights = {name for n in graph.node if n.op_type in _WEIGHT_OPS for name in n.input[1:]}
        tensors = [("weight", t.name, t) for t in graph.initializer]
        tensors += [
            ("constant", n.output[0], a.t)
            for n in graph.node
            if n.op_type == "Constant"
            for a in n.attribute
            if a.name == "value"
        ]
        for what, name, tensor in tensors:
            if tensor.data_type not in _FLOAT_TYPES or tensor.data_location == onnx.TensorProto.EXTERNAL:
                continue
            value = numpy_helper.to_array(tensor)
            nan = int(np.count_nonzero(np.isnan(value)))
            inf = int(np.count_nonzero(np.isinf(value))) if name in weights else 0
            if nan or inf:
                kinds = " and ".join(
                    f"{count} {kind}" for count, kind in ((nan, "NaN"), (inf, "inf")) if count
                )
                problems.append(f"{what} {name!r} has {kinds} value(s) of {value.size}")
    return problems


def check_weights(model: onnx.ModelProto) -> None:
    """Refuse a model with NaN weights (or inf ones) before any conversion work."""
    problems = non_finite_weights(model)
    if problems:
        more = f" (and {len(problems) - 3} more tensors)" if len(problems) > 3 else ""
        raise EdgeportError(
            f"the model has non-finite weights: {'; '.join(problems[:3])}{more}",
            "check the checkpoint or --weights file (a diverged training run saves NaN); edgeport cannot "
            "verify a model with NaN weights",
        )
