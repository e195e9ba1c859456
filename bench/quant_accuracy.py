"""Top-1 of float vs int8 variants of the CIFAR-10 ResNets, data-free and with data (issue 4).

    python bench/quant_accuracy.py            # writes bench/results/quant_accuracy.{json,md}

Every variant is built by `edgeport convert --quantize MODE` (the same code users run; the clustered
rows by the library calls `--weight-clusters` makes, on the default int8 model) and scored with
LiteRT on CIFAR-10 test images 500-9999. Data-free rows never see a CIFAR image: their
calibration inputs are synthetic (the images are loaded only after the models are built). The
real-data reference is TFLite's post-training quantization calibrated on test images 0-499
(edgeport's `--calibration` path, which hands them to the TFLite converter unchanged; 16 of the
500 are held out for the fidelity report). `resnet20_uint8` is ResNet-20 with the input
normalisation inside the model, fed raw 0..255 pixels: the case naive N(0, 1) calibration breaks.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import CLIP_SIGMAS

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(SHARED / "models"))
import resnet_cifar  # noqa: E402

DATA = SHARED / "data" / "cifar10_test_jpeg.npz"
CAL = slice(0, 500)
EVAL = slice(500, 10000)
LATENCY_RUNS = 50
DEFAULT_INT8 = "int8 edgeport data-free (BN distillation clipped to mean ± 3 std, default)"
# (row label, calibration method or None for float, distillation steps or None, options): options
# are QuantOptions fields (mode, ranges, rounding, flash_budget) plus two handled here: "clusters"
# (cluster the default int8 model's weights; see build_clustered) and "file" (score another file
# of the float build).
VARIANTS = (
    ("float32", None, None, {}),
    ("float16 (model_float16.tflite)", None, None, {"file": "model_float16.tflite"}),
    ("dynamic (int8 weights, float activations; Android CPU)", "gaussian", None, {"mode": "dynamic"}),
    ("int8 naive data-free (N(0,1) noise)", "gaussian", None, {}),
    ("int8 data-free, input statistics only (unclipped)", "input-stats", None, {}),
    ("int8 data-free, BN distillation, unclipped (the default before clipping)", "distill", None, {}),
    ("int8 data-free, BN distillation 200 steps, unclipped", "distill", 200, {}),
    ("int8 data-free, BN distillation + stated input range", "distill", None, {}),
    ("int8 data-free, percentile activation ranges", "distill", None, {"ranges": "percentile"}),
    ("int8 data-free, MSE activation ranges", "distill", None, {"ranges": "mse"}),
    (DEFAULT_INT8, "distill", None, {}),
    ("int8 TFLite PTQ on real images 0-499", "data", None, {}),
    ("int8 data-free, clustered to 32 values/channel, LUT (5-bit)", "distill", None, {"clusters": 32}),
    ("int8 data-free, clustered to 16 values/channel, LUT (4-bit)", "distill", None, {"clusters": 16}),
    ("w4a8 data-free, round to nearest", "distill", None, {"mode": "w4a8", "rounding": "nearest"}),
    ("w4a8 edgeport data-free (SQuant rounding, default)", "distill", None, {"mode": "w4a8"}),
    ("w4a8 data-free mixed 4/8-bit under --flash-budget", "distill", None, {"mode": "w4a8", "budget": True}),
)
# --flash-budget per model: about halfway between the all-int4 and the int8 file sizes.
FLASH_BUDGETS = {"resnet20": 230 * 1024, "resnet20_uint8": 230 * 1024, "resnet56": 700 * 1024}
REFERENCE = "int8 TFLite PTQ on real images 0-499"
# The "stated input range" row passes `--input-range lo,hi`: what a user knows about the input
# without any data. ResNet-20/56 take ImageNet-normalised [0, 1] pixels, so the per-channel extremes
# (0 - mean) / std and (1 - mean) / std span [-2.118, 2.640]; the raw-pixel model takes 0..255.
# The default clips the synthetic inputs to mean ± 3 std of the inferred input statistics when no
# range is known (QuantOptions.clip_sigmas): an automatic stand-in for a stated range. The
# "unclipped" rows turn that off (clip_sigmas=None).
INPUT_RANGES = {"resnet20": (-2.118, 2.640), "resnet56": (-2.118, 2.640), "resnet20_uint8": (0.0, 255.0)}
# The 200-step row (the earlier default, 70-100 s of distillation) shows what the faster default
# gives up; it runs on ResNet-20 only, ResNet-56 would take ~3x as long.
LONG_DISTILL_MODELS = ("resnet20",)


class Uint8ResNet(torch.nn.Module):
    """ResNet-20 that takes raw 0..255 NCHW pixels and normalises them itself."""

    def __init__(self) -> None:
        super().__init__()
        self.net = resnet_cifar.load("resnet20")
        self.register_buffer("mean", torch.tensor(resnet_cifar.NORM_MEAN * 255).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(resnet_cifar.NORM_STD * 255).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def resnet20() -> torch.nn.Module:
    return resnet_cifar.load("resnet20")


def resnet56() -> torch.nn.Module:
    return resnet_cifar.load("resnet56")


def resnet20_uint8() -> torch.nn.Module:
    return Uint8ResNet().eval()


MODELS = ("resnet20", "resnet20_uint8", "resnet56")


def model_input(name: str, images: np.ndarray) -> np.ndarray:
    """Images (uint8 NHWC) as the model's NCHW float input."""
    if name.endswith("uint8"):
        return np.ascontiguousarray(images.astype(np.float32).transpose(0, 3, 1, 2))
    return resnet_cifar.normalize(images)


