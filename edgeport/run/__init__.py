"""`edgeport run` as a Python API: a config (config.py) -> every variant converted, packaged, benched, and a
report (execute.py, report.py), each stage cached by content (cache.py)."""

from __future__ import annotations

from edgeport.run.config import ConfigError, RunConfig, load_config
from edgeport.run.execute import RunResult, run

__all__ = ["ConfigError", "RunConfig", "RunResult", "load_config", "run"]
