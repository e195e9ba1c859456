"""What pruning asks of the conversion, handed in by the caller: quant/ does not import the converters
or the pipeline (tests/test_layering.py), so the pipeline gives prune_module an Exporter
(edgeport/pipeline/torch_passes.py's `prune_exporter`).

Pruning uses it to count MACs and parameters on the graph that converts (it holds products PyTorch
computes without a module, q @ k) and, for `--prune-target latency`, to convert trials and time them.
Without one, MACs are counted on the module only and a latency target needs its own `measure`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import onnx
import torch
import torch.nn as nn


class Exporter(Protocol):
    def graph(
        self, module: nn.Module, inputs: Sequence[torch.Tensor], names: Sequence[str]
    ) -> onnx.ModelProto:
        """`module` exported to ONNX for the shapes of `inputs` (one sample each), inputs named `names`,
        as the export stage exports (BatchNorms kept as nodes); EdgeportError when it does not export."""
        ...

    def float_tflite(self, graph: onnx.ModelProto) -> bytes:
        """The float32 .tflite convert makes of an exported graph (without its verification)."""
        ...
