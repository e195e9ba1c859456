"""PyTorch module -> ONNX with the TorchScript-based exporter (no onnxscript dependency).

The module is first run once on the example inputs: a shape mistake then surfaces as a clear
"check --input-shape" error instead of a page of exporter internals.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import onnx

from edgeport.converters.onnx_prepare import check_translatable
from edgeport.errors import EdgeportError

DEFAULT_OPSET = 17
# torch 2.13's TorchScript-based exporter supports opsets up to 20 (above, it warns that it does not);
# below 9 (its base opset) the exported graphs use forms edgeport's passes reject (opset 5 and 7 crash).
SUPPORTED_OPSETS = range(9, 21)


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in _flatten(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _flatten(item)]
    return [value]


def run_module(module: Any, inputs: Sequence[Any]) -> list[Any]:
    """Forward pass with gradients off; returns the flattened outputs."""
    import torch

    with torch.no_grad():
        return _flatten(module(*inputs))


# Words of PyTorch's errors for a float tensor where integers are needed (embedding indices, gather).
_INTEGER_ERROR = re.compile(r"\b(Long|Int|indices|integer|index)\b")


def _wants_integers(exc: Exception) -> bool:
    return isinstance(exc, (RuntimeError, TypeError, IndexError)) and bool(_INTEGER_ERROR.search(str(exc)))


def _as_indices(tensor: Any) -> Any:
    """Deterministic int64 values 0..7 of the tensor's shape: valid rows of any table of 8 or more."""
    import torch

    return (torch.arange(tensor.numel()) % 8).reshape(tensor.shape)


