"""Settings a runner does not use are refused, not ignored (`--threads 4 --on tflm` would mean nothing)."""

from __future__ import annotations

from collections.abc import Iterable

from edgeport.bench.schema import BenchSettings
from edgeport.errors import EdgeportError
from edgeport.options import flag_name

# Every runner uses these.
COMMON = ("runner", "runs", "warmup", "timeout_s")


def settings_flag(field: str) -> str:
    """The flag that sets `field` away from its default (--no-xnnpack for xnnpack)."""
    info = BenchSettings.model_fields[field]
    return f"--no-{field.replace('_', '-')}" if info.default is True else flag_name(field, info)


def refuse_unused(settings: BenchSettings, uses: Iterable[str]) -> None:
    """An EdgeportError for the first setting given away from its default that the runner does not use."""
    used = set(COMMON) | set(uses)
    for field, info in BenchSettings.model_fields.items():
        if field not in used and getattr(settings, field) != info.default:
            raise EdgeportError(
                f"{settings_flag(field)} does not apply to --on {settings.runner}",
                f"drop {settings_flag(field)}",
            )