def build(
    name: str,
    method: str | None,
    cal_file: Path,
    outdir: Path,
    steps: int | None = None,
    input_range: tuple[float, float] | None = None,
    clip_sigmas: float | None = None,
    options: dict | None = None,
) -> tuple[Path, dict]:
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import MODE_FILES, QuantOptions

    options = dict(options or {})
    if options.pop("budget", False):
        options["flash_budget"] = FLASH_BUDGETS[name]
    quant = None
    if method is not None:
        quant = QuantOptions(
            method=method,
            calibration=cal_file if method == "data" else None,
            distill_steps=steps,
            clip_sigmas=clip_sigmas,
            **options,
        )
    started = time.perf_counter()
    result = convert_model(
        ConvertOptions(
            source=f"{Path(__file__).resolve()}:{name}",
            outdir=outdir,
            input_shapes=[[1, 3, 32, 32]],
            input_range=input_range,
            force=True,
            quantize=quant,
        )
    )
    path = outdir / (MODE_FILES[quant.mode] if quant else "model_float32.tflite")
    info = {"convert_seconds": round(time.perf_counter() - started, 1), "size_bytes": path.stat().st_size}
    if quant is not None:
        section = result.manifest.sections["quantization"]
        cal = section.get("calibration", {})
        info.update(
            mode=quant.mode,
            method=cal.get("method"),
            data_free=cal.get("data_free", True),
            sqnr_db=section["fidelity"]["outputs"][0]["sqnr_db"],
            tflm_vs_litert_ref_steps=section.get("tflm_vs_litert", {}).get("max_diff_steps"),
            tflm_vs_litert_optimized_steps=section.get("litert_optimized_vs_tflm", {}).get("max_diff_steps"),
            distill_seconds=cal.get("seconds"),
            distill_steps=cal.get("steps"),
            input_range=list(input_range) if input_range else None,
            input_stats=cal.get("input_stats"),
        )
        if "int4" in section:
            info["int4"] = {k: v for k, v in section["int4"].items() if k != "layers"}
    return path, info


def build_clustered(int8_path: Path, clusters: int, outdir: Path) -> tuple[Path, dict]:
    """Cluster the default int8 model's weights and LUT-compress them, with the library calls
    `edgeport convert --quantize int8 --weight-clusters N` makes on that same model. The compressed
    file is what TFLite Micro runs (its size is the row's size); LiteRT has no DECODE op, so the row
    is scored on the clustered model it decodes to (checked weight for weight here; the conversion
    checks the outputs in TFLite Micro bit for bit, tests/quant/test_quant_options.py)."""
    from edgeport.quant.cluster import cluster_weights
    from edgeport.quant.lut_compression import compress_lut, read_lut_weights
    from edgeport.tflite_file import parse_tflite

    started = time.perf_counter()
    clustered = cluster_weights(int8_path.read_bytes(), clusters)
    compressed = compress_lut(clustered.model)
    raw = parse_tflite(clustered.model).raw
    decoded = read_lut_weights(compressed)
    by_name = {t.name: t for t in raw.subgraphs[0].tensors}
    comp = parse_tflite(compressed).raw.subgraphs[0].tensors
    for index, values in decoded.items():
        # The decoded tensor is named after the weight it replaces, plus "_decoded".
        original = by_name[comp[index].name.removesuffix(b"_decoded")]
        expected = np.frombuffer(bytes(raw.buffers[original.buffer].data), np.int8)
        assert np.array_equal(values.reshape(-1), expected), comp[index].name
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "model_int8_clustered.tflite"
    path.write_bytes(clustered.model)
    return path, {
        "convert_seconds": round(time.perf_counter() - started, 1),
        "size_bytes": len(compressed),
        "mode": "int8-lut",
        "method": "distill",
        "data_free": True,
        "clusters": clusters,
        "worst_weight_sqnr_db": round(clustered.worst_sqnr_db(), 2),
    }


