"""Benchmark: 16-bit activations (`--quantize a16w8`) against int8 on pretrained zoo models int8 loses.

For each model (default: PP-OCRv4 text detection, the zoo's `ppocrv4_det`), `edgeport convert` runs as
the pretrained zoo runs it (bench/pretrained_zoo.py's `edgeport_cli`: same input shape, data-free) once
per mode, and each quantized .tflite is compared in LiteRT with the float32 .tflite of the same run:

* on the pretrained zoo's own seeded input (uniform over the input's range: noise, on which a text
  detector's probability map is about 1e-6 everywhere, so the SQNR there says little);
* on rendered text images: seeded random words in DejaVu Sans (Debian's fonts-dejavu-core; Pillow's
  own scalable default font if it is absent) at random sizes, grey levels and positions on light
  backgrounds, normalised as RapidOCR feeds the detector ((pixel / 255 - 0.5) / 0.5).

Each mode also runs calibrated on other rendered text images (`--calibration`), to tell what the
activation type loses from what data-free ranges lose. Reported per variant: SQNR vs float over all
images (dB), the agreement of the text masks the DB post-processing thresholds at 0.3 (IoU against
float's), the file size and the convert time. Slow (minutes per conversion); run by hand, never in CI:

    python bench/pretrained_a16w8.py                  # writes bench/results/pretrained_a16w8.{md,json}
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.pretrained_zoo import CACHE, RESULTS, ZOO, draw_inputs, edgeport_cli, fetch  # noqa: E402

TEXT_IMAGES = 16
TEXT_SEED = 11
CALIBRATION_IMAGES = 32
CALIBRATION_SEED = 12  # other images than the evaluated ones
# (label, mode, calibrated on rendered text images): data-free as the zoo runs it, and with
# --calibration for what real ranges add.
VARIANTS = (
    ("int8", "int8", False),
    ("a16w8", "a16w8", False),
    ("int8 text-calibrated", "int8", True),
    ("a16w8 text-calibrated", "a16w8", True),
)
MASK_THRESHOLD = 0.3  # DB post-processing's default binarisation threshold (PaddleOCR, RapidOCR)
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
WORDS = "invoice total amount date receipt edge model micro text line number 2026 0.75 kg EUR".split()


def text_images(shape: tuple[int, ...], count: int = TEXT_IMAGES, seed: int = TEXT_SEED) -> list[np.ndarray]:
    """`count` rendered text images as NCHW float32 in [-1, 1] (RapidOCR's detector normalisation)."""
    from PIL import Image, ImageDraw, ImageFont

    _, channels, height, width = shape
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        background = int(rng.integers(190, 256))
        image = Image.new("RGB", (width, height), (background,) * 3)
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(2, 12))
        while y < height - 12:
            size = int(rng.integers(11, 22))
            font = ImageFont.truetype(str(FONT), size) if FONT.exists() else ImageFont.load_default(size=size)
            words = " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))))
            ink = int(rng.integers(0, 90))
            draw.text((int(rng.integers(0, width // 4)), y), words, fill=(ink,) * 3, font=font)
            y += size + int(rng.integers(4, 16))
        pixels = np.asarray(image, np.float32)[..., :channels].transpose(2, 0, 1)[None]
        images.append(((pixels / 255.0 - 0.5) / 0.5).astype(np.float32))
    return images


def run_model(outdir: Path, precision: str, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The first output (in float, source layout) of the `precision` model of a convert output for each
    input (source layout), run by edgeport's LiteRT runner as the manifest describes the model's I/O."""
    from edgeport.manifest import Manifest
    from edgeport.run.evaluate import model_specs
    from edgeport.runtimes.litert import LiteRTRunner

    path, in_specs, out_specs = model_specs(Manifest.read(outdir), precision)
    runner = LiteRTRunner((outdir / path).read_bytes(), in_specs, out_specs)
    return [runner.run({in_specs[0].name: x})[out_specs[0].name] for x in inputs]


def mask_iou(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float | None:
    a = np.concatenate([r.ravel() for r in reference]) > MASK_THRESHOLD
    b = np.concatenate([c.ravel() for c in candidate]) > MASK_THRESHOLD
    union = int(np.sum(a | b))
    return round(float(np.sum(a & b)) / union, 4) if union else None


def measure(name: str, workdir: Path, redo: bool) -> dict:
    from edgeport.quant.fidelity import sqnr_db

    entry = next(e for e in ZOO if e.name == name)
    model_path = fetch(entry)
    noise = [draw_inputs(entry)[0].astype(np.float32)]
    text = text_images(entry.inputs[0].shape)
    row: dict = {"model": name, "input_shape": list(entry.inputs[0].shape), "modes": {}}
    workdir.mkdir(parents=True, exist_ok=True)
    calibration = workdir / f"{name}_text_calibration.npy"
    images = text_images(entry.inputs[0].shape, CALIBRATION_IMAGES, CALIBRATION_SEED)
    np.save(calibration, np.concatenate(images))
    for label, mode, calibrated in VARIANTS:
        outdir = workdir / f"{name}_{label.replace(' ', '_')}"
        if redo or not (outdir / f"model_{mode}.tflite").exists():
            shutil.rmtree(outdir, ignore_errors=True)
            extra = ("--calibration", str(calibration)) if calibrated else ()
            run = edgeport_cli(entry, model_path, outdir, mode, extra)
            if run["status"] != "ok":
                row["modes"][label] = {"status": run["status"], "note": run.get("note", "")}
                continue
            seconds = round(run["seconds"], 1)
        else:
            seconds = None
        quant_path = outdir / f"model_{mode}.tflite"
        result = {"status": "ok", "seconds": seconds, "bytes": quant_path.stat().st_size}
        for what, inputs in (("text", text), ("noise", noise)):
            ref, got = run_model(outdir, "float32", inputs), run_model(outdir, mode, inputs)
            result[f"sqnr_{what}_db"] = round(float(sqnr_db(ref, got)), 2)
            if what == "text":
                result["mask_iou_text"] = mask_iou(ref, got)
                result["map_max_text"] = round(float(max(r.max() for r in ref)), 4)
        manifest = json.loads((outdir / "edgeport.json").read_text())["sections"]["quantization"]
        result["edgeport_sqnr_db"] = manifest["fidelity"]["outputs"][0]["sqnr_db"]
        result["tflm_vs_reference_steps"] = (manifest.get("tflm_vs_litert") or {}).get("max_diff_steps")
        row["modes"][label] = result
    return row


def write(rows: list[dict]) -> None:
    """The results files: these rows, and the saved rows of models not measured this time."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d")
    saved = RESULTS / "pretrained_a16w8.json"
    measured = {row["model"] for row in rows}
    earlier = json.loads(saved.read_text()) if saved.exists() else []
    rows = [row for row in earlier if row["model"] not in measured] + rows
    saved.write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# 16-bit activations (a16w8) vs int8 on pretrained models int8 loses",
        "",
        f"Generated by `python bench/pretrained_a16w8.py` on {stamp}, {platform.machine()}, shared machine. "
        "`edgeport convert --quantize MODE`, data-free, as the pretrained zoo runs it; each quantized model "
        f"against the float32 model of the same run in LiteRT. Text: {TEXT_IMAGES} rendered text images "
        f"(seed {TEXT_SEED}). Noise: the zoo's own seeded input (a text detector's map is about 1e-6 on "
        "noise, so that column measures nothing a user sees). Mask IoU: the DB text mask at "
        f"{MASK_THRESHOLD} against float's. edgeport SQNR: what the manifest records (held-out samples "
        "of the run's calibration: noise with the input statistics when data-free). "
        f"Text-calibrated: `--calibration` with {CALIBRATION_IMAGES} other rendered text images (seed "
        f"{CALIBRATION_SEED}). TFLM: TFLite Micro vs TFLite's reference kernels, largest difference in "
        "steps.",
        "",
        "| model | mode | SQNR text (dB) | mask IoU text | SQNR noise (dB) | edgeport SQNR (dB) "
        "| TFLM steps | bytes | convert s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        for mode, r in row["modes"].items():
            if r["status"] != "ok":
                lines.append(f"| {row['model']} | {mode} | **{r['status']}**: {r['note']} | | | | | | |")
                continue
            lines.append(
                f"| {row['model']} | {mode} | {r['sqnr_text_db']} | {r['mask_iou_text']} "
                f"| {r['sqnr_noise_db']} | {r['edgeport_sqnr_db']} | {r['tflm_vs_reference_steps']} "
                f"| {r['bytes']} | {r['seconds'] if r['seconds'] is not None else '(reused)'} |"
            )
    (RESULTS / "pretrained_a16w8.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["ppocrv4_det"])
    parser.add_argument("--redo", action="store_true", help="convert again even when a result exists")
    args = parser.parse_args()
    rows = [measure(name, CACHE / "a16w8", args.redo) for name in args.models]
    write(rows)
    print((RESULTS / "pretrained_a16w8.md").read_text())


if __name__ == "__main__":
    main()
