"""`edgeport bench`: one latency harness, one result schema (schema.py), runners behind one interface
(runner.py) that live in the targets they belong to.

`edgeport.bench.bench(models, on, settings, options)` is the Python API (harness.py); it returns the
same BenchReport the command prints and writes with --json.
"""

from __future__ import annotations

from typing import Any

__all__ = ["bench"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the runners import the schema from this package and need none of the harness.
    if name == "bench":
        from edgeport.bench.harness import bench

        return bench
    raise AttributeError(f"module 'edgeport.bench' has no attribute {name!r}")
