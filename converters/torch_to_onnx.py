"""PyTorch module -> ONNX with the TorchScript-based exporter (no onnxscript dependency).

The module is first run once on the example inputs: a shape mistake then surfaces as a clear
"check --input-shape" error instead of a page of exporter internals.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Sequence
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

    check_opset(opset)
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
    output_names = ["output"] if len(outputs) == 1 else [f"output_{i}" for i in range(len(outputs))]
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                tuple(example_inputs),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=list(input_names),
                output_names=output_names,
                do_constant_folding=fold_constants,
            )
    except Exception as exc:
        raise EdgeportError(
            f"torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
            "the model uses something the ONNX exporter cannot express; try another --opset or "
            "export ONNX yourself and pass the .onnx file",
        ) from exc
    model = check_translatable(onnx.load_from_string(buffer.getvalue()))
    onnx.save(model, str(path))
    return model
