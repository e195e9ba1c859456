"""`edgeport bench --on adb[:SERIAL]`: LiteRT's `benchmark_model` on an Android device or emulator over adb.

The model (and the benchmark_model binary given with --benchmark-binary, else the one at
/data/local/tmp/benchmark_model) goes to a scratch directory on the device, removed when the session
closes. Our settings become its flags (threads, XNNPACK, GPU / NNAPI delegate, warm-up runs).

benchmark_model prints summaries (avg, std, min, max, percentiles), never the time of each run, so a
summary cannot be turned into samples without inventing them. Each sample is instead the one timed
inference of its own benchmark_model process, after that process's warm-up runs: a real per-iteration
time from the device's clock, at the price of one model load per sample. Init and first-inference times
come from the first process, which is not sampled.
"""

from __future__ import annotations

import os
import shlex
import shutil
import struct
import subprocess
from dataclasses import dataclass
from itertools import count
from pathlib import Path

from edgeport.bench.runner import BenchModel, RunnerOptions, SessionExtras, cli_words
from edgeport.bench.schema import BenchSettings, Delegation, DeviceInfo, Memory, TimeKind
from edgeport.errors import EdgeportError
from edgeport.options import Spell
from edgeport.targets.android.benchmark_output import (
    BenchmarkOutput,
    delegate_kind,
    finite,
    parse_benchmark_output,
)

DEVICE_BINARY = "/data/local/tmp/benchmark_model"  # where LiteRT's instructions put it
SCRATCH_ROOT = "/data/local/tmp"
GOVERNOR = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
POSSIBLE_CPUS = "/sys/devices/system/cpu/possible"  # the kernel's CPU list, e.g. "0-7"
ADB_TIMEOUT_S = 120.0  # one adb command other than a benchmark run (device listing, push, getprop)
MB = 1024 * 1024  # benchmark_model's MB are KiB / 1024.0

# ELF e_machine -> the Android ABI a binary of that machine runs as.
_ELF_ABIS = {183: "arm64-v8a", 40: "armeabi-v7a", 62: "x86_64", 3: "x86"}
_STATE_FIXES = {
    "unauthorized": "unlock the device and accept its 'Allow USB debugging' prompt",
    "offline": "reconnect the device (or restart adb: adb kill-server)",
    "no permissions": "give your user access to the USB device (udev rule) or run adb as root",
}

_scratch_ids = count()


def find_adb() -> str:
    """The adb executable on PATH; a one-line error naming the package when there is none."""
    exe = shutil.which("adb")
    if exe is None:
        raise EdgeportError("adb is not installed (no `adb` on PATH)", "install it: apt-get install adb")
    return exe


def parse_devices(text: str) -> list[tuple[str, str]]:
    """`adb devices` output -> [(serial, state)], e.g. ("emulator-5554", "device")."""
    devices = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        serial, _, rest = line.replace("\t", " ").partition(" ")
        rest = rest.strip()
        # "no permissions (user in plugdev group; ...)" is the one state of several words.
        state = "no permissions" if rest.startswith("no permissions") else (rest.split() or ["unknown"])[0]
        devices.append((serial, state))
    return devices


def select_device(devices: list[tuple[str, str]], serial: str | None, spell: Spell = cli_words) -> str:
    """The serial to use: the one asked for, or the only one connected; errors say how to pick, naming
    the runner option as `spell` writes it."""
    on = spell("runner")
    serials = [s for s, _ in devices]
    if serial is None:
        if not devices:
            raise EdgeportError(
                "no Android device is connected (`adb devices` lists none)",
                "connect one with USB debugging on, or start an emulator, then check `adb devices`",
            )
        if len(devices) > 1:
            raise EdgeportError(
                f"{len(devices)} Android devices are connected ({', '.join(serials)})",
                f"pick one with {on} adb:SERIAL, e.g. {on} adb:{serials[0]}",
            )
        serial = serials[0]
    elif serial not in serials:
        listed = ", ".join(serials) if serials else "none"
        raise EdgeportError(
            f"no Android device {serial!r} (`adb devices` lists: {listed})",
            f"use a serial that `adb devices` lists: {on} adb:SERIAL",
        )
    state = dict(devices)[serial]
    if state != "device":
        fix = _STATE_FIXES.get(state, "check the device with `adb devices -l`")
        raise EdgeportError(f"Android device {serial} is {state}", fix)
    return serial


def cpu_count(cpu_list: str) -> int | None:
    """CPUs in a kernel CPU list ("0-3,4-7" -> 8); None if it is not one (unreadable)."""
    total = 0
    for part in cpu_list.strip().split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            return None
        total += int(last or first) - int(first) + 1
    return total


