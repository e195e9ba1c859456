"""Latency and memory of every shared .tflite model, and of edgeport's own int8 models (the KWS example
and the pretrained CIFAR ResNet-20, converted data-free into bench/.cache/latency when missing), on the
runners of `edgeport bench` that work on this machine: LiteRT on the host (XNNPACK on and off), the
TFLite Micro Python runtime (host time), and the packaged firmware in QEMU on Cortex-M4 (mps2-an386),
Cortex-M7 (mps2-an500) and Cortex-M55 (corstone-300).

    python bench/latency.py [--runners host,qemu:mps2-an386] [--models kws]   (--models edgeport: own ones)

Every number comes from `edgeport.bench.harness.bench`, one model at a time (a model a runner refuses is
a row with its one-line reason). The TFLite Micro tree is EDGEPORT_TFLM_ROOT or TFLM_ROOT, else the
offline bundle in ../shared/tflm extracted once (its library is built on first use per core: minutes).
Results go to bench/results/latency.{json,md}; rows of runners not measured in this run are kept, so
the runners can be measured one at a time. Run by hand (tens of minutes), never in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGEPORT_SHARED", ROOT.parent / "shared"))
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache" / "latency"
# name -> (`edgeport convert` SOURCE, input shape): edgeport's own models, int8 with input-statistics
# calibration (data-free; accuracy is bench/quant_accuracy.py's business, latency does not depend on it).
OWN_MODELS = {
    "edgeport_kws_dscnn_int8": (f"{ROOT / 'examples' / 'kws_dscnn.py'}:build", [1, 1, 49, 10]),
    "edgeport_resnet20_int8": (f"{ROOT / 'bench' / 'quant_accuracy.py'}:resnet20", [1, 3, 32, 32]),
}
# label -> (--on spec, settings): QEMU runs are deterministic (instruction counts), so few runs suffice.
RUNNERS = {
    "host": ("host", {"runs": 50, "warmup": 5}),
    "host (no XNNPACK)": ("host", {"runs": 50, "warmup": 5, "xnnpack": False}),
    "tflm (host)": ("tflm", {"runs": 10, "warmup": 1}),
    "qemu:mps2-an386": ("qemu:mps2-an386", {"runs": 5, "warmup": 1, "timeout_s": 1800}),
    "qemu:mps2-an500": ("qemu:mps2-an500", {"runs": 5, "warmup": 1, "timeout_s": 1800}),
    "qemu:corstone-300": ("qemu:corstone-300", {"runs": 5, "warmup": 1, "timeout_s": 1800}),
}


def tflm_root() -> Path | None:
    # TFLM_ROOT too (the tests read only EDGEPORT_TFLM_ROOT): the tree found here is passed on explicitly,
    # which would otherwise put the offline bundle ahead of the variable `edgeport bench` itself reads.
    root = os.environ.get("EDGEPORT_TFLM_ROOT") or os.environ.get("TFLM_ROOT")
    return Path(root) if root else offline_tflm_tree()


def offline_tflm_tree(cache: Path | None = None) -> Path | None:
    """The newest offline TFLite Micro bundle in ../shared/tflm, extracted once (tree_from_archive, into
    `cache` or the temp dir); None without one. The tests' tflm_root fixture finds its tree here too."""
    bundles = sorted((SHARED / "tflm").glob("*.tar.xz"))
    if not bundles:
        return None
    from edgeport.targets.cortex_m.bench_qemu import tree_from_archive

    return tree_from_archive(bundles[-1], cache)


def own_model(name: str, cache: Path = CACHE) -> Path:
    """edgeport's own model `name` (OWN_MODELS) as an int8 .tflite in `cache`, converted when missing."""
    target = cache / f"{name}.tflite"
    if target.exists():
        return target
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import QuantOptions

    source, shape = OWN_MODELS[name]
    converted = cache / name
    convert_model(
        ConvertOptions(
            source=source,
            outdir=converted,
            input_shapes=[shape],
            quantize=QuantOptions(mode="int8", method="input-stats"),
            force=True,
        )
    )
    # Copied under the model's name (the table's row name is the file stem); renamed into place so a
    # stopped run never leaves a partial file that a later run would take for the model.
    partial = target.with_suffix(".partial")
    partial.write_bytes((converted / "model_int8.tflite").read_bytes())
    partial.replace(target)
    return target


