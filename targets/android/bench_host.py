"""`edgeport bench --on host`: LiteRT on this machine, the CPU kernels an Android CPU runs.

Each model runs in a fresh child process (`python -m edgeport.targets.android.bench_host MODEL ...`),
so the parent's imports and another model's allocations do not pollute its timings or its peak RSS.
The child builds its interpreter with edgeport.runtimes.litert.interpreter (XNNPACK on: LiteRT's
default delegate; off: the builtin kernels alone), allocates, feeds seeded random inputs of each
input's dtype and shape, times the first invoke and the warmup, then answers the parent over a pipe,
one JSON line per request: "run K" -> K invoke times; "finish" -> peak RSS and delegation.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from edgeport.bench.hostinfo import host_device
from edgeport.bench.runner import BenchModel, RunnerOptions, SessionExtras, cli_words
from edgeport.bench.schema import BenchSettings, Delegation, DeviceInfo, Memory, TimeKind
from edgeport.errors import EdgeportError, exception_line
from edgeport.manifest import tool_versions
from edgeport.options import Spell

INPUT_SEED = 0
RSS_NOTE = "peak RSS is the whole measuring process: Python, LiteRT and the model"
_CLOSE_WAIT_S = 10


class HostRunner:
    name = "host"
    time_kind: TimeKind = "host-wall-clock"
    interleaves = True
    uses = ("threads", "xnnpack")

    def __init__(self, spell: Spell = cli_words) -> None:
        self.spell = spell  # names options in its errors

    def device(self) -> DeviceInfo:
        return host_device()

    def tools(self) -> dict[str, str]:
        return tool_versions("ai-edge-litert")

    def check(self, model: BenchModel) -> None:
        """The model verified and loaded in LiteRT (not allocated: that is the child's, where a native
        crash cannot take this process down)."""
        from edgeport.runtimes.litert import interpreter
        from edgeport.tflite_file import verify_tflite

        data = model.tflite.read_bytes()
        verify_tflite(data, model.tflite)
        try:
            interpreter(data, threads=1)
        except (ValueError, RuntimeError) as exc:  # e.g. TFLite Micro-only quantization parameters
            raise EdgeportError(
                cannot_run(model.info.name, exception_line(exc)), cannot_run_fix(self.spell)
            ) from exc

    def open(self, model: BenchModel, settings: BenchSettings) -> HostSession:
        return HostSession(model, settings, self.spell)


class HostSession:
    """One model in its own LiteRT child process, loaded, warmed up, waiting for "run K"; its errors name
    options as `spell` writes them."""

    def __init__(self, model: BenchModel, settings: BenchSettings, spell: Spell = cli_words) -> None:
        self.name = model.info.name
        self.spell = spell
        self.timeout_s = settings.timeout_s
        self.xnnpack = settings.xnnpack
        self._log = tempfile.TemporaryFile(mode="w+")  # the child's stderr: LiteRT's own messages
        self._busy = True  # a request (or start-up) is unanswered
        command = [
            sys.executable,
            "-m",
            "edgeport.targets.android.bench_host",
            str(model.tflite),
            str(settings.threads),
            "1" if settings.xnnpack else "0",
            str(settings.warmup),
            str(INPUT_SEED),
        ]
        self._proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        try:
            ready = self._answer()
        except BaseException:
            self.close()
            raise
        self.init_ms: float | None = ready["init_ms"]
        self.first_ms: float | None = ready["first_ms"]

    def run(self, count: int) -> list[float]:
        self._send(f"run {count}")
        return [float(t) for t in self._answer()["times_ms"]]

    def finish(self) -> SessionExtras:
        self._send("finish")
        done = self._answer()
        delegated, total = done["delegated_nodes"], done["total_nodes"]
        notes = [RSS_NOTE]
        if self.xnnpack and delegated == 0:
            notes.append("XNNPACK took no node: LiteRT's builtin kernels ran every op")
        return SessionExtras(
            memory=Memory(peak_rss_bytes=done["peak_rss_bytes"]),
            delegation=Delegation(
                delegate="xnnpack" if self.xnnpack else "none",
                delegated_ops=delegated if self.xnnpack else 0,
                total_ops=total,
            ),
            notes=notes,
        )

    def close(self) -> None:
        proc = self._proc
        if proc.poll() is None and self._busy:  # interrupted mid-request: its answer is of no use
            proc.kill()
        if proc.poll() is None:
            try:
                proc.stdin.close()  # an idle child ends when its stdin does
                proc.wait(_CLOSE_WAIT_S)
            except (OSError, subprocess.TimeoutExpired):
                proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        self._log.close()

    def _send(self, line: str) -> None:
        self._busy = True
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except OSError:
            raise self._failure() from None

    def _answer(self) -> dict[str, Any]:
        ready, _, _ = select.select([self._proc.stdout], [], [], self.timeout_s)
        if not ready:
            raise EdgeportError(
                f"{self.name}: LiteRT did not answer within {self.timeout_s:g} s",
                f"raise {self.spell('timeout_s')}, or lower {self.spell('runs')} for a slow model",
            )
        line = self._proc.stdout.readline()
        if not line:
            raise self._failure()
        self._busy = False
        answer = json.loads(line)
        if "error" in answer:
            raise EdgeportError(cannot_run(self.name, answer["error"]), cannot_run_fix(self.spell))
        return answer

    def _failure(self) -> EdgeportError:
        """The child ended without answering: a native crash, or an error it could not report."""
        try:
            code = self._proc.wait(_CLOSE_WAIT_S)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            code = self._proc.wait()
        self._log.seek(0)
        lines = [ln.strip() for ln in self._log.read().splitlines() if ln.strip()]
        last = f" ({lines[-1][:160]})" if lines else ""
        fix = cannot_run_fix(self.spell)
        if code < 0:
            return EdgeportError(f"{self.name}: LiteRT crashed (signal {-code}) running the model{last}", fix)
        return EdgeportError(f"{self.name}: the LiteRT process ended (exit code {code}){last}", fix)


def cannot_run_fix(spell: Spell = cli_words) -> str:
    """The fix for a model LiteRT cannot run, naming the runner option as `spell` writes it."""
    on = spell("runner")
    return (
        f"a model made for TFLite Micro alone can be measured {on} tflm or {on} qemu:BOARD; otherwise check "
        "that it runs in LiteRT (edgeport convert verifies it)"
    )


def cannot_run(name: str, why: str) -> str:
    return f"{name}: LiteRT cannot run the model ({why[:160]})"


def make_runner(arg: str | None, options: RunnerOptions, spell: Spell = cli_words) -> HostRunner:
    if arg is not None:
        on = spell("runner")
        raise EdgeportError(f"{on} host takes no argument (got host:{arg})", f"write {on} host")
    return HostRunner(spell)


# --- the child process ------------------------------------------------------------------------------


def input_values(details: list[dict[str, Any]], seed: int) -> list[Any]:
    """Seeded values of each input's dtype and shape (edgeport's one random-input maker)."""
    import numpy as np

    from edgeport.tensors import TensorSpec, random_inputs

    specs = [TensorSpec(d["name"], [int(n) for n in d["shape"]], np.dtype(d["dtype"]).name) for d in details]
    return [random_inputs(specs, 1, seed)[0][s.name] for s in specs]


def peak_rss_bytes(status: str | None = None) -> int:
    """This process's peak resident set. On Linux VmHWM from /proc/self/status: getrusage's ru_maxrss
    survives fork and exec, so a child would report its parent's peak when that was higher."""
    if status is None and Path("/proc/self/status").is_file():
        status = Path("/proc/self/status").read_text()
    for line in (status or "").splitlines():
        if line.startswith("VmHWM:"):
            value, unit = line.split()[1:3]
            return int(value) * {"kB": 1024, "mB": 1 << 20}.get(unit, 1)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # kilobytes on Linux