def requested_delegate(settings: BenchSettings) -> str:
    """What the run asks for: settings.delegate when given, else XNNPACK or none per settings.xnnpack."""
    if settings.delegate is not None:
        return settings.delegate
    return "xnnpack" if settings.xnnpack else "none"


def benchmark_flags(settings: BenchSettings, graph: str, warmup: int, runs: int) -> list[str]:
    """benchmark_model's flags for our settings. --min_secs=0 / --warmup_min_secs=0 make the run counts
    exact (by default the tool keeps running for at least 1 s / 0.5 s)."""
    delegate = requested_delegate(settings)
    # GPU / NNAPI leave the nodes they do not take to the CPU, where XNNPACK applies as settings say.
    xnnpack = delegate == "xnnpack" or (delegate in ("gpu", "nnapi") and settings.xnnpack)
    flags = [
        f"--graph={graph}",
        f"--num_threads={settings.threads}",
        f"--warmup_runs={warmup}",
        "--warmup_min_secs=0",
        f"--num_runs={runs}",
        "--min_secs=0",
        f"--use_xnnpack={'true' if xnnpack else 'false'}",
        "--enable_op_profiling=false",
    ]
    if delegate == "gpu":
        flags.append("--use_gpu=true")
    elif delegate == "nnapi":
        flags.append("--use_nnapi=true")
    return flags


def elf_abi(header: bytes) -> str | None:
    """The Android ABI an ELF executable is built for (from e_machine); None if it is not ELF or unknown."""
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    endian = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack(f"{endian}H", header[18:20])
    return _ELF_ABIS.get(machine, f"e_machine {machine}")


def check_binary(path: Path, abis: list[str], spell: Spell = cli_words) -> None:
    """The benchmark binary exists, is an executable and runs on one of the device's ABIs; errors name its
    option as `spell` writes it."""
    given = spell("benchmark_binary")
    fix_abi = f"pass {given} built for {abis[0] if abis else 'the device'} (LiteRT's benchmark_model)"
    if not path.is_file():
        raise EdgeportError(f"{given} {path} does not exist", "pass the path of a benchmark_model binary")
    with path.open("rb") as f:
        abi = elf_abi(f.read(64))
    if abi is None:
        raise EdgeportError(f"{given} {path} is not an executable (no ELF header)", fix_abi)
    if abis and abi not in abis:
        raise EdgeportError(f"{given} {path} is built for {abi}, the device runs {', '.join(abis)}", fix_abi)


