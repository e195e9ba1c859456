"""TFLite Micro on the host: the `tflite_micro` Python runtime, run in a child process.

The child (runtimes/_tflm_child.py) is a separate process because a native crash in TFLM must not
take the caller down. What it prints when it fails is read here, once, into one EdgeportError
naming the op and node. The int8 check (quant/tflm_check.py) and the arena measurement
(targets/cortex_m/arena.py) both run through `run_tflm`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtimes.result import ArenaUsage, RunResult
from edgeport.tempdirs import tempdir
from edgeport.tflite_file import parse_tflite

TIMEOUT_S = 600
ARENA_FACTOR = 10  # generous by default: a run that only checks outputs does not care how much is used
MIN_ARENA = 1 << 20

# What TFLM prints when it cannot run a model.
MISSING_OP = re.compile(r"Didn't find op for builtin opcode '([^']+)'")
FAILED_NODE = re.compile(r"Node (\S+) \(number (\d+)\S*\) failed to (prepare|invoke|init)")
KERNEL_FIX = (
    "TFLite Micro has no kernel for it with these types and options: replace that op in the model, "
    "keep float I/O with --io float, or for Android (no TFLite Micro) use --quantize dynamic or float16"
)

_MINIMUM = re.compile(r"MINIMUM_ARENA (\d+)")
_TOTAL = re.compile(r"Arena allocation total (\d+) bytes")
_HEAD = re.compile(r"Arena allocation head (\d+) bytes")
_TAIL = re.compile(r"Arena allocation tail (\d+) bytes")
_CATEGORY = re.compile(r"'([^']+)' used (\d+) bytes")


def tflm_failure(name: str, log: str, returncode: int) -> EdgeportError:
    """TFLM's own error (the child's stderr and stdout), as one line naming the op and node, and a fix."""
    node = FAILED_NODE.search(log)
    if node:
        lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not FAILED_NODE.search(ln)]
        detail = next((ln for ln in lines if "Traceback" not in ln and not ln.startswith("File ")), "")
        return EdgeportError(
            f"{name}: TFLite Micro cannot {node.group(3)} op {node.group(1)} at node {node.group(2)}"
            + (f" ({detail[:160]})" if detail else ""),
            KERNEL_FIX,
        )
    missing = MISSING_OP.search(log)
    if missing:
        return EdgeportError(f"{name}: TFLite Micro has no kernel for op {missing.group(1)}", KERNEL_FIX)
    if returncode < 0:
        return EdgeportError(
            f"{name}: the TFLite Micro interpreter crashed (signal {-returncode}) running the model",
            "report this model to edgeport with --debug output",
        )
    last = [ln.strip() for ln in log.splitlines() if ln.strip()]
    what = last[-1][:160] if last else f"exit code {returncode}"
    return EdgeportError(
        f"{name}: TFLite Micro failed to run the model ({what})", "rerun with --debug and check the model"
    )


def parse_allocations(report: str) -> ArenaUsage:
    """The allocator report and MINIMUM_ARENA line the child prints when asked to measure."""
    total, minimum = _TOTAL.search(report), _MINIMUM.search(report)
    if total is None or minimum is None:
        raise EdgeportError(
            "TFLite Micro printed no allocation report", "check the tflite-micro installation"
        )
    head, tail = _HEAD.search(report), _TAIL.search(report)
    return ArenaUsage(
        measured_bytes=int(minimum.group(1)),
        recorded_bytes=int(total.group(1)),
        head_bytes=int(head.group(1)) if head else 0,
        tail_bytes=int(tail.group(1)) if tail else 0,
        categories={m.group(1): int(m.group(2)) for m in _CATEGORY.finditer(report)},
    )


def child_command(
    model_path: Path, arena_size: int, inputs_path: Path, outputs_path: Path, n_outputs: int, measure: bool
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "edgeport.runtimes._tflm_child",
        str(model_path),
        str(arena_size),
        str(inputs_path),
        str(outputs_path),
        str(n_outputs),
        "1" if measure else "0",
    ]


def run_tflm(
    model: bytes,
    raw_inputs: Sequence[Sequence[np.ndarray]],
    name: str = "model",
    arena_size: int | None = None,
    measure_arena: bool = False,
    timeout: float = TIMEOUT_S,
) -> RunResult:
    """Raw outputs (subgraph order) per sample from TFLite Micro, fed raw inputs (subgraph order).

    `arena_size` defaults to a generous multiple of the model's size; `measure_arena` also finds the
    smallest arena that works (RunResult.arena) and keeps the allocator report (RunResult.log).
    A model TFLM cannot run, or a run longer than `timeout` seconds, raises EdgeportError.
    """
    n_outputs = len(parse_tflite(model).outputs)
    arena = arena_size if arena_size is not None else max(MIN_ARENA, ARENA_FACTOR * len(model))
    with tempdir("tflm") as tmp:
        model_path, in_path, out_path = Path(tmp) / "m.tflite", Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        model_path.write_bytes(model)
        np.savez(
            in_path,
            **{
                f"s{i}_in{j}": np.ascontiguousarray(a)
                for i, sample in enumerate(raw_inputs)
                for j, a in enumerate(sample)
            },
        )
        try:
            done = subprocess.run(
                child_command(model_path, arena, in_path, out_path, n_outputs, measure_arena),
                capture_output=True,
                text=True,
                env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgeportError(
                f"{name}: TFLite Micro did not finish running the model within {timeout:g} s",
                "check that the model runs in LiteRT; report it with --debug output if it does",
            ) from exc
        if done.returncode != 0 or not out_path.exists():
            raise tflm_failure(name, done.stderr + done.stdout, done.returncode)
        with np.load(out_path) as saved:
            raw = [[saved[f"s{i}_out{k}"] for k in range(n_outputs)] for i in range(len(raw_inputs))]
            seconds = [float(s) for s in saved["invoke_seconds"]]
            init_seconds = float(saved["init_seconds"])
    return RunResult(
        "tflite-micro",
        raw_outputs=raw,
        invoke_seconds=seconds,
        init_seconds=init_seconds,
        arena=parse_allocations(done.stdout) if measure_arena else None,
        log=done.stdout,
    )
