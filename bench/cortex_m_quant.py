"""Flash, arena and cycles of int8 vs w4a8 vs LUT-clustered int8 on Cortex-M, in QEMU.

Each variant is built by `edgeport convert` (data-free), packaged by `edgeport package`, compiled
against a real TensorFlow Lite Micro tree (CMSIS-NN kernels) and run in QEMU, where the firmware's
self-test checks the CRC, runs the embedded test input and compares with the host TFLite Micro
output (PASS/FAIL). Ticks are SysTick counts under `qemu -icount` (about one per instruction: a
lower bound for a real core, but the same for every variant, so ratios are meaningful).

    EDGEPORT_TFLM_ROOT=/path/to/tflite-micro python bench/cortex_m_quant.py

Needs arm-none-eabi-gcc, make and qemu-system-arm, and a tflite-micro tree with its downloads in
place (TFLM's Makefile fetches them otherwise). Run by hand (minutes), never in CI.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ("mps2-an386", "corstone-300")  # Cortex-M4 (DSP) and Cortex-M55 (Helium)
MODELS = {  # name -> (SOURCE, input shape)
    "resnet20": (f"{ROOT / 'bench' / 'quant_accuracy.py'}:resnet20", [1, 3, 32, 32]),
    "kws_dscnn": (f"{ROOT / 'examples' / 'kws_dscnn.py'}:build", [1, 1, 49, 10]),
}
VARIANTS = {  # label -> QuantOptions fields
    "int8": {"mode": "int8"},
    "w4a8": {"mode": "w4a8"},
    "int8, 16 clusters (LUT)": {"mode": "int8", "weight_clusters": 16},
}


def run_variant(source: str, shape: list[int], options: dict, board: str, work: Path, tflm_root: str) -> dict:
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import QuantOptions
    from edgeport.targets.cortex_m import package
    from edgeport.targets.cortex_m.flash import build_and_run_qemu

    converted = work / "converted"
    if not converted.exists():
        convert_model(
            ConvertOptions(
                source=source, outdir=converted, input_shapes=[shape], quantize=QuantOptions(**options)
            )
        )
    result = package(converted, work / board, board=board)
    run = build_and_run_qemu(result.outdir / "firmware", result.board, tflm_root, timeout=1800)
    ticks = re.search(r"latency: (\d+) cycles", run.stdout)
    used = re.search(r"arena: (\d+) of (\d+) bytes used", run.stdout)
    return {
        "model_bytes": result.model_bytes,
        "arena_used": int(used.group(1)) if used else None,
        "arena_size": int(used.group(2)) if used else None,
        "ticks": int(ticks.group(1)) if ticks else None,
        "self_test": "PASS" if "PASS" in run.stdout else ("TIMEOUT" if run.timed_out else "FAIL"),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "# int8 vs w4a8 vs LUT-clustered int8 on Cortex-M (QEMU, TFLite Micro + CMSIS-NN)",
        "",
        "Produced by `EDGEPORT_TFLM_ROOT=... python bench/cortex_m_quant.py`. Flash: the model array;",
        "arena: bytes TFLite Micro used / kTensorArenaSize; ticks: SysTick under `qemu -icount` (about",
        "one per instruction); self-test: the firmware's comparison with the host TFLite Micro output.",
        "",
        "| model | variant | board | flash KB | arena used / size | ticks | vs int8 | self-test |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {(r["model"], r["board"]): r["ticks"] for r in rows if r["variant"] == "int8"}
    for r in rows:
        ref = base.get((r["model"], r["board"]))
        ratio = f"{r['ticks'] / ref:.2f}x" if r["ticks"] and ref else ""
        ticks = f"{r['ticks']:,}" if r["ticks"] else ""
        arena = f"{r['arena_used']:,} / {r['arena_size']:,}" if r["arena_used"] else ""
        lines.append(
            f"| {r['model']} | {r['variant']} | {r['board']} | {r['model_bytes'] / 1024:.0f} | {arena} | "
            f"{ticks} | {ratio} | {r['self_test']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    tflm_root = os.environ.get("EDGEPORT_TFLM_ROOT")
    if not tflm_root:
        print(
            "set EDGEPORT_TFLM_ROOT to a tflite-micro tree with tools/make/downloads populated",
            file=sys.stderr,
        )
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeport-bench-m-") as tmp:
        for name, (source, shape) in MODELS.items():
            for label, options in VARIANTS.items():
                work = Path(tmp) / f"{name}_{label.split(',')[0]}_{len(options)}"
                for board in BOARDS:
                    row = {"model": name, "variant": label, "board": board}
                    row.update(run_variant(source, shape, options, board, work, tflm_root))
                    print(row, flush=True)
                    rows.append(row)
    out = ROOT / "bench" / "results"
    (out / "cortex_m_quant.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "cortex_m_quant.md").write_text(markdown(rows))
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