@dataclass
class Adb:
    """adb with one device selected; `spell` names options in its errors."""

    exe: str
    serial: str
    spell: Spell = cli_words

    def run(self, args: list[str], timeout: float = ADB_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [self.exe, "-s", self.serial, *args], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise EdgeportError(
                f"`adb {' '.join(args[:2])}` on {self.serial} did not finish in {timeout:g} s",
                f"check the device (`adb devices`); for a slow model raise {self.spell('timeout_s')}",
            ) from exc

    def shell(self, command: str, timeout: float = ADB_TIMEOUT_S) -> str:
        """stdout of `command` run by the device's shell (stderr folded in)."""
        done = self.run(["shell", f"{command} 2>&1"], timeout)
        if done.returncode != 0 and not done.stdout.strip():
            raise EdgeportError(
                f"adb shell on {self.serial} failed: {_last_line(done.stderr) or f'exit {done.returncode}'}",
                "check the device with `adb devices`",
            )
        return done.stdout

    def getprop(self, name: str) -> str:
        return self.shell(f"getprop {name}").strip()

    def push(self, local: Path, remote: str) -> None:
        done = self.run(["push", str(local), remote])
        if done.returncode != 0:
            raise EdgeportError(
                f"adb push {local.name} to {self.serial} failed: {_last_line(done.stderr + done.stdout)}",
                f"check free space and permissions in {SCRATCH_ROOT} on the device",
            )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def connect(serial: str | None, spell: Spell = cli_words) -> Adb:
    """adb and the device `serial` names (or the only one connected); errors name options as `spell`
    writes them."""
    exe = find_adb()
    try:
        listing = subprocess.run([exe, "devices"], capture_output=True, text=True, timeout=ADB_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise EdgeportError(
            "`adb devices` did not answer", "restart the adb server: adb kill-server"
        ) from exc
    if listing.returncode != 0:
        raise EdgeportError(
            f"`adb devices` failed: {_last_line(listing.stderr)}", "run `adb devices` to see why"
        )
    return Adb(exe, select_device(parse_devices(listing.stdout), serial, spell), spell)


class AdbRunner:
    name = "adb"
    time_kind: TimeKind = "device-timer"
    interleaves = True  # sessions are scratch dirs on the device: several models alternate freely
    uses = ("threads", "xnnpack", "delegate")

    def __init__(self, serial: str | None, options: RunnerOptions, spell: Spell = cli_words) -> None:
        self.serial = serial
        self.options = options
        self.spell = spell
        self._adb: Adb | None = None
        self._abis: list[str] | None = None

    @property
    def adb(self) -> Adb:
        if self._adb is None:
            self._adb = connect(self.serial, self.spell)
        return self._adb

    def abis(self) -> list[str]:
        if self._abis is None:
            listed = self.adb.getprop("ro.product.cpu.abilist")
            self._abis = [a for a in listed.split(",") if a] or [self.adb.getprop("ro.product.cpu.abi")]
        return self._abis

    def device(self) -> DeviceInfo:
        adb = self.adb
        model = adb.getprop("ro.product.model")
        abi = adb.getprop("ro.product.cpu.abi")
        release = adb.getprop("ro.build.version.release")
        governor = _last_line(adb.shell(f"cat {GOVERNOR}"))
        if " " in governor:  # "cat: ...: Permission denied": not readable without root
            governor = ""
        # ro.soc.model exists from Android 12; the board platform (e.g. "taro") names the SoC before it.
        cpu = adb.getprop("ro.soc.model") or adb.getprop("ro.board.platform")
        return DeviceInfo(
            kind="android",
            description=f"{model or 'Android device'}, {abi}, Android {release}",
            cpu=cpu,
            cores=cpu_count(_last_line(adb.shell(f"cat {POSSIBLE_CPUS}"))),
            abi=abi,
            android_version=release,
            cpu_governor=governor,
            serial=adb.serial,
        )

    def check(self, model: BenchModel) -> None:
        if not model.tflite.is_file():
            raise EdgeportError(f"{model.tflite} does not exist", "pass a .tflite file or a convert output")
        binary = self.options.benchmark_binary
        given = self.spell("benchmark_binary")
        if binary is not None:
            check_binary(binary, self.abis(), self.spell)
        elif self.adb.shell(f"test -x {DEVICE_BINARY} && echo present || echo absent").strip() != "present":
            raise EdgeportError(
                f"no benchmark_model on {self.adb.serial} (none at {DEVICE_BINARY}), no {given}",
                f"pass {given} PATH to LiteRT's benchmark_model built for "
                f"{self.abis()[0]}, or push one to {DEVICE_BINARY}",
            )

    def tools(self) -> dict[str, str]:
        """adb's version and which benchmark_model ran (it has no version flag: its path says which)."""
        done = subprocess.run(
            [self.adb.exe, "version"], capture_output=True, text=True, timeout=ADB_TIMEOUT_S
        )
        binary = self.options.benchmark_binary
        return {
            "adb": ", ".join(done.stdout.strip().splitlines()[:2]) or "?",
            "benchmark_model": str(binary) if binary else f"{DEVICE_BINARY} (on the device)",
        }

    def open(self, model: BenchModel, settings: BenchSettings) -> AdbSession:
        self.check(model)
        scratch = f"{SCRATCH_ROOT}/edgeport-bench-{os.getpid()}-{next(_scratch_ids)}"
        session = AdbSession(self.adb, scratch, settings)
        try:
            session.start(model.tflite, self.options.benchmark_binary)
        except BaseException:
            session.close()
            raise
        return session


class AdbSession:
    """One model in a scratch directory on the device; each sample is one benchmark_model process."""

    def __init__(self, adb: Adb, scratch: str, settings: BenchSettings) -> None:
        self.adb = adb
        self.scratch = scratch
        self.settings = settings
        self.graph = f"{scratch}/model.tflite"
        self.binary = DEVICE_BINARY
        self.init_ms: float | None = None
        self.first_ms: float | None = None
        self.probe: BenchmarkOutput | None = None
        self.processes = 0
        self._made_scratch = False

    def start(self, tflite: Path, binary: Path | None) -> None:
        self.adb.shell(f"mkdir -p {shlex.quote(self.scratch)}")
        self._made_scratch = True
        self.adb.push(tflite, self.graph)
        if binary is not None:
            self.binary = f"{self.scratch}/benchmark_model"
            self.adb.push(binary, self.binary)
            self.adb.shell(f"chmod 755 {shlex.quote(self.binary)}")
        # The first process loads the model cold: it gives init and first-inference times, not a sample.
        self.probe = self._invoke(warmup=max(1, self.settings.warmup))
        self.init_ms = _ms(self.probe.init_us)
        self.first_ms = _ms(self.probe.first_us)

    def command(self, warmup: int) -> str:
        flags = benchmark_flags(self.settings, self.graph, warmup=warmup, runs=1)
        return " ".join(shlex.quote(part) for part in [self.binary, *flags])

    def _invoke(self, warmup: int) -> BenchmarkOutput:
        command = self.command(warmup)
        text = self.adb.shell(command, timeout=self.settings.timeout_s)
        self.processes += 1
        out = parse_benchmark_output(text)
        if not out.complete or out.timed is None:
            reason = (out.error_lines or [_last_line(text) or "no output"])[0]
            # The scratch copy is removed on close: the fix names the flags, not the scratch path.
            flags = " ".join(benchmark_flags(self.settings, "MODEL", warmup, 1)[1:])
            raise EdgeportError(
                f"benchmark_model failed on {self.adb.serial}: {reason}",
                f"see its whole log: in `adb -s {self.adb.serial} shell` run "
                f"benchmark_model --graph=MODEL {flags}",
            )
        if out.timed.count != 1:
            raise EdgeportError(
                f"benchmark_model ran {out.timed.count} timed inferences where edgeport asked for 1",
                "use a benchmark_model that takes --min_secs (TensorFlow 1.13 or later, or LiteRT)",
            )
        return out

    def run(self, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            out = self._invoke(warmup=self.settings.warmup)
            samples.append(out.timed.curr / 1000.0)
        return samples

    def finish(self) -> SessionExtras:
        probe = self.probe
        assert probe is not None, "finish() before start()"
        notes = [
            "benchmark_model prints summaries, not per-run times: each sample is the one timed inference "
            f"of its own benchmark_model process after {self.settings.warmup} warm-up runs in that process "
            f"({self.processes} processes, the first one only for init and first-inference time)",
            f"benchmark_model {self.binary} "
            + " ".join(benchmark_flags(self.settings, "MODEL", self.settings.warmup, 1)[1:]),
        ]
        memory = Memory()
        if probe.footprint_wording is not None:
            memory = Memory(
                footprint_init_bytes=_bytes(probe.footprint_init_mb),
                footprint_overall_bytes=_bytes(probe.footprint_overall_mb),
            )
            what = "delta from the tool's start" if probe.footprint_wording == "delta" else "peak RSS growth"
            notes.append(
                f"memory footprint is benchmark_model's own estimate ({what}), approximate by its note"
            )
        delegation, delegation_notes = delegation_of(probe, requested_delegate(self.settings))
        return SessionExtras(memory=memory, delegation=delegation, notes=notes + delegation_notes)

    def close(self) -> None:
        if self._made_scratch:
            self._made_scratch = False
            try:
                self.adb.shell(f"rm -rf {shlex.quote(self.scratch)}")
            except EdgeportError:
                pass  # the device went away: nothing left to clean from here


def delegation_of(out: BenchmarkOutput, requested: str) -> tuple[Delegation, list[str]]:
    """How many nodes the requested delegate took, from the interpreter's `Replacing N out of M node(s)`
    line, else from the tool's `Explicitly applied` summary; a note for each other delegate taking nodes."""
    notes = []
    mine = [r for r in out.replacements if delegate_kind(r.delegate) == requested]
    for rep in out.replacements:
        if delegate_kind(rep.delegate) == requested:
            continue  # reported as the delegation itself
        of = f" of {rep.total}" if rep.total is not None else ""
        notes.append(f"{rep.delegate} took {rep.replaced}{of} nodes")
    applied = [a for a in out.applied if delegate_kind(a.delegate) == requested]
    if requested == "none":
        return Delegation(delegate="none"), notes
    if mine:
        rep = mine[-1]
        return Delegation(delegate=requested, delegated_ops=rep.replaced, total_ops=rep.total), notes
    if applied and applied[-1].extent == "none":
        return Delegation(delegate=requested, delegated_ops=0), notes
    if applied:
        kernels = applied[-1].kernels
        extent = "all nodes" if applied[-1].extent == "completely" else f"{kernels} delegate kernels"
        notes.append(f"{requested} delegate took {extent} (the node count is logged only at verbose level)")
    else:
        notes.append(f"benchmark_model printed no delegation line for {requested}")
    return Delegation(delegate=requested), notes


def _ms(us: float | None) -> float | None:
    value = finite(us)
    return None if value is None else value / 1000.0


def _bytes(mb: float | None) -> int | None:
    value = finite(mb)
    return None if value is None else round(value * MB)


def make_runner(arg: str | None, options: RunnerOptions, spell: Spell = cli_words) -> AdbRunner:
    # Nothing is checked here: the device is asked for when first used, and `spell` words those errors.
    return AdbRunner(arg, options, spell)