def index_inputs(module: Any, example_inputs: Sequence[Any]) -> tuple[list[Any], list[Any]] | None:
    """Inputs with one (or else every) float input made int64 indices, if the model then runs: a model
    that embeds token ids takes integers, and --input-shape gives only shapes. None if none runs."""
    inputs = list(example_inputs)
    trials = [[i] for i in range(len(inputs))] + ([list(range(len(inputs)))] if len(inputs) > 1 else [])
    for as_int in trials:
        candidate = [_as_indices(t) if i in as_int else t for i, t in enumerate(inputs)]
        try:
            return candidate, run_module(module, candidate)
        except Exception:  # noqa: BLE001 - a trial; the caller reports the original failure
            continue
    return None


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter cannot write, naming the range."""
    lo, hi = SUPPORTED_OPSETS[0], SUPPORTED_OPSETS[-1]
    if opset not in SUPPORTED_OPSETS:
        raise EdgeportError(
            f"--opset {opset} is outside the range the PyTorch ONNX exporter supports ({lo} to {hi})",
            f"use --opset {DEFAULT_OPSET} (the default) or another value from {lo} to {hi}",
        )


# ONNX Cast's `to` for BOOL; the torch dtype of each TorchScript integer scalar type.
_ONNX_BOOL = 9
_INTEGER_DTYPES = {
    "Char": "int8", "Short": "int16", "Int": "int32", "Long": "int64",
    "Byte": "uint8", "UInt16": "uint16", "UInt32": "uint32", "UInt64": "uint64",
}  # fmt: skip


def _scalar_type(value: Any) -> str | None:
    """The TorchScript scalar type of an exporter value ('Long', 'Bool', ...), None when unknown."""
    try:
        return value.type().scalarType()
    except RuntimeError:  # not a tensor type
        return None


def _not_symbolic(g: Any, value: Any) -> Any:
    """aten::__not__ (Python's `not`): on a bool the ONNX Not; on anything else `not bool(v)`.

    TorchScript's `not` takes a bool, so a non-bool operand is a bool() whose cast the exporter dropped
    (`if not len(x):` scripts to aten::Bool on an int, exported as the int itself)."""
    if _scalar_type(value) != "Bool":
        value = g.op("Cast", value, to_i=_ONNX_BOOL)
    return g.op("Not", value)


def _bitwise_not_symbolic(g: Any, value: Any) -> Any:
    """aten::bitwise_not (`~x`): Not on bools; two's complement arithmetic on integers, which every
    converter can run (~x == -x - 1 signed, MAX - x unsigned)."""
    import torch

    kind = _scalar_type(value)
    if kind == "Bool":
        return g.op("Not", value)
    if kind not in _INTEGER_DTYPES:
        raise EdgeportError(
            f"the model applies ~ (bitwise_not) to a tensor of type {kind or 'unknown'}",
            "apply ~ to a bool or integer tensor (e.g. ~mask.bool())",
        )
    dtype = getattr(torch, _INTEGER_DTYPES[kind])
    if not dtype.is_signed:
        top = g.op("Constant", value_t=torch.tensor(torch.iinfo(dtype).max, dtype=dtype))
        return g.op("Sub", top, value)
    one = g.op("Constant", value_t=torch.tensor(1, dtype=dtype))
    return g.op("Sub", g.op("Neg", value), one)


# What the TorchScript-based exporter refuses that ONNX can express: name -> symbolic. Registered at
# opset 9, the exporter's base, they serve every opset it writes.
EXTRA_SYMBOLICS: dict[str, Callable[..., Any]] = {
    "aten::__not_": _not_symbolic,  # the exporter looks aten::__not__ up without its trailing '_'
    "aten::bitwise_not": _bitwise_not_symbolic,
}


@contextlib.contextmanager
def extra_symbolics() -> Iterator[None]:
    """EXTRA_SYMBOLICS registered for the duration of one export (the registry is process-global)."""
    import torch

    for name, fn in EXTRA_SYMBOLICS.items():
        torch.onnx.register_custom_op_symbolic(name, fn, 9)
    try:
        yield
    finally:
        for name in EXTRA_SYMBOLICS:
            torch.onnx.unregister_custom_op_symbolic(name, 9)


def check_repeatable(module: Any, inputs: Sequence[Any], outputs: Sequence[Any]) -> None:
    """Refuse a model whose second call on the same inputs gives other outputs than its first: the
    export freezes one call, so nothing verifies it (forward() updates a buffer or attribute, or draws
    random numbers). A TorchScript file that keeps state is called fresh each time (FreshStateModule)."""
    import torch

    again = run_module(module, inputs)
    if len(again) == len(outputs) and all(
        a.shape == b.shape and torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
        for a, b in zip(outputs, again, strict=True)
    ):
        return
    raise EdgeportError(
        "the model gives other outputs on a second call with the same inputs: forward() keeps state "
        "between calls (it updates a buffer or attribute) or draws random numbers, and an exported "
        "model computes one fixed function",
        "convert a version whose forward() takes the state as an input and returns the new state, "
        "with no random ops in eval mode",
    )


def export_onnx(
    module: Any,
    example_inputs: Sequence[Any],
    path: Path,
    input_names: Sequence[str],
    opset: int = DEFAULT_OPSET,
    fold_constants: bool = True,
) -> onnx.ModelProto:
    """Export `module` for fixed input shapes; outputs are named output_0.. (or `output`).

    With fold_constants the exporter also fuses Conv+BatchNorm; without, every BN stays a node.
    """
    import torch

    from edgeport.converters.sources import FreshStateModule

    check_opset(opset)
    # Exported before anything runs it: a module that keeps state is exported in its loaded state.
    exported = module.fresh() if isinstance(module, FreshStateModule) else module
    shapes = [list(t.shape) for t in example_inputs]
    try:
        outputs = run_module(module, example_inputs)
    except Exception as exc:
        found = index_inputs(module, example_inputs) if _wants_integers(exc) else None
        if found is None:
            message = str(exc).splitlines()[0] if str(exc) else ""
            fix = (
                "the model is float64: return model.float() from the callable (TFLite has no float64 kernels)"
                if re.search(r"\bDouble\b|float64", message)
                else "check --input-shape: one per forward() argument, in order, e.g. --input-shape 1,3,32,32"
            )
            raise EdgeportError(
                f"the model fails on inputs of shape {shapes}: {type(exc).__name__}: {message}", fix
            ) from exc
        example_inputs, outputs = found
    if not all(isinstance(o, torch.Tensor) for o in outputs):
        raise EdgeportError(
            "the model returns something other than tensors", "return a tensor or a tuple of them"
        )
    check_repeatable(module, example_inputs, outputs)
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), extra_symbolics():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                exported,
                tuple(example_inputs),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=output_names,
                do_constant_folding=fold_constants,
            )
    except EdgeportError:
        raise
    except Exception as exc:
        raise EdgeportError(
            f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            "the model uses something the ONNX exporter cannot express; try another --opset or "
            "export ONNX yourself and pass the .onnx file",
        ) from exc
    model = with_output_shapes(onnx.load_from_string(buffer.getvalue()), [list(o.shape) for o in outputs])
    model = check_translatable(model)
    onnx.save(model, str(path))
    return model


def with_output_shapes(model: onnx.ModelProto, shapes: Sequence[Sequence[int]]) -> onnx.ModelProto:
    """The graph outputs without a shape given the shapes PyTorch produced on the example inputs.

    A scripted module (TorchScript) exports its outputs with no shape at all, not even a rank, which
    the ONNX checker and so onnxsim refuse: constant folding would then never run on it. The export is
    for fixed input shapes, so the shapes seen are the outputs' shapes."""
    missing = [
        (out, shape)
        for out, shape in zip(model.graph.output, shapes, strict=False)
        if out.type.HasField("tensor_type") and not out.type.tensor_type.HasField("shape")
    ]
    for out, shape in missing:
        out.type.tensor_type.shape.SetInParent()
        for size in shape:
            out.type.tensor_type.shape.dim.add().dim_value = size
    return model