def measure(model: Path, label: str, tree: Path | None) -> dict:
    """One model on one runner: the row of the table, or the one-line reason it has no numbers."""
    from edgeport.bench.harness import bench
    from edgeport.bench.runner import RunnerOptions
    from edgeport.bench.schema import BenchSettings
    from edgeport.errors import EdgeportError

    spec, fields = RUNNERS[label]
    row: dict = {"model": model.stem, "runner": label}
    try:
        report = bench(
            [model], spec, BenchSettings(runner=spec, **fields), RunnerOptions(tflm_root=tree), progress=False
        )
    except EdgeportError as exc:
        return {**row, "error": str(exc)}
    except ImportError as exc:  # a runner not on this checkout
        return {**row, "error": f"runner unavailable: {exc}"}
    (result,) = report.results
    ticks = sorted(result.ticks) if result.ticks else None
    return {
        **row,
        "time_kind": result.time_kind,
        "runs": result.stats.count,
        "median_ms": result.stats.median,
        "p99_ms": result.stats.p99,
        "ticks_median": ticks[len(ticks) // 2] if ticks else None,
        "arena_bytes": result.memory.arena_bytes,
        "flash_bytes": result.memory.flash_bytes,
        "ram_bytes": result.memory.ram_bytes,
        "stack_bytes": result.memory.stack_bytes,
        "peak_rss_bytes": result.memory.peak_rss_bytes,
        "device": report.device.description,
        "tools": report.tools,
    }


def _kb(value: int | None) -> str:
    return f"{value / 1024:.1f}" if value else ""


def markdown(rows: list[dict]) -> str:
    lines = [
        "# Latency and memory of the shared models and edgeport's own int8 models on every `edgeport bench`"
        " runner",
        "",
        "Produced by `python bench/latency.py` (`edgeport.bench.harness.bench`, one model at a time) on "
        f"{platform.machine()} Linux, {os.cpu_count()} cores shared with other jobs. Host times are wall",
        "clock on this machine (noisy: compare within a row's runner, not across machines); `tflm (host)`",
        "is TFLite Micro's Python runtime timed on the host, not a microcontroller.",
        "",
        "**qemu rows are estimates, not measurements.** Under `qemu-system-arm -icount` every instruction",
        "advances virtual time by 2^shift ns and the firmware reads SysTick in that virtual time, so each",
        "timed inference yields its instruction count (`ticks`). The time shown is that count at one",
        "instruction per cycle of the board's clock (25 MHz for the MPS2 machines, 32 MHz for Corstone-300).",
        "A real core takes more cycles than instructions: multi-cycle multiplies and loads, branch",
        "penalties, flash wait states (a 25 MHz MPS2 FPGA has none, an STM32 at 216 MHz has several),",
        "cache misses and bus contention; the Cortex-M7 can also dual-issue, taking fewer. Closer numbers",
        "come from the board itself (`--on serial:PORT` reads its DWT cycle counter), from a",
        "cycle-approximate model (Arm's Corstone-300 FVP), or from scaling by a cycles-per-instruction",
        "measured on the core and memory system in question. The instruction counts themselves are exact",
        "and repeatable, so ratios between models or variants on one core are meaningful.",
        "",
        "`edgeport_*` rows are edgeport's own models, converted by bench/latency.py with `--quantize int8",
        "--calibration-method input-stats` (data-free; accuracy is not measured here): the KWS example",
        "(examples/kws_dscnn.py, input 1x1x49x10) and the pretrained CIFAR-10 ResNet-20 (input 1x3x32x32).",
        "",
        "Flash = text (code, constants, the model) + the load image of .data, from the firmware ELF; RAM =",
        ".data + .bss (the tensor arena inside it) + the stack high-water mark the firmware measures.",
        "",
        "| model | runner | median ms | p99 ms | ticks (instructions) | arena KB | flash KB | RAM KB "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['runner']} | {r['error']} | | | | | | |")
            continue
        ticks = f"{r['ticks_median']:,}" if r.get("ticks_median") else ""
        rss = f"{r['peak_rss_bytes'] / 2**20:.0f}" if r.get("peak_rss_bytes") else ""
        lines.append(
            f"| {r['model']} | {r['runner']} | {r['median_ms']:.4g} | {r['p99_ms']:.4g} | {ticks} | "
            f"{_kb(r['arena_bytes'])} | {_kb(r['flash_bytes'])} | {_kb(r['ram_bytes'])} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from edgeport.errors import EdgeportError

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", default=",".join(RUNNERS), help="comma-separated labels of RUNNERS")
    parser.add_argument("--models", default="", help="only models whose file name contains this")
    args = parser.parse_args(argv)
    labels = [label for label in args.runners.split(",") if label]
    unknown = [label for label in labels if label not in RUNNERS]
    if unknown:
        print(f"unknown runner {unknown[0]!r}: one of {', '.join(RUNNERS)}", file=sys.stderr)
        return 2
    models = sorted(p for p in (SHARED / "models" / "tflite").glob("*.tflite") if args.models in p.name)
    try:
        models += [own_model(name) for name in OWN_MODELS if args.models in f"{name}.tflite"]
    except EdgeportError as exc:
        print(f"converting edgeport's own models: {exc}", file=sys.stderr)
        return 1
    if not models:
        print(
            f"no models matching {args.models!r} in {SHARED / 'models' / 'tflite'} or OWN_MODELS",
            file=sys.stderr,
        )
        return 2
    tree = tflm_root() if any(label.startswith("qemu:") for label in labels) else None
    path = RESULTS / "latency.json"
    measured = {(m.stem, label) for m in models for label in labels}
    previous = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in previous if (r["model"], r["runner"]) not in measured]
    order = list(RUNNERS)
    for model in models:
        for label in labels:
            row = measure(model, label, tree)
            print(json.dumps({k: v for k, v in row.items() if k != "tools"}), flush=True)
            rows.append(row)
            # Written after every row: a run stopped part-way keeps what it measured.
            rows.sort(key=lambda r: (r["model"], order.index(r["runner"]) if r["runner"] in order else 99))
            path.write_text(json.dumps(rows, indent=2) + "\n")
            (RESULTS / "latency.md").write_text(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
