"""The PyTorch passes, in the order they run on the loaded module, before the ONNX export.

None yet: pruning plugs in here. A new PyTorch pass is one module with a function
`(torch.nn.Module) -> (torch.nn.Module, PassReport)` plus one line in TORCH_PASSES. The passes run on
a deep copy of the loaded module: the original stays the verification reference and the
distillation input, so a pass that changes weights in place cannot change what it is checked against.
"""

from __future__ import annotations

from typing import Any

from edgeport.pipeline.passes import Pass

TORCH_PASSES: list[Pass[Any]] = []
