"""Settings a runner does not use are refused, not ignored (`--threads 4 --on tflm` would mean nothing).

Each runner declares the settings it uses (`Runner.uses`); `bench()` refuses the others before it checks a
model, and `edgeport run` when it reads its config, before anything is converted."""

from __future__ import annotations

from collections.abc import Iterable

from edgeport.bench.runner import cli_words
from edgeport.bench.schema import BenchSettings
from edgeport.errors import EdgeportError
from edgeport.options import Spell

# Every runner uses these.
COMMON = ("runner", "runs", "warmup", "timeout_s")


def refuse_unused(settings: BenchSettings, uses: Iterable[str], spell: Spell = cli_words) -> None:
    """An EdgeportError for the first setting given away from its default that the runner does not use,
    naming it as `spell` writes it (`--no-xnnpack` on the command line, `xnnpack =` in a config)."""
    used = set(COMMON) | set(uses)
    for field, info in BenchSettings.model_fields.items():
        if field not in used and getattr(settings, field) != info.default:
            raise EdgeportError(
                f"{spell(field)} does not apply to {spell('runner')} {settings.runner}",
                f"drop {spell(field)}",
            )
