"""Benchmark: TFLite op counts and LiteRT latency without vs with edgeport's BN folding, same run.

Both variants go through the same chain (legacy TorchScript export with the exporter's own conv+BN
fusion, onnxsim, the converter rewrites, onnx2tf, the TFLite converter); the only difference is
`fold_batch_norms` on the ONNX graph. Latency is measured with the LiteRT interpreter on one thread,
the two variants interleaved in rounds so machine load hits both alike; the table reports medians.
Also reported: the largest relative difference between each .tflite's output and the plain one's.

    python bench/fold_bn.py                 # every model, writes bench/results/fold_bn.{md,json}
    python bench/fold_bn.py --models bn_everywhere resnet20 --rounds 5

Run by hand (minutes), never in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

from edgeport.converters.onnx_to_tflite import keras_to_tflite, onnx_to_keras  # noqa: E402
from edgeport.converters.rewrites import prepare_for_onnx2tf  # noqa: E402
from edgeport.quant.bn_fold import fold_batch_norms  # noqa: E402
from edgeport.tflite_file import parse_tflite  # noqa: E402

AFFINE_OPS = ("MUL", "ADD", "SUB")


def _models() -> dict[str, tuple]:
    """name -> (builder, input shapes, image input indices, what)."""
    from tests.quant import models as qm
    from tests.zoo import ZOO, resnet20_shared

    out = {
        "bn_everywhere": (
            qm.bn_everywhere,
            [[1, 3, 32, 32]],
            [0],
            "issue-3 acceptance: BN at input/add/concat/conv",
        ),
        "post_activation_bn": (
            qm.post_activation_bn,
            [[1, 3, 32, 32]],
            [0],
            "conv -> ReLU -> BN, BN1d before FC",
        ),
        "mobilenet_v2_035": (qm.mobilenet_v2_small, [[1, 3, 32, 32]], [0], "MobileNetV2 layout, width 0.35"),
    }
    for z in ZOO:
        if z.name in ("mha_block", "gru", "lstm", "multi_io"):
            continue  # no batch norms and slow to convert: nothing to measure
        out[f"zoo/{z.name}"] = (z.build, z.input_shapes, z.image_inputs, z.what)
    try:
        z = resnet20_shared(ROOT.parent / "shared" / "models")
        out["resnet20"] = (z.build, z.input_shapes, z.image_inputs, z.what)
    except Exception as exc:  # ../shared absent
        print(f"resnet20 skipped: {exc}")
    return out


def export(module: torch.nn.Module, shapes: list[list[int]], fold_constants: bool) -> onnx.ModelProto:
    gen = torch.Generator().manual_seed(0)
    args = tuple(torch.randn(*s, generator=gen) for s in shapes)
    names = [f"input_{i}" for i in range(len(shapes))]
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            buf,
            dynamo=False,
            opset_version=17,
            input_names=names,
            do_constant_folding=fold_constants,
        )
    return onnx.load_from_string(buf.getvalue())


def prepare(model: onnx.ModelProto, info: dict) -> onnx.ModelProto:
    import onnxsim

    try:
        model, _ = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim 0.4.36 fails on some unfused-BN exports: go on without it
        info["onnxsim"] = f"failed ({type(exc).__name__}), skipped"
    return prepare_for_onnx2tf(model).model


def fold(model: onnx.ModelProto) -> tuple[onnx.ModelProto, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fold_batch_norms(model)


def to_tflite(model: onnx.ModelProto, image_inputs: list[str], workdir: Path) -> bytes:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "model.onnx"
    onnx.save(model, str(path))
    keras = onnx_to_keras(path, workdir, image_inputs)
    return keras_to_tflite(keras.model)


class Runner:
    def __init__(self, data: bytes) -> None:
        from edgeport.runtimes import litert

        self.interp = litert.interpreter(data, delegates=True)  # with XNNPACK, as an app runs it
        self.interp.allocate_tensors()
        rng = np.random.default_rng(0)
        self.inputs = [
            (d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
            for d in self.interp.get_input_details()
        ]

    def run(self) -> list[np.ndarray]:
        for index, value in self.inputs:
            self.interp.set_tensor(index, value)
        self.interp.invoke()
        return [self.interp.get_tensor(d["index"]).copy() for d in self.interp.get_output_details()]

    def time_ms(self, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            self.interp.invoke()
        return (time.perf_counter() - start) * 1000 / n


# variant -> (export with the exporter's conv+BN fusion?, where fold_batch_norms runs)
VARIANTS = {
    "plain": (True, None),  # `edgeport convert --no-fold-bn`
    "folded": (True, "after_prepare"),  # `edgeport convert`
    "kept_plain": (False, None),  # BNs exported as nodes, left to onnxsim / onnx2tf / TFLite converter
    "kept_folded": (False, "before_prepare"),  # BNs exported as nodes, folded by this pass first
}


def bench_model(name: str, spec: tuple, rounds: int, per_round: int) -> dict:
    build, shapes, image_idx, what = spec
    module = build()
    row: dict = {"model": name, "what": what, "variants": {}}
    runners: dict[str, Runner] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant, (fold_constants, where) in VARIANTS.items():
            model = export(module, shapes, fold_constants)
            image_inputs = [model.graph.input[i].name for i in image_idx]
            info: dict = {"bn_nodes": sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")}
            if where == "before_prepare":
                model, report = fold(model)
            model = prepare(model, info)
            if where == "after_prepare":
                info["bn_nodes"] = sum(1 for n in model.graph.node if n.op_type == "BatchNormalization")
                model, report = fold(model)
            if where is not None:
                info.update(
                    found=len(report.found),
                    folded=len(report.folded),
                    left=[f"{x['name']}: {x['now']} ({x['reason']})" for x in report.left],
                )
            data = to_tflite(model, image_inputs, Path(tmp) / variant)
            info["ops"] = parse_tflite(data).op_counts
            runners[variant] = Runner(data)
            row["variants"][variant] = info
    base = runners["plain"]
    reference = base.run()
    for variant, r in runners.items():
        r.inputs = base.inputs  # same input values for every variant
        err = 0.0
        for a, b in zip(reference, r.run(), strict=True):
            err = max(err, float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(a))), 1e-12)))
        row["variants"][variant]["max_rel_diff_vs_plain"] = err
        r.time_ms(max(3, per_round // 5))  # warm-up
    times: dict[str, list[float]] = {v: [] for v in runners}
    for _ in range(rounds):
        for variant, r in runners.items():
            times[variant].append(r.time_ms(per_round))
    for variant in runners:
        row["variants"][variant]["latency_ms"] = statistics.median(times[variant])
    return row


def _affine(ops: dict[str, int]) -> str:
    return " ".join(f"{k[0]}{ops.get(k, 0)}" for k in AFFINE_OPS)


def write_table(rows: list[dict], path: Path, args: argparse.Namespace) -> None:
    names = list(VARIANTS)
    lines = [
        "# BN folding: TFLite ops and LiteRT latency without vs with `fold_batch_norms`",
        "",
        f"Generated by `python bench/fold_bn.py` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs, Python {platform.python_version()}, "
        f"torch {torch.__version__}. LiteRT interpreter, 1 thread, median of {args.rounds} interleaved "
        f"rounds of {args.per_round} invocations. Every variant goes through onnxsim, the converter "
        "rewrites, onnx2tf and the builtin-only TFLite converter.",
        "",
        "- **plain**: legacy export with the exporter's conv+BN fusion, no pass"
        " (`edgeport convert --no-fold-bn`)",
        "- **folded**: the same, then `fold_batch_norms` (`edgeport convert`)",
        "- **kept_plain**: BNs exported as nodes (constant folding off), left to onnxsim/onnx2tf/TFLite",
        "- **kept_folded**: BNs exported as nodes, `fold_batch_norms` first",
        "",
        "M/A/S = MUL/ADD/SUB ops in the .tflite (residual adds included); BN = BatchNormalization nodes "
        "reaching the pass (or the converter, for the *_plain variants); diff = max relative difference "
        "of the output vs **plain** on the same random input.",
        "",
        "| model | variant | BN | folded | left | ops | M A S | latency (ms) | vs plain | diff |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | | | | |")
            continue
        base = r["variants"]["plain"]["latency_ms"]
        for v in names:
            d = r["variants"][v]
            lines.append(
                f"| {r['model'] if v == 'plain' else ''} | {v} | {d['bn_nodes']} | {d.get('folded', '')} | "
                f"{len(d['left']) if 'left' in d else ''} | {sum(d['ops'].values())} | {_affine(d['ops'])} | "
                f"{d['latency_ms']:.3f} | {base / d['latency_ms']:.2f}x | {d['max_rel_diff_vs_plain']:.1e} |"
            )
    lines += ["", "Notes:", ""]
    for r in rows:
        for v in names:
            if "onnxsim" in r.get("variants", {}).get(v, {}):
                lines.append(f"- {r['model']} ({v}): onnxsim {r['variants'][v]['onnxsim']}")
    lines += ["", "BNs left (each as one op):", ""]
    for r in rows:
        for v in names:
            for item in r.get("variants", {}).get(v, {}).get("left", []):
                lines.append(f"- {r['model']} ({v}): {item}")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="subset of model names")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fold_bn.md")
    args = parser.parse_args()
    specs = _models()
    names = args.models or list(specs)
    rows = []
    for name in names:
        t0 = time.time()
        try:
            row = bench_model(name, specs[name], args.rounds, args.per_round)
        except Exception as exc:  # one model failing to convert must not lose the others' numbers
            row = {
                "model": name,
                "error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:120]}",
            }
        rows.append(row)
        print(f"{name}: {time.time() - t0:.0f}s {json.dumps(row)[:400]}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_table(rows, args.out, args)
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