def _child(argv: list[str], answer: IO[str]) -> int:
    model_path, threads, xnnpack, warmup, seed = argv
    from edgeport.runtimes.litert import delegated_nodes, interpreter

    def send(message: dict[str, Any]) -> None:
        answer.write(json.dumps(message) + "\n")
        answer.flush()

    try:
        model = Path(model_path).read_bytes()
        start = time.perf_counter()
        interp = interpreter(model, "optimized", delegates=xnnpack == "1", threads=int(threads))
        interp.allocate_tensors()
        init_ms = (time.perf_counter() - start) * 1e3
        details = interp.get_input_details()
        for detail, value in zip(details, input_values(details, int(seed)), strict=True):
            interp.set_tensor(detail["index"], value)
        invoke = interp.invoke

        def timed() -> float:
            start = time.perf_counter()
            invoke()
            return (time.perf_counter() - start) * 1e3

        first_ms = timed()
        for _ in range(int(warmup)):
            timed()
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        send({"error": exception_line(exc)})
        return 1
    send({"init_ms": init_ms, "first_ms": first_ms})
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "run":
            send({"times_ms": [timed() for _ in range(int(rest[0]))]})
        elif command == "finish":
            delegated, total = delegated_nodes(interp._get_ops_details())
            send({"peak_rss_bytes": peak_rss_bytes(), "delegated_nodes": delegated, "total_nodes": total})
    return 0


def child_main(argv: list[str]) -> int:
    # The answers go over the original stdout; anything native code prints on fd 1 goes to stderr.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    return _child(argv, answer)


if __name__ == "__main__":
    sys.exit(child_main(sys.argv[1:]))
