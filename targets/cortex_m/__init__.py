"""The Cortex-M (TensorFlow Lite Micro) target: package a .tflite into firmware sources and flash it.

`package()` writes model_data.h/.cc, model_ops.h, model_settings.h, a self-test firmware project
and the manifest; `supported_ops()` says what TFLite Micro can run; the board table is
`edgeport.targets.cortex_m.boards`; `target.TARGET` is the registered target (targets/__init__.py).
The names below load on first use, so the registry can read the options without loading TFLite Micro.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "PackageResult": "edgeport.targets.cortex_m.packager",
    "package": "edgeport.targets.cortex_m.packager",
    "supported_ops": "edgeport.targets.cortex_m.op_resolver",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["PackageResult", "package", "supported_ops"]
