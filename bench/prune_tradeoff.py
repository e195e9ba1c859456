"""Data-free pruning trade-off on the pretrained CIFAR ResNets (hand-run, never in CI).

For each model, FLOPs cut and criterion, with and without data-free recovery: top-1 on CIFAR-10 test
images 500-9999 in PyTorch (float), the paired difference to the unpruned model (two standard
errors, bench/quant_accuracy.py's `paired`), MACs and parameters, and how long pruning and recovery
took. No row sees a CIFAR image before it is scored: synthetic inputs come from the BatchNorm
statistics (quant/calibration.py).

    python bench/prune_tradeoff.py [--models resnet20] [--ratios 0.2,0.4] [--criteria l1,l2,red]
        [--budget 600] [--images 9500]

Writes bench/results/prune_tradeoff.json and .md. Check `uptime` first: on a saturated machine
the recovery budget buys the same steps but the run takes much longer.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.quant_accuracy import DATA, EVAL, model_input, paired, resnet20, resnet56  # noqa: E402
from edgeport.quant.prune import PruneOptions, prune_module  # noqa: E402
from edgeport.quant.prune.prune import synthetic_inputs  # noqa: E402
from edgeport.tensors import TensorSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results"
BUILDERS = {"resnet20": resnet20, "resnet56": resnet56}


def predict(module: torch.nn.Module, x: np.ndarray, batch: int = 250) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(x[i : i + batch])).argmax(1).numpy())
    return np.concatenate(out)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--ratios", default="0.2,0.4")
    parser.add_argument("--criteria", default="l1,l2,red")
    parser.add_argument("--allocation", default="sensitivity,uniform")
    parser.add_argument("--recovery", default="none,distill")
    parser.add_argument("--budget", type=float, default=600.0)
    parser.add_argument("--images", type=int, default=EVAL.stop - EVAL.start)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = np.load(DATA)
    images, labels = data["images"][EVAL][: args.images], data["labels"][EVAL][: args.images]
    specs = [TensorSpec("x", [1, 3, 32, 32])]
    defaults = PruneOptions(ratio=0.5)
    rows = []
    for name in args.models.split(","):
        reference = BUILDERS[name]()
        x = model_input(name, images)
        ref_pred = predict(reference, x)
        float_top1 = 100.0 * float(np.mean(ref_pred == labels))
        started = time.perf_counter()
        # Made once per model: every row prunes from the same synthetic inputs.
        synthetic = synthetic_inputs(reference, specs, {}, defaults.samples, defaults.held_out, defaults.seed)
        print(
            f"{name} float: {float_top1:.2f}%, synthetic inputs {time.perf_counter() - started:.0f}s",
            flush=True,
        )
        variants = itertools.product(
            [float(r) for r in args.ratios.split(",")],
            args.criteria.split(","),
            args.allocation.split(","),
            args.recovery.split(","),
        )
        for ratio, criterion, allocation, recovery in variants:
            options = PruneOptions(
                ratio=ratio, criterion=criterion, recovery=recovery, budget=args.budget, allocation=allocation
            )
            started = time.perf_counter()
            result = prune_module(reference, specs, {}, options, synthetic=synthetic)
            pred = predict(result.module, x)
            section = result.section
            row = {
                "model": name,
                "ratio": ratio,
                "criterion": criterion,
                "allocation": allocation,
                "recovery": recovery,
                "top1": round(100.0 * float(np.mean(pred == labels)), 2),
                "float_top1": round(float_top1, 2),
                **paired(pred, ref_pred, labels),
                "macs": section.after.macs,
                "macs_before": section.before.macs,
                "params": section.after.params,
                "params_before": section.before.params,
                "recovery_steps": section.recovery.steps,
                "seconds": round(time.perf_counter() - started, 1),
                "widths": {g.module: g.channels_after for g in section.groups},
                "kept_whole": section.kept_whole,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k not in ("kept_whole",)}), flush=True)
    args.out.mkdir(exist_ok=True, parents=True)
    images_text = f"CIFAR-10 test {EVAL.start}-{EVAL.start + len(images) - 1}"
    (args.out / "prune_tradeoff.json").write_text(json.dumps({"images": images_text, "rows": rows}, indent=1))
    (args.out / "prune_tradeoff.md").write_text(markdown(rows, len(images)))
    return 0


def markdown(rows: list[dict], images: int) -> str:
    lines = [
        f"# Data-free pruning on CIFAR-10 (test images 500-{500 + images - 1}, PyTorch float)",
        "",
        "| model | FLOPs cut | criterion | allocation | recovery | top-1 % | vs float (±2SE) | MACs | params "
        "| steps | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        delta = r["top1"] - r["float_top1"]
        cut = 100 * (1 - r["macs"] / r["macs_before"])
        lines.append(
            f"| {r['model']} | {cut:.0f}% (asked {100 * r['ratio']:.0f}%) | {r['criterion']} | "
            f"{r['allocation']} | "
            f"{r['recovery']} | {r['top1']:.2f} | {delta:+.2f} (±{r['delta_2se']:.2f}) | "
            f"{r['macs'] / 1e6:.1f}M | {r['params'] / 1e3:.0f}k | {r['recovery_steps']} | "
            f"{r['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
