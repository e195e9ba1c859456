"""Pruning an ONNX source: the graph as a PyTorch module (quant/onnx_torch.py's evaluator) whose
convolutions and fully-connected layers are real nn.Conv / nn.Linear modules, so torch-pruning's
dependency graph sees and cuts them; the pipeline (edgeport/pipeline/torch_passes.py) exports it back
to ONNX with the source's input and output names.

Which nodes become modules: Conv with constant weights and explicit symmetric pads (or none), and
Gemm with a constant 2-D weight (alpha = beta = 1, no transposed input); BatchNormalization already
is one in the evaluator. Other nodes stay functional on their constant weights: a channel feeding one
cannot change width, which the removal check (cut on a copy == zeroed) sees, so its group is kept
whole. A graph the evaluator cannot run is refused in one line naming the op.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import onnx
import torch
import torch.nn as nn

from edgeport.errors import EdgeportError
from edgeport.quant.onnx_torch import (
    CHECK_TOLERANCE,
    Evaluator,
    UnsupportedOnnxGraph,
    check_against_onnxruntime,
)
from edgeport.tensors import TensorSpec, random_inputs

_CONVS = {3: nn.Conv1d, 4: nn.Conv2d, 5: nn.Conv3d}


def _conv(attrs: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
    rank = weight.dim()
    nd = rank - 2
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    if (
        rank not in _CONVS
        or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
        or pads[:nd] != pads[nd:]
    ):
        return None
    groups = int(attrs.get("group", 1))
    conv = _CONVS[rank](
        weight.shape[1] * groups,
        weight.shape[0],
        tuple(weight.shape[2:]),
        stride=tuple(attrs.get("strides", [1] * nd)),
        padding=tuple(pads[:nd]),
        dilation=tuple(attrs.get("dilations", [1] * nd)),
        groups=groups,
        bias=bias is not None,
    )
    with torch.no_grad():
        conv.weight.copy_(weight)
        if bias is not None:
            conv.bias.copy_(bias)
    return conv


def _linear(attrs: dict, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Module | None:
    plain = attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0 and not attrs.get("transA", 0)
    if weight.dim() != 2 or not plain:
        return None
    weight = weight if attrs.get("transB", 0) else weight.t()  # nn.Linear holds [out, in]
    if bias is not None and bias.shape != (weight.shape[0],):
        return None
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


class PrunableGraph(Evaluator):
    """The evaluator with Conv and Gemm nodes run through modules (`layers`, keyed by weight name)."""

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__(model)
        self.layers = nn.ModuleDict()
        self._layer_keys: dict[str, str] = {}  # node's first output -> key in layers
        for index, (node, attrs) in enumerate(zip(self._nodes, self._attrs, strict=True)):
            if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2:
                continue
            weight = self._constants.get(node.input[1])
            bias = self._constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if weight is None or (len(node.input) > 2 and node.input[2] and bias is None):
                continue
            make = _conv if node.op_type == "Conv" else _linear
            layer = make(attrs, weight.float(), None if bias is None else bias.float())
            if layer is None:
                continue
            key = re.sub(r"\W", "_", re.sub(r"\.weight$", "", node.input[1])) or f"node{index}"
            while key in self.layers:
                key += "_"
            self.layers[key] = layer
            self._layer_keys[node.output[0]] = key

    def run_node(self, node: onnx.NodeProto, attrs: dict, args: list[Any]) -> Any:
        key = self._layer_keys.get(node.output[0])
        if key is None:
            return super().run_node(node, attrs, args)
        return self.layers[key](args[0])


def prunable_module(model: onnx.ModelProto, specs: Sequence[TensorSpec]) -> PrunableGraph:
    """The ONNX graph (static input shapes `specs`) as a prunable module; one line naming what the
    evaluator cannot run, else."""
    try:
        module = PrunableGraph(model).eval()
    except UnsupportedOnnxGraph as exc:
        raise EdgeportError(
            f"--prune on an ONNX model goes through edgeport's ONNX-to-PyTorch evaluator, which cannot run "
            f"this graph: {exc}",
            "convert the PyTorch model it was exported from (file.py:callable, TorchScript or .pt2), or "
            "convert without --prune",
        ) from exc
    error = check_against_onnxruntime(module, model, random_inputs(specs, 2, 0))
    if not error < CHECK_TOLERANCE:
        raise EdgeportError(
            f"--prune on an ONNX model goes through edgeport's ONNX-to-PyTorch evaluator, which computes "
            f"this graph differently from onnxruntime (max rel. error {error:.1e})",
            "convert the PyTorch model it was exported from, or without --prune, and report the model",
        )
    if not module.layers:
        raise EdgeportError(
            "--prune found no Conv or Gemm with constant weights in this ONNX model (nothing to prune)",
            "convert without --prune, or give the PyTorch model it was exported from",
        )
    return module
