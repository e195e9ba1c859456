"""The interface every bench runner implements, and the registry that finds one from `--on SPEC`.

A runner lives in the target it belongs to (targets/<target>/bench_<name>.py) and exposes
`make_runner(arg, options, spell) -> Runner`; `arg` is what follows the colon in `--on NAME:ARG` (a board, an
adb serial, a serial port), None when there is none; `spell` names options in its errors (`cli_words` for
the CLI). The harness (edgeport/bench/harness.py) opens one `Session` per model, runs them interleaved in
rounds when the runner `interleaves` (a host process per model: a ratio measured in one run is the only
honest comparison on a noisy machine), and builds the `BenchResult` from what each session measured.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from edgeport.bench.schema import (
    BenchSettings,
    Delegation,
    DeviceInfo,
    Memory,
    ModelInfo,
    OpProfile,
    TimeKind,
)
from edgeport.errors import EdgeportError
from edgeport.options import Spell, flag_name, flag_spell

# --on NAME -> the module that makes it (imported when asked for, so listing runners costs nothing).
RUNNERS: dict[str, str] = {
    "host": "edgeport.targets.android.bench_host",
    "tflm": "edgeport.targets.cortex_m.bench_tflm",
    "qemu": "edgeport.targets.cortex_m.bench_qemu",
    "adb": "edgeport.targets.android.bench_adb",
    "serial": "edgeport.targets.cortex_m.bench_serial",
}
# Runners whose NAME needs a `:ARG`, and what the argument is.
REQUIRED_ARG: dict[str, str] = {"qemu": "BOARD", "serial": "PORT"}


class RunnerOptions(BaseModel):
    """Runner-specific settings that are not part of the result (paths on this machine)."""

    model_config = ConfigDict(extra="forbid")

    tflm_root: Path | None = Field(
        None, description="TensorFlow Lite Micro tree to build the firmware against (qemu; or $TFLM_ROOT)."
    )
    benchmark_binary: Path | None = Field(
        None, description="LiteRT benchmark_model binary to push to the device (adb)."
    )
    baud: int = Field(115200, description="Serial port speed (serial).")


@dataclass
class BenchModel:
    """One MODEL argument, resolved: the .tflite to run and, where it came from a directory, that
    directory (a convert output, whose manifest names its variants; a package, with its firmware)."""

    info: ModelInfo
    tflite: Path
    convert_dir: Path | None = None
    package_dir: Path | None = None


@dataclass
class SessionExtras:
    """What a session measured besides the per-iteration times."""

    memory: Memory = field(default_factory=Memory)
    delegation: Delegation = field(default_factory=Delegation)
    ticks: list[int] | None = None
    notes: list[str] = field(default_factory=list)
    profile: OpProfile | None = None  # --profile, on a runner that uses it


class Session(Protocol):
    """One model loaded on a runner, warmed up, ready to time.

    A session whose device fixed its counts before it was opened (a board's firmware, built for N timed
    runs after W warm-ups) may also have `fixed_runs` and `fixed_warmup`: the harness then times
    `fixed_runs` when --runs was not given, and reports that warmup.
    """

    init_ms: float | None
    first_ms: float | None

    def run(self, count: int) -> list[float]:
        """Time `count` more inferences; milliseconds each, in order."""
        ...

    def finish(self) -> SessionExtras:
        """Memory, delegation and notes, once all runs are done."""
        ...

    def close(self) -> None:
        """Release the process, device or port (called on every path)."""
        ...


class Runner(Protocol):
    name: str
    time_kind: TimeKind
    interleaves: bool  # True: sessions of several models stay open and run in alternating rounds
    uses: tuple[str, ...]  # BenchSettings it uses besides every runner's (unused.COMMON); others are refused

    def device(self) -> DeviceInfo: ...

    def check(self, model: BenchModel) -> None:
        """Raise a one-line EdgeportError if this runner cannot run `model`, before anything runs."""
        ...

    def open(self, model: BenchModel, settings: BenchSettings) -> Session: ...


def cli_words(field: str) -> str:
    """How `edgeport bench` names an option in a message: `--on` for the runner, a setting by the flag that
    moves it from its default (`--no-xnnpack`), else RunnerOptions' flag. The runner functions take such a
    Spell; `edgeport run` passes its config's keys instead."""
    if field == "runner":
        return "--on"
    setting = BenchSettings.model_fields.get(field)
    if setting is not None:
        return f"--no-{field.replace('_', '-')}" if setting.default is True else flag_name(field, setting)
    return flag_spell(RunnerOptions)(field)


def parse_spec(spec: str, spell: Spell = cli_words) -> tuple[str, str | None]:
    """`qemu:mps2-an386` -> ("qemu", "mps2-an386"); `host` -> ("host", None). Errors name the fix, with the
    runner option as `spell` writes it."""
    on = spell("runner")
    name, sep, arg = spec.partition(":")
    if name not in RUNNERS:
        raise EdgeportError(f"unknown runner {spec!r}", f"use {on} one of: {', '.join(runner_specs())}")
    if sep and not arg:
        raise EdgeportError(
            f"{on} {spec}: nothing after the colon", f"write {on} {name}:{REQUIRED_ARG.get(name, 'ARG')}"
        )
    if name in REQUIRED_ARG and not arg:
        raise EdgeportError(
            f"{on} {name} needs a {REQUIRED_ARG[name]}", f"write {on} {name}:{REQUIRED_ARG[name]}"
        )
    return name, arg or None


def runner_specs() -> list[str]:
    """How each runner is written after --on."""
    specs = []
    for name in RUNNERS:
        if name in REQUIRED_ARG:
            specs.append(f"{name}:{REQUIRED_ARG[name]}")
        elif name == "adb":
            specs.append("adb[:SERIAL]")
        else:
            specs.append(name)
    return specs


def get_runner(spec: str, options: RunnerOptions | None = None, spell: Spell = cli_words) -> Runner:
    """The runner `--on SPEC` names, made with `options`; its errors name options as `spell` writes them."""
    name, arg = parse_spec(spec, spell)
    module = importlib.import_module(RUNNERS[name])
    return module.make_runner(arg, options or RunnerOptions(), spell)
