"""Running a model: one module per runtime (LiteRT, onnxruntime, TFLite Micro on the host, QEMU), one
result type (`RunResult`; QEMU runs firmware, not a model, and returns a `QemuRun`).

A new runner (the bench harness's, a device's) is one new module here that returns a RunResult.
Importing this package is cheap: each runtime is imported when a model is first run in it.
"""

from edgeport.runtimes.result import ArenaUsage, RunResult

__all__ = ["ArenaUsage", "RunResult"]
