"""The Cortex-M (TensorFlow Lite Micro) target: package a .tflite into firmware sources and flash it.

`package()` writes model_data.h/.cc, model_ops.h, model_settings.h, a self-test firmware project
and the manifest; `supported_ops()` says what TFLite Micro can run; the board table is
`edgeport.targets.cortex_m.boards`.
"""

from __future__ import annotations

from edgeport.targets.cortex_m.op_resolver import supported_ops
from edgeport.targets.cortex_m.packager import PackageResult, package

__all__ = ["PackageResult", "package", "supported_ops"]
