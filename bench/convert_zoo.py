"""Benchmark: the whole model zoo + the pretrained ResNet-20 through plain onnx2tf and through edgeport.

* **plain onnx2tf**: `torch.onnx.export` (legacy exporter, opset 17) then `onnx2tf.convert` with its
  defaults (it runs onnxsim itself and writes its own float32 .tflite, Flex ops allowed), offline.
* **edgeport**: `edgeport.pipeline.convert_model` (export, onnxsim, BN folding, the converter rewrites,
  onnx2tf, builtin-only TFLite conversion, verification), float only.

The zoo is every family file in tests/zoo (tests/zoo/__init__.py gathers them). For each model and
converter: a status, max relative error vs PyTorch (max|a-b| / max|ref| over the outputs, on one random
input drawn here and fed to both .tflite files), op count, TRANSPOSE count, .tflite bytes and wall-clock
conversion seconds (export included).

* plain onnx2tf is **ok** when it wrote a .tflite with builtin ops only, its error is below 1e-4 and it
  kept the I/O contract (image tensors may come out channels-last, every other tensor keeps PyTorch's
  shape: a [batch, time, features] sequence read back as [batch, features, time] is a wrong model for
  anyone who feeds it the data the PyTorch model takes); **wrong** when it wrote a model that breaks
  one of those; **error** when export or conversion failed.
* edgeport is **ok** when it converted and the error recomputed here is below 1e-4; **error** when it
  refused with an EdgeportError (its one line is recorded); **internal** for any other exception (a
  bug: the exception is recorded for the lead to route).

    python bench/convert_zoo.py                         # all; writes bench/results/convert_zoo.{md,json}
    python bench/convert_zoo.py --models gru resample/up_bicubic --no-write
    python bench/convert_zoo.py --families resample --resume   # skip models already in the .json
    python bench/convert_zoo.py --int8 --fast          # data-free int8 column -> convert_zoo_int8.{md,json}

* **edgeport int8** (`--int8`, its own results file): `edgeport convert --quantize int8`, data-free, on
  each model whose float conversion verified in the saved convert_zoo.json: *ok* (converted, the
  int8 model checked in TFLite Micro; SQNR vs float from the manifest), *refused* (one EdgeportError
  line, and whether it came before calibration), *internal* (any other exception: a bug).

Results are saved after every model (a crash loses one row, --resume continues). Run by hand (about an
hour on 2 shared cores), never in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from edgeport.tflite_file import read_tflite  # noqa: E402

TOLERANCE = 1e-4
SEED = 7
RESULTS = ROOT / "bench" / "results"
MODEL_TIMEOUT_S = 600  # per converter and model; a hang is recorded as an error and the run goes on


def zoo_entries() -> list:
    """Every gathered zoo model (tests/zoo) plus the pretrained ResNet-20 when ../shared has it."""
    from tests.zoo import ENTRIES, ZooEntry
    from tests.zoo.models import resnet20_shared

    entries = list(ENTRIES)
    shared = ROOT.parent / "shared" / "models" / "resnet_cifar.py"
    if shared.exists():
        entries.append(ZooEntry("pretrained", shared, resnet20_shared(shared.parent)))
    return entries


def reference(model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    inputs = model.example_inputs(SEED)
    with torch.no_grad():
        out = model.build()(*inputs)
    out = out if isinstance(out, tuple) else (out,)
    return [x.numpy() for x in inputs], [y.numpy() for y in out]


def rel_error(got: np.ndarray, ref: np.ndarray, floor: float = 0.0) -> float:
    """max|got - ref| / max|ref|; `floor`: the least scale (edgeport.converters.verify.scale_floors)."""
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), floor, 1e-12))


def op_summary(op_counts: dict[str, int]) -> dict:
    return {
        "ops": sum(op_counts.values()),
        "transposes": op_counts.get("TRANSPOSE", 0),
        "op_counts": dict(sorted(op_counts.items())),
    }


def first_line(exc: BaseException, limit: int = 240) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:limit]


def run_tflite(path: Path, inputs: list[np.ndarray], names_in: list[str]) -> tuple[dict, dict]:
    """Run with inputs matched by name; returns (outputs by tensor name, input shapes by name)."""
    from edgeport.runtimes import litert

    interpreter = litert.interpreter(path.read_bytes(), threads=None)
    interpreter.allocate_tensors()
    shapes = {}
    for detail in interpreter.get_input_details():
        # onnx2tf names the tflite input serving_default_<onnx name>:0.
        (i,) = [i for i, n in enumerate(names_in) if detail["name"] == f"serving_default_{n}:0"]
        x = inputs[i]
        shape = tuple(detail["shape"])
        shapes[names_in[i]] = shape
        if shape != x.shape and shape == np.moveaxis(x, 1, -1).shape:
            x = np.moveaxis(x, 1, -1)
        interpreter.set_tensor(detail["index"], np.ascontiguousarray(x))
    interpreter.invoke()
    outs = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    return outs, shapes


def plain_onnx2tf(model, workdir: Path) -> dict:
    """Export + onnx2tf defaults; onnx2tf writes its own float32 .tflite."""
    import onnx2tf

    from edgeport.converters.onnx_to_tflite import offline_onnx2tf

    inputs, refs = reference(model)
    names_in = [f"input_{i}" for i in range(len(inputs))]
    names_out = [f"output_{i}" for i in range(len(refs))]
    started = time.perf_counter()
    onnx_path = workdir / "model.onnx"
    try:
        torch.onnx.export(
            model.build(),
            tuple(torch.from_numpy(x) for x in inputs),
            str(onnx_path),
            dynamo=False,
            opset_version=17,
            input_names=names_in,
            output_names=names_out,
        )
    except Exception as exc:
        return {"status": "error", "note": f"export failed: {first_line(exc)}"}
    cwd = os.getcwd()
    sink = io.StringIO()
    try:
        os.chdir(workdir)
        with offline_onnx2tf(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path), output_folder_path=str(workdir / "out"), non_verbose=True
            )
    except (Exception, SystemExit) as exc:
        return {"status": "error", "note": f"onnx2tf failed: {first_line(exc)}"}
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - started
    path = workdir / "out" / "model_float32.tflite"
    if not path.exists():
        return {"status": "error", "note": "no .tflite written", "seconds": seconds}
    tfl = read_tflite(path)
    row = {**op_summary(tfl.op_counts), "bytes": path.stat().st_size, "seconds": seconds}
    notes = []
    flex = sorted(op for op in tfl.op_counts if op.startswith("CUSTOM"))
    if flex:
        notes.append(f"Flex ops: {', '.join(flex)}")
    try:
        outs, in_shapes = run_tflite(path, inputs, names_in)
    except Exception as exc:
        return {
            **row,
            "status": "wrong",
            "note": "; ".join([*notes, f"LiteRT cannot run it: {first_line(exc)}"]),
        }
    for i, (name, x) in enumerate(zip(names_in, inputs, strict=True)):
        if i not in model.image_inputs and in_shapes[name] != x.shape:
            notes.append(f"input {list(x.shape)} became {list(in_shapes[name])}")
    errors = []
    # onnx2tf hands back image-model outputs of rank >= 3 channels-last (even when the shape alone
    # cannot tell, e.g. [1, 4, 4, 4]); everything else should keep PyTorch's shape.
    for got, ref in zip(outs.values(), sorted_refs(outs, refs), strict=True):
        last = np.moveaxis(got, -1, 1) if got.ndim >= 3 else got
        if model.image_inputs and ref.ndim >= 3 and last.shape == ref.shape:
            errors.append(rel_error(last, ref))
        elif got.shape == ref.shape:
            errors.append(rel_error(got, ref))
        elif last.shape == ref.shape:
            errors.append(rel_error(last, ref))
            notes.append(f"output {list(ref.shape)} became {list(got.shape)}")
        else:
            errors.append(float("inf"))
            notes.append(f"output {list(ref.shape)} came out {list(got.shape)}")
    err = max(errors)
    if not err < TOLERANCE:
        notes.append("wrong result")
    return {**row, "status": "wrong" if notes else "ok", "max_rel_error": err, "note": "; ".join(notes)}


def sorted_refs(outs: dict, refs: list[np.ndarray]) -> list[np.ndarray]:
    """onnx2tf names outputs PartitionedCall:<k> with k the ONNX output index."""
    order = [int(name.rsplit(":", 1)[1]) if ":" in name else i for i, name in enumerate(outs)]
    return [refs[k] for k in order]


def edgeport_convert(entry, workdir: Path) -> dict:
    from edgeport.errors import EdgeportError
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.runtimes import litert

    model = entry.model
    inputs, refs = reference(model)
    started = time.perf_counter()
    try:
        result = convert_model(
            ConvertOptions(source=entry.source, outdir=workdir / "out", input_shapes=model.input_shapes)
        )
    except EdgeportError as exc:
        return {"status": "error", "note": exc.one_line()}
    except Exception as exc:  # a bug, not a refusal: recorded as it is, for the lead to route
        return {"status": "internal", "note": first_line(exc, 400)}
    seconds = time.perf_counter() - started
    manifest = result.manifest
    art = manifest.artifact("model_float32.tflite")
    onnx_art = next(a for a in manifest.artifacts if a.kind == "onnx")
    path = workdir / "out" / "model_float32.tflite"
    # Recompute the error here, on this script's input, as for plain onnx2tf.
    interpreter = litert.interpreter(path.read_bytes(), threads=None)
    interpreter.allocate_tensors()
    feeds = {info.name: x for info, x in zip(onnx_art.inputs, inputs, strict=True)}
    index = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    channels_last = ("NHWC", "NWC", "NDHWC")
    for info in art.inputs:
        x = feeds[info.source_name]
        x = np.moveaxis(x, 1, -1) if info.layout in channels_last else x
        interpreter.set_tensor(index[info.name], np.ascontiguousarray(x))
    interpreter.invoke()
    index = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    got = {}
    for info in art.outputs:
        y = interpreter.get_tensor(index[info.name])
        got[info.source_name] = np.moveaxis(y, -1, 1) if info.layout in channels_last else y
    err = max(rel_error(got[info.name], ref) for info, ref in zip(onnx_art.outputs, refs, strict=True))
    rewrites = next((p.report() for p in manifest.passes if p.name == "onnx2tf_rewrites"), {})
    notes = [
        *rewrites.get("applied", []),
        *(f"{k}={v}" for k, v in rewrites.get("onnx2tf_options", {}).items()),
    ]
    return {
        "status": "ok" if err < TOLERANCE else "wrong",
        "max_rel_error": err,
        **op_summary(art.op_counts),
        "bytes": art.size_bytes,
        "seconds": seconds,
        "note": ", ".join(notes),
    }


def quantization_summary(manifest: dict) -> dict:
    """SQNR, calibration method, kept-float ops and TFLite Micro agreement from an edgeport.json."""
    section = manifest.get("sections", {}).get("quantization", {}) or manifest.get("quantization", {}) or {}
    outputs = section.get("fidelity", {}).get("outputs", [])
    sqnrs = [o["sqnr_db"] for o in outputs if o.get("sqnr_db") is not None]
    return {
        "sqnr_db": min(sqnrs) if sqnrs else None,
        "calibration": section.get("calibration", {}).get("method", ""),
        "kept_float": len(section.get("kept_float", [])),
        "tflm_steps": (section.get("tflm_vs_litert") or {}).get("max_diff_steps"),
    }


def edgeport_int8(entry, workdir: Path) -> dict:
    """`edgeport convert --quantize int8` (data-free), in process; seconds include the float conversion."""
    from edgeport.errors import EdgeportError
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import QuantOptions

    model = entry.model
    started = time.perf_counter()
    try:
        result = convert_model(
            ConvertOptions(
                source=entry.source,
                outdir=workdir / "out",
                input_shapes=model.input_shapes,
                quantize=QuantOptions(mode="int8"),
            )
        )
    except EdgeportError as exc:
        note = exc.one_line()
        return {
            "status": "refused",
            "before_calibration": "before calibration" in note,
            "note": note,
            "seconds": time.perf_counter() - started,
        }
    except Exception as exc:  # a bug, not a refusal
        return {"status": "internal", "note": first_line(exc, 400), "seconds": time.perf_counter() - started}
    seconds = time.perf_counter() - started
    art = result.manifest.artifact("model_int8.tflite")
    saved = json.loads((workdir / "out" / "edgeport.json").read_text())
    return {
        "status": "ok",
        **quantization_summary(saved),
        **op_summary(art.op_counts),
        "bytes": art.size_bytes,
        "seconds": seconds,
    }


class _Timeout(Exception):
    pass


def _with_timeout(fn, *args) -> dict:
    def expire(*_):
        raise _Timeout(f"no result in {MODEL_TIMEOUT_S} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(MODEL_TIMEOUT_S)
    try:
        return fn(*args)
    except _Timeout as exc:
        return {"status": "error", "note": str(exc)}
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


STATUS_MD = {"ok": "ok", "wrong": "**wrong**", "error": "**error**", "internal": "**internal error**"}


def fmt_row(name: str, family: str, conv: str, r: dict) -> str:
    def num(key: str, spec: str) -> str:
        return format(r[key], spec) if key in r else ""

    note = r.get("note", "").replace("|", "/")
    return (
        f"| {name} | {family} | {conv} | {STATUS_MD[r['status']]} | {num('max_rel_error', '.1e')} | "
        f"{num('ops', 'd')} | {num('transposes', 'd')} | {num('bytes', ',d')} | {num('seconds', '.1f')} | "
        f"{note} |"
    )


def summarize(results: dict) -> dict:
    """Counts per converter and status, overall and per family."""
    out: dict = {"models": len(results), "by_family": {}}
    for conv in ("edgeport", "plain_onnx2tf"):
        out[conv] = dict(Counter(r[conv]["status"] for r in results.values()))
    for r in results.values():
        fam = out["by_family"].setdefault(r["family"], {"models": 0, "edgeport": 0, "plain_onnx2tf": 0})
        fam["models"] += 1
        for conv in ("edgeport", "plain_onnx2tf"):
            fam[conv] += r[conv]["status"] == "ok"
    return out


def write(results: dict, stamp: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    saved = {"run": stamp, "summary": summary, "models": results}
    (RESULTS / "convert_zoo.json").write_text(json.dumps(saved, indent=1) + "\n")
    n = summary["models"]
    ep, plain = summary["edgeport"], summary["plain_onnx2tf"]
    both = [m for m, r in results.items() if r["plain_onnx2tf"]["status"] == r["edgeport"]["status"] == "ok"]
    fewer = [m for m in both if results[m]["edgeport"]["ops"] <= results[m]["plain_onnx2tf"]["ops"]]
    t_free = [
        m for m in both if results[m]["edgeport"]["transposes"] <= results[m]["plain_onnx2tf"]["transposes"]
    ]
    lines = [
        "# Converting the model zoo: plain onnx2tf vs edgeport",
        "",
        f"Generated by `python bench/convert_zoo.py` on {stamp}. Models: every family file in "
        "`tests/zoo/` (small, seeded, random init; `edgeport convert tests/zoo/<family>.py:<model>` builds "
        "one) and the pretrained CIFAR ResNet-20 from `../shared`. Error = max|tflite - pytorch| / "
        "max|pytorch| on one random input, float32 .tflite; seconds = export + conversion wall clock "
        "(edgeport's include its verification).",
        "",
        "- **plain onnx2tf**: legacy export (opset 17) + `onnx2tf.convert` defaults, offline. *ok* = builtin "
        "ops only, error < 1e-4 and non-image inputs/outputs keep their shape; *wrong* = a .tflite that "
        "breaks one of those; *error* = no .tflite.",
        "- **edgeport**: `edgeport convert` (float). *ok* = converted and verified (error recomputed here); "
        "*error* = refused with one line naming the problem (quoted in *note*); *internal error* = a bug.",
        "",
        f"**{n} models.** edgeport: **{ep.get('ok', 0)} ok**, {ep.get('error', 0)} refused with a clear "
        f"error, {ep.get('internal', 0)} internal errors, {ep.get('wrong', 0)} wrong. "
        f"Plain onnx2tf: **{plain.get('ok', 0)} ok**, {plain.get('wrong', 0)} wrong (a .tflite that "
        f"gives wrong results, Flex ops or a changed I/O shape), {plain.get('error', 0)} errors. Where both "
        f"succeed ({len(both)}), edgeport's op count is <= plain's for {len(fewer)} and its TRANSPOSE count "
        f"<= plain's for {len(t_free)}.",
        "",
        "| family | models | edgeport ok | plain onnx2tf ok |",
        "|---|---|---|---|",
        *(
            f"| {fam} | {c['models']} | {c['edgeport']} | {c['plain_onnx2tf']} |"
            for fam, c in summary["by_family"].items()
        ),
        "",
        "| model | family | converter | status | max rel. error | ops | TRANSPOSE | bytes | seconds | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results.values():
        lines.append(fmt_row(r["model"], r["family"], "plain onnx2tf", r["plain_onnx2tf"]))
        lines.append(fmt_row("", "", "edgeport", r["edgeport"]))
    lines += [
        "",
        "Notes:",
        "- plain onnx2tf's GRU/LSTM are a TFLite WHILE loop (the TFLite Micro interpreter hangs on it), "
        "often over an input whose time and feature axes it swapped; edgeport unrolls them "
        "(`rnn_unroll`), which every runtime runs.",
        "- edgeport's seconds include PyTorch export, BN folding, both .tflite precisions and the "
        "verification; plain's are export + onnx2tf only.",
    ]
    (RESULTS / "convert_zoo.md").write_text("\n".join(lines) + "\n")


INT8_MD = {"ok": "ok", "refused": "**refused**", "internal": "**internal error**", "error": "**error**"}


def fmt_int8_row(r: dict) -> str:
    q = r["int8"]
    sqnr = q.get("sqnr_db")
    when = "" if q["status"] != "refused" else ("before calibration: " if q.get("before_calibration") else "")
    note = (when + q.get("note", "")).replace("|", "/")
    if q["status"] == "ok":
        note = f"calibration {q.get('calibration', '')}" + (
            f", {q['kept_float']} op(s) kept float" if q.get("kept_float") else ""
        )
    return (
        f"| {r['model']} | {r['family']} | {INT8_MD[q['status']]} | "
        f"{'' if sqnr is None else format(sqnr, '.1f')} | {q.get('ops', '')} | "
        f"{format(q['seconds'], '.0f') if 'seconds' in q else ''} | {note} |"
    )


def write_int8(results: dict, stamp: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Zoo order, whatever order the rows were run in (--resume reruns append).
    order = {entry.id: i for i, entry in enumerate(zoo_entries())}
    results = dict(sorted(results.items(), key=lambda item: order.get(item[0], len(order))))
    counts = dict(Counter(r["int8"]["status"] for r in results.values()))
    before = sum(1 for r in results.values() if r["int8"].get("before_calibration"))
    saved = {"run": stamp, "summary": {"models": len(results), **counts}, "models": results}
    (RESULTS / "convert_zoo_int8.json").write_text(json.dumps(saved, indent=1) + "\n")
    oks = [r["int8"] for r in results.values() if r["int8"]["status"] == "ok"]
    seconds = sorted(q["seconds"] for q in oks)
    lines = [
        "# Data-free int8 on the model zoo",
        "",
        f"Generated by `python bench/convert_zoo.py --int8` on {stamp}. Each model whose float conversion "
        "verified in convert_zoo.json is converted again with `--quantize int8` (no calibration data: "
        "edgeport synthesizes it, BN-statistics distillation or gaussian). *ok* = written and its int8 "
        "model run in TFLite Micro (bit-exact against TFLite's reference kernels, or compared with LiteRT's "
        "optimized kernels where the reference kernels lack an op, which its manifest notes); SQNR = the "
        "worst output's signal-to-quantization-noise ratio against the float32 .tflite, from the manifest; "
        "*refused* = one line naming the problem (quoted); seconds = the whole conversion, float included.",
        "",
        f"**{len(results)} models.** int8 **{counts.get('ok', 0)} ok**, {counts.get('refused', 0)} refused "
        f"({before} of them before calibration), {counts.get('internal', 0)} internal errors, "
        f"{counts.get('error', 0)} timeouts."
        + (
            f" Seconds per ok model: median {seconds[len(seconds) // 2]:.0f}, max {seconds[-1]:.0f}."
            if seconds
            else ""
        ),
        "",
        "| model | family | int8 | SQNR dB | ops | s | note |",
        "|---|---|---|---|---|---|---|",
        *(fmt_int8_row(r) for r in results.values()),
    ]
    (RESULTS / "convert_zoo_int8.md").write_text("\n".join(lines) + "\n")


def run_int8(entries: list, resume: bool, write_results: bool, stamp: str) -> None:
    """The int8 column, for the entries whose float conversion verified in the saved float results."""
    saved_path = RESULTS / "convert_zoo_int8.json"
    results: dict[str, dict] = (
        json.loads(saved_path.read_text())["models"] if resume and saved_path.exists() else {}
    )
    float_rows = json.loads((RESULTS / "convert_zoo.json").read_text())["models"]
    for entry in entries:
        if entry.id in results:
            continue
        if float_rows.get(entry.id, {}).get("edgeport", {}).get("status") != "ok":
            print(f"{entry.id}: skipped, float not verified in convert_zoo.json", flush=True)
            continue
        row = {"model": entry.model.name, "family": entry.family}
        with tempfile.TemporaryDirectory(prefix=f"zoo8_{entry.model.name}_") as tmp:
            row["int8"] = _with_timeout(edgeport_int8, entry, Path(tmp))
        print(fmt_int8_row(row), flush=True)
        results[entry.id] = row
        if write_results:
            write_int8(results, stamp)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help="zoo names or family/name ids (default: all)")
    parser.add_argument("--families", nargs="*", help="only these families")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--resume", action="store_true", help="keep the saved rows, convert the rest")
    parser.add_argument("--from-json", action="store_true", help="rewrite the .md from the saved .json")
    parser.add_argument("--fast", action="store_true", help="only the models CI converts (ZooModel.fast)")
    parser.add_argument(
        "--int8", action="store_true", help="data-free int8 column only -> convert_zoo_int8.{md,json}"
    )
    args = parser.parse_args()
    saved_path = RESULTS / ("convert_zoo_int8.json" if args.int8 else "convert_zoo.json")
    if args.from_json:
        saved = json.loads(saved_path.read_text())
        (write_int8 if args.int8 else write)(saved["models"], saved["run"])
        return
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    stamp = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    entries = [
        entry
        for entry in zoo_entries()
        if (not args.models or {entry.id, entry.model.name} & set(args.models))
        and (not args.families or entry.family in args.families)
        and (not args.fast or entry.model.fast)
    ]
    if args.int8:
        run_int8(entries, args.resume, not args.no_write, stamp)
        return
    results: dict[str, dict] = {}
    if args.resume and saved_path.exists():
        results = json.loads(saved_path.read_text())["models"]
    for entry in entries:
        if entry.id in results:
            continue
        row = {"model": entry.model.name, "family": entry.family, "what": entry.model.what}
        for conv, fn, arg in (
            ("plain_onnx2tf", plain_onnx2tf, entry.model),
            ("edgeport", edgeport_convert, entry),
        ):
            with tempfile.TemporaryDirectory(prefix=f"zoo_{entry.model.name}_") as tmp:
                row[conv] = _with_timeout(fn, arg, Path(tmp))
            print(fmt_row(entry.model.name, entry.family, conv, row[conv]), flush=True)
        results[entry.id] = row
        if not args.no_write:
            write(results, stamp)


if __name__ == "__main__":
    main()