def evaluate(path: Path, x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1 %, median LiteRT latency ms) with builtin kernels, one thread."""
    from edgeport.runtimes import litert

    interp = litert.interpreter(path.read_bytes())
    interp.allocate_tensors()
    (inp,), (out,) = interp.get_input_details(), interp.get_output_details()
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if inp["dtype"] == np.int8:
        scale, zero = inp["quantization"]
        x_nhwc = np.clip(np.round(x_nhwc / scale) + zero, -128, 127).astype(np.int8)
    predictions = np.zeros(len(x_nhwc), np.int64)
    for i in range(len(x_nhwc)):
        interp.set_tensor(inp["index"], x_nhwc[i : i + 1])
        interp.invoke()
        predictions[i] = int(np.argmax(interp.get_tensor(out["index"])[0]))
    correct = int(np.sum(predictions == labels))
    times = []
    for i in range(LATENCY_RUNS):
        interp.set_tensor(inp["index"], x_nhwc[i : i + 1])
        t = time.perf_counter()
        interp.invoke()
        times.append(time.perf_counter() - t)
    return 100.0 * correct / len(x_nhwc), 1000.0 * float(np.median(times)), predictions


def paired(pred: np.ndarray, ref: np.ndarray, labels: np.ndarray) -> dict:
    """How a variant differs from the real-data reference on the same images: the share of images
    whose predicted class differs, and two standard errors of the top-1 difference (paired: only
    the images one gets right and the other wrong count), in points."""
    n = len(labels)
    b = int(np.sum((pred == labels) & (ref != labels)))
    c = int(np.sum((pred != labels) & (ref == labels)))
    se = np.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    return {"disagree_pct": round(100.0 * float(np.mean(pred != ref)), 2), "delta_2se": round(200.0 * se, 2)}


def main(argv: list[str]) -> int:
    """`--only TEXT`: build just the variants whose label contains TEXT and merge their rows into
    the existing results (the other rows, and the real-data reference, are kept as they were)."""
    only = argv[argv.index("--only") + 1] if "--only" in argv else None
    out_dir = ROOT / "bench" / "results"
    previous: dict[str, list[dict]] = {}
    if only is not None:
        previous = json.loads((out_dir / "quant_accuracy.json").read_text())
    results: dict[str, list[dict]] = {}
    failed: dict[str, list[dict]] = {}
    # Predicted classes per variant (not committed), so an --only run can compare with the reference.
    pred_file = out_dir / "quant_accuracy_predictions.npz"
    predictions: dict[str, np.ndarray] = {}
    if only is not None and pred_file.exists():
        with np.load(pred_file) as saved:
            predictions = {k: saved[k] for k in saved.files}
    with tempfile.TemporaryDirectory(prefix="edgeport-bench-") as tmp:
        tmp_dir = Path(tmp)
        for name in MODELS:
            # The data-free variants are built before any CIFAR image is loaded; the calibration
            # file of the real-data row holds images 0-499 only.
            built = []
            default_int8: Path | None = None
            for label, method, steps, options in VARIANTS:
                if steps is not None and name not in LONG_DISTILL_MODELS:
                    continue
                clusters_wanted = only is not None and "clustered" in only
                if only is not None and only not in label and not (label == DEFAULT_INT8 and clusters_wanted):
                    continue
                if "file" in options and built and built[0][0] == "float32":
                    path = built[0][1].parent / options["file"]
                    built.append((label, path, {"size_bytes": path.stat().st_size, "convert_seconds": 0.0}))
                    continue
                if "clusters" in options:
                    if default_int8 is None:
                        print(f"SKIPPED {name} {label}: needs the default int8 row", flush=True)
                        continue
                    out = tmp_dir / f"{name}_c{options['clusters']}"
                    built.append((label, *build_clustered(default_int8, options["clusters"], out)))
                    continue
                user_range = INPUT_RANGES[name] if "input range" in label else None
                clip = None if "unclipped" in label else CLIP_SIGMAS
                cal_file = tmp_dir / f"{name}_cal.npy"
                if method == "data":
                    with np.load(DATA) as data:
                        np.save(cal_file, model_input(name, data["images"][CAL]))
                tag = "_range" if user_range else "" if clip else "_unclipped"
                tag += "".join(f"_{v}" for v in options.values())
                out = tmp_dir / f"{name}_{method or 'float'}{steps or ''}{tag}"
                try:
                    path, info = build(name, method, cal_file, out, steps, user_range, clip, options)
                except EdgeportError as exc:  # recorded in the table; the other variants still run
                    print(f"FAILED {name} {label}: {exc}", flush=True)
                    failed.setdefault(name, []).append({"variant": label, "error": str(exc)})
                    continue
                print(f"built {name} {label}: {info}", flush=True)
                built.append((label, path, info))
                if label == DEFAULT_INT8:
                    default_int8 = path
            with np.load(DATA) as data:
                x = model_input(name, data["images"][EVAL])
                labels = data["labels"][EVAL].astype(np.int64)
            rows = []
            for label, path, info in built:
                top1, ms, predictions[f"{name}|{label}"] = evaluate(path, x, labels)
                rows.append({"variant": label, "top1": round(top1, 2), "latency_ms": round(ms, 3), **info})
                print(f"{name:15s} {label:52s} {top1:6.2f} %  {ms:6.2f} ms", flush=True)
            ref = predictions.get(f"{name}|{REFERENCE}")
            for row in rows:
                if ref is not None and row["variant"] != "float32":
                    row.update(paired(predictions[f"{name}|{row['variant']}"], ref, labels))
            np.savez_compressed(pred_file, **predictions)
            rows += failed.get(name, [])
            if only is not None:  # merge: new rows replace same-named ones, in VARIANTS order
                by_label = {r["variant"]: r for r in previous.get(name, [])} | {r["variant"]: r for r in rows}
                order = [label for label, _, _, _ in VARIANTS]
                rows = sorted(by_label.values(), key=lambda r: order.index(r["variant"]))
            results[name] = rows
            # Written after every model, so a partial run still leaves its numbers.
            (out_dir / "quant_accuracy.json").write_text(json.dumps(results, indent=2) + "\n")
            (out_dir / "quant_accuracy.md").write_text(markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict[str, list[dict]]) -> str:
    lines = [
        "# Quantized accuracy on CIFAR-10 (test images 500-9999, LiteRT builtin kernels, 1 thread)",
        "",
        "Produced by `python bench/quant_accuracy.py`. Data-free rows never touch CIFAR images; the",
        "real-data row is TFLite PTQ calibrated on test images 0-499. size: the .tflite file (for the",
        "clustered rows the LUT-compressed file TFLite Micro runs; they are scored in LiteRT on the",
        "clustered model it decodes to). SQNR: quantized vs float32 logits on held-out samples of the",
        "calibration distribution (the manifest's fidelity report). TFLM steps: largest difference of",
        "the logits, TFLite Micro vs TFLite's reference / LiteRT's optimized kernels. vs float: top-1",
        "difference. vs real-data int8: top-1 difference ± two standard errors (paired, same images)",
        "and the share of images whose predicted class differs from the real-data model's.",
        "",
        "| model | variant | top-1 % | vs float | vs real-data int8 | size KB | latency ms | SQNR dB |"
        " TFLM steps ref / opt | distill s | convert s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        ref = next((r["top1"] for r in rows if r.get("method") == "data"), None)
        float_top1 = next((r["top1"] for r in rows if r["variant"] == "float32" and "top1" in r), None)
        for r in rows:
            if "error" in r:
                lines.append(f"| {name} | {r['variant']} | failed: {r['error'][:120]} | | | | | | | | |")
                continue
            delta = f"{r['top1'] - ref:+.2f}" if r.get("method") and ref is not None else ""
            if delta and r.get("delta_2se") and r["variant"] != REFERENCE:
                delta += f" ± {r['delta_2se']:.2f} ({r['disagree_pct']:.1f} % differ)"
            vs_float = (
                f"{r['top1'] - float_top1:+.2f}"
                if float_top1 is not None and r["variant"] != "float32"
                else ""
            )
            sqnr = "" if r.get("sqnr_db") is None else f"{r['sqnr_db']:.1f}"
            steps = (
                f"{r['tflm_vs_litert_ref_steps']} / {r['tflm_vs_litert_optimized_steps']}"
                if r.get("tflm_vs_litert_ref_steps") is not None
                else ""
            )
            lines.append(
                f"| {name} | {r['variant']} | {r['top1']:.2f} | {vs_float} | {delta} | "
                f"{r['size_bytes'] / 1024:.0f} | {r['latency_ms']:.2f} | {sqnr} | "
                f"{steps} | {r.get('distill_seconds') or ''} | {r['convert_seconds']} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
