"""Pruning trade-off on the pretrained CIFAR ResNets and tests/zoo's MobileNetV2 (hand-run, never in CI).

For each model, FLOPs cut and criterion, without recovery, with data-free recovery and (one row per
model and cut) with data-aware recovery: top-1 on CIFAR-10 test images 500-9999 in PyTorch (float)
with the paired difference to the unpruned model (two standard errors, bench/quant_accuracy.py's
`paired`), MACs and parameters; for each pruned architecture, through the one code path users take
(`edgeport convert --quantize int8` of the pruned model saved as TorchScript, `edgeport package
--target cortex-m`, `edgeport bench --on host --threads 1` in a fresh process), the float LiteRT
latency beside the unpruned model's in the same interleaved run, the int8 file size and the TFLite
Micro arena. MobileNetV2 (random weights, no data to score on) reports fidelity only: SQNR and
top-1 agreement with the unpruned model on held-out synthetic inputs.

Data-free rows never see a CIFAR image before scoring. The data-aware rows recover on images 0-499
(--finetune-data), which are not scored.

    python bench/prune_tradeoff.py [--models resnet20,resnet56] [--ratios 0.4,0.2,0.6]
        [--criteria l1,l2,bn-scale,red,ig] [--recover l1,l2,red,bn-scale,ig]
        [--kinds distill,none,ls,data-aware]
        [--budget SECONDS] [--images 9500]

Rows run in order of priority (the 40 % cut of every model first, recovered rows before the rest)
and the results are rewritten after every row, so a run cut short leaves an honest partial table:
bench/results/prune_tradeoff.{json,md,png}. Check `uptime` first: the recovery budget buys the same
steps on any machine, but a saturated one takes longer to run them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.latency import tflm_root  # noqa: E402
from bench.quant_accuracy import CAL, DATA, EVAL, model_input, paired, resnet20, resnet56  # noqa: E402
from edgeport.errors import EdgeportError  # noqa: E402
from edgeport.options import validate_options  # noqa: E402
from edgeport.pipeline.torch_passes import prune_exporter  # noqa: E402
from edgeport.quant.prune import PruneOptions, prune_module  # noqa: E402
from edgeport.quant.prune.options import DEFAULT_BUDGET, DEFAULT_MIN_WIDTH, DEFAULT_ROUND, WEIGHINGS  # noqa: E402
from edgeport.quant.prune.prune import IMAGE_PRIOR, pool_of, synthetic_inputs  # noqa: E402
from edgeport.tensors import TensorSpec  # noqa: E402

RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache" / "prune_tradeoff"
BUILDERS = {"resnet20": resnet20, "resnet56": resnet56}
SHAPE = [1, 3, 32, 32]
GOAL_RATIO = 0.4
LATENCY_RUNS = 200
BOARD = "nucleo-h743zi2"  # any board: --no-fit-check, only the measured arena is read
# Timings beside the host XNNPACK one, each of one variant beside the unpruned model's:
# {key: (variant, `edgeport bench` arguments)}. "builtin": LiteRT's own float kernels (no XNNPACK);
# "int8": the int8 model on the host's XNNPACK, one thread;
# "m7": the int8 firmware's instructions per inference under QEMU (CMSIS-NN kernels, deterministic: one
# run; the Cortex-M7 machine because its flash holds the unpruned ResNet-56), needs a TFLite Micro tree.
HOST = ["--on", "host", "--threads", "1", "--runs", str(LATENCY_RUNS)]
EXTRA_TIMINGS = {
    "builtin": ("float32", [*HOST, "--no-xnnpack"]),
    "int8": ("int8", HOST),
    "m7": ("int8", ["--on", "qemu:mps2-an500", "--runs", "1", "--warmup", "1"]),
}
TOOL_TIMEOUT = 3600
# A host timing waits (up to QUIET_WAIT_S) for the 1-minute load average to fall under QUIET_LOAD on
# this 2-core machine, and the table shows the load of a timing taken above it: at load 3.7 the session-13
# latency row's XNNPACK speed-up read 1.17x against 1.51x quiet, on the same files.
QUIET_LOAD = 1.5
QUIET_WAIT_S = 900
OLD_ROWS = "session 6 or before"  # the commit column of rows run before commits were recorded
KINDS = ("distill", "none", "ls", "data-aware")  # Job.recovery (ls: least squares, no distillation)


@dataclass(frozen=True)
class Job:
    model: str
    ratio: float
    criterion: str
    recovery: str  # one of KINDS

    @property
    def label(self) -> str:
        return {
            "none": "none",
            "ls": "data-free LS only",
            "distill": "data-free LS + distill",
            "data-aware": "data-aware LS + distill",
        }[self.recovery]


def plan(models: list[str], ratios: list[float], criteria: list[str], recover: list[str]) -> list[Job]:
    """Every row, most wanted first: the 40 % cut before the others; at each cut the first of `recover`
    (the default criterion) recovered, then l1 recovered (the baseline, when it is not the first), no
    recovery, least squares only (the first and l1), the data-aware row, the other criteria recovered."""
    jobs = []
    for ratio in sorted(ratios, key=lambda r: (r != GOAL_RATIO, r)):
        for model in models:
            best, rest = recover[0], recover[1:]
            jobs.append(Job(model, ratio, best, "distill"))
            jobs += [Job(model, ratio, c, "distill") for c in rest if c == "l1"]
        for model in models:
            jobs += [Job(model, ratio, c, "none") for c in criteria]
            jobs += [Job(model, ratio, c, "ls") for c in recover if c in (recover[0], "l1")]
            jobs.append(Job(model, ratio, recover[0], "data-aware"))
            jobs += [Job(model, ratio, c, "distill") for c in recover[1:] if c != "l1"]
    return list(dict.fromkeys(jobs))


def predict(module: torch.nn.Module, x: np.ndarray, batch: int = 250) -> np.ndarray:
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(module(torch.from_numpy(x[i : i + batch])).argmax(1).numpy())
    return np.concatenate(out)


def _tool(args: list[str], log: Path) -> None:
    """One edgeport command in a fresh process; its output kept beside the results."""
    with log.open("a") as out:
        out.write(f"$ edgeport {' '.join(args)}\n")
        out.flush()
        subprocess.run(
            [sys.executable, "-m", "edgeport", *args],
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=TOOL_TIMEOUT,
            cwd=ROOT,
        )


def deploy(module: torch.nn.Module, key: str, baseline: Path | None) -> dict:
    """Convert (float + int8), package for Cortex-M, time the float model beside `baseline`'s float
    model on the host (None: this is the baseline), and the EXTRA_TIMINGS beside `baseline`'s. Cached by
    `key` (the architecture)."""
    where = CACHE / key
    done = where / "deploy.json"
    if done.exists():
        result = json.loads(done.read_text())
        return {**result, **extra_timings(Path(result["convert_dir"]), baseline)}
    where.mkdir(parents=True, exist_ok=True)
    log = where / "tools.log"
    source = where / "model.pt"
    torch.jit.trace(module.eval(), torch.zeros(SHAPE)).save(str(source))
    converted, package, timing = where / "convert", where / "package", where / "latency.json"
    for path in (converted, package):
        if path.exists():
            subprocess.run(["rm", "-rf", str(path)], check=True)
    shape = ",".join(map(str, SHAPE))
    _tool(["convert", str(source), "--input-shape", shape, "--quantize", "int8", "-o", str(converted)], log)
    _tool(
        [
            "package",
            str(converted),
            "--target",
            "cortex-m",
            "--board",
            BOARD,
            "--no-fit-check",
            "-o",
            str(package),
        ],
        log,
    )
    medians, load = _bench_pair(converted, baseline, "float32", HOST, timing)
    manifest = json.loads((package / "edgeport.json").read_text())
    result = {
        "float_ms": medians[-1],
        "unpruned_float_ms": medians[0] if baseline is not None else medians[-1],
        "float_load": load,
        "int8_bytes": (converted / "model_int8.tflite").stat().st_size,
        "arena_bytes": _arena(manifest),
        "convert_dir": str(converted),
    }
    done.write_text(json.dumps(result, indent=1))
    return {**result, **extra_timings(converted, baseline)}


def extra_timings(converted: Path, baseline: Path | None) -> dict:
    """Each EXTRA_TIMINGS median of the converted model and of `baseline`'s (None: the model is the
    baseline): {"<key>_ms", "unpruned_<key>_ms"}; "m7" is left out without a TFLite Micro tree. Each
    cached beside the conversion."""
    result = {}
    for key, (variant, arguments) in EXTRA_TIMINGS.items():
        done = converted.parent / f"{key}.json"
        if not done.exists():
            if key == "m7":
                root = tflm_root()
                if root is None:
                    continue
                arguments = [*arguments, "--tflm-root", str(root)]
            try:
                medians, load = _bench_pair(
                    converted, baseline, variant, arguments, done.with_suffix(".bench.json")
                )
            except subprocess.SubprocessError as exc:
                # A runner that fails leaves its columns empty, not the row's deploy (rerun to retry).
                print(f"{key} timing of {converted.parent.name} failed: {exc}", flush=True)
                continue
            done.write_text(
                json.dumps(
                    {f"{key}_ms": medians[-1], f"unpruned_{key}_ms": medians[0], f"{key}_load": load},
                    indent=1,
                )
            )
        result.update(json.loads(done.read_text()))
    return result


def _bench_pair(
    converted: Path, baseline: Path | None, variant: str, arguments: list[str], report: Path
) -> tuple[list[float], float | None]:
    """`edgeport bench` of `baseline`'s variant (when given) and the converted model's, in one run: (the
    medians, the converted model's last; the higher 1-minute load average before and after a host
    timing, None for QEMU's instruction counts, which load does not change)."""
    models = [f"{baseline}:{variant}"] if baseline is not None else []
    models.append(f"{converted}:{variant}")
    host = "host" in arguments
    first = _wait_quiet(converted.parent.name) if host else None
    _tool(["bench", *models, *arguments, "--json", str(report)], converted.parent / "tools.log")
    medians = [r["stats"]["median"] for r in json.loads(report.read_text())["results"]]
    return medians, (round(max(first, psutil.getloadavg()[0]), 2) if first is not None else None)


def _wait_quiet(what: str) -> float:
    """The 1-minute load average once under QUIET_LOAD, or after QUIET_WAIT_S (said, and then recorded
    beside the timing)."""
    deadline = time.monotonic() + QUIET_WAIT_S
    load = psutil.getloadavg()[0]
    if load >= QUIET_LOAD:
        print(f"{what}: waiting for load {load:.1f} to fall under {QUIET_LOAD} before timing", flush=True)
    while load >= QUIET_LOAD and time.monotonic() < deadline:
        time.sleep(15)
        load = psutil.getloadavg()[0]
    return load


def add_timings(out: Path) -> None:
    """Fill in the EXTRA_TIMINGS columns of every recorded row whose conversion is still in the cache, in
    finished parts only (a running part's process rewrites its file after every row)."""
    for part in sorted(out.glob("prune_tradeoff*.json")):
        state = json.loads(part.read_text())
        if not state.get("finished"):
            continue
        baselines = {}
        for name, f in state["floats"].items():
            d = f.get("deploy") or {}
            if Path(d.get("convert_dir", "/nonexistent")).exists():
                d.update(extra_timings(Path(d["convert_dir"]), None))
                baselines[name] = Path(d["convert_dir"])
        for r in state["rows"]:
            d = r.get("deploy") or {}
            converted = Path(d.get("convert_dir", "/nonexistent"))
            base = baselines.get(r["model"]) or CACHE / f"{r['model']}-unpruned" / "convert"
            if converted.exists() and base.exists():
                print(f"{part.name}: {r['model']} {converted.parent.name}", flush=True)
                d.update(extra_timings(converted, base))
        part.write_text(json.dumps(state, indent=1))
    render(out)


def _arena(manifest: dict) -> int:
    """The TFLite Micro arena `edgeport package` measured (smallest that allocates and invokes)."""
    return int(manifest["sections"]["cortex_m"]["arena"]["measured_bytes"])


def architecture(model: str, module: torch.nn.Module) -> str:
    shapes = ",".join(f"{n}:{tuple(p.shape)}" for n, p in module.state_dict().items())
    return f"{model}-{hashlib.sha256(shapes.encode()).hexdigest()[:12]}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,resnet56")
    parser.add_argument("--ratios", default="0.4,0.2,0.6")
    parser.add_argument("--criteria", default="l1,l2,bn-scale,red,ig", help="rows without recovery")
    parser.add_argument(
        "--recover",
        default="l1,l2,red,bn-scale,ig",
        help="recovered rows, every criterion by default (first: the default criterion, the data-aware row)",
    )
    parser.add_argument(
        "--kinds",
        default=",".join(KINDS),
        help="row filter: which recovery rows to run (distill = data-free least squares + distillation, "
        "none, ls = least squares only, data-aware)",
    )
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET)
    parser.add_argument(
        "--target",
        default="flops",
        choices=("flops", "latency"),
        help="what RATIO removes (latency: --prune-target latency, searched with real conversions)",
    )
    parser.add_argument(
        "--weigh",
        default=ROW_OPTIONS["weigh"][0],
        choices=(None, *WEIGHINGS),
        help="--prune-weigh: what allocation steps are weighed in (default: host for a latency target, "
        "else macs)",
    )
    parser.add_argument("--round", type=int, default=ROW_OPTIONS["round"][0], help="--prune-round")
    parser.add_argument(
        "--min-width", type=int, default=ROW_OPTIONS["min_width"][0], help="--prune-min-width"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=ROW_OPTIONS["seed"][0],
        help="the seed of the synthetic inputs, the analysis and recovery",
    )
    parser.add_argument(
        "--no-blocks",
        dest="blocks",
        action="store_false",
        help="--no-prune-blocks: cut channels only (rows before commit 3b72c8b could not remove blocks)",
    )
    parser.add_argument("--images", type=int, default=EVAL.stop - EVAL.start)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-deploy", action="store_true", help="accuracy only: no convert/package/bench")
    parser.add_argument("--no-zoo", action="store_true", help="skip tests/zoo's MobileNetV2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--part",
        default="",
        help="run as one part of several processes (e.g. one per model): the rows go to "
        "prune_tradeoff.PART.json and the table and plot merge every part",
    )
    parser.add_argument(
        "--render", action="store_true", help="only rewrite the table and plot from the parts"
    )
    parser.add_argument(
        "--add-timings",
        action="store_true",
        help="only measure the builtin-kernel, int8 host and Cortex-M7 columns of recorded rows whose "
        "conversion is cached, then render",
    )
    args = parser.parse_args(argv)
    if args.render:
        render(args.out)
        return 0
    if args.add_timings:
        add_timings(args.out)
        return 0
    _check_options(parser, args)
    torch.set_num_threads(args.threads)
    data = np.load(DATA)
    images, labels = data["images"][EVAL][: args.images], data["labels"][EVAL][: args.images]
    specs = [TensorSpec("x", SHAPE)]
    jobs = plan(
        [m for m in args.models.split(",") if m],
        ratios(args.ratios),
        [c for c in args.criteria.split(",") if c],
        args.recover.split(","),
    )
    jobs = [j for j in jobs if j.recovery in args.kinds.split(",")]
    state = {
        "images": f"CIFAR-10 test {EVAL.start}-{EVAL.start + len(images) - 1}",
        "commit": _commit(),
        "budget_seconds": args.budget,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "planned": len(jobs),
        "floats": {},
        "rows": [],
        "zoo": [],
    }
    args.out.mkdir(exist_ok=True, parents=True)
    run_started = time.perf_counter()
    finetune = _finetune_file(data)
    refs: dict[str, dict] = {}
    for job in jobs:
        if job.model not in refs:
            refs[job.model] = _reference(job.model, images, labels, specs, args, state)
            write(args.out, state, run_started, args.part)
        ref = refs[job.model]
        options = PruneOptions(
            ratio=job.ratio,
            criterion=job.criterion,
            recovery="none" if job.recovery == "none" else "distill",
            budget=args.budget,
            finetune_data=finetune if job.recovery == "data-aware" else None,
            max_steps=0 if job.recovery == "ls" else None,
            target=args.target,
            weigh=args.weigh,
            round_to=args.round,
            min_width=args.min_width,
            seed=args.seed,
            blocks=args.blocks,
        )
        started = time.perf_counter()
        exporter = prune_exporter() if args.target == "latency" else None
        result = prune_module(
            ref["module"], specs, {}, options, synthetic=ref["synthetic"], exporter=exporter
        )
        seconds = time.perf_counter() - started
        pred = predict(result.module, ref["x"])
        section = result.section
        row = {
            "model": job.model,
            "ratio": job.ratio,
            "target": args.target,
            "criterion": job.criterion,
            **_non_defaults(args),
            "recovery": job.label,
            "top1": round(100.0 * float(np.mean(pred == labels)), 2),
            "float_top1": ref["top1"],
            **paired(pred, ref["pred"], labels),
            "macs": section.after.macs,
            "macs_before": section.before.macs,
            "params": section.after.params,
            "params_before": section.before.params,
            "reconstructed_layers": section.recovery.reconstructed_layers,
            "pool": int(ref["synthetic"][0][0].shape[0]),
            "commit": state["commit"],
            "budget_seconds": args.budget,
            "recovery_steps": section.recovery.steps,
            "recovery_seconds": section.recovery.seconds,
            "seconds": round(seconds, 1),
            "architecture": architecture(job.model, result.module),
            "widths": {g.module: g.channels_after for g in section.groups},
            "blocks_removed": section.blocks_removed,
        }
        if section.latency is not None:  # the search's trials, as the manifest records them
            row["latency_search"] = section.latency.model_dump()
        if not args.no_deploy:
            row["deploy"] = _deploy_logged(result.module, row["architecture"], ref.get("deploy"))
        state["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "widths"}), flush=True)
        write(args.out, state, run_started, args.part)
    if not args.no_zoo:
        state["zoo"] = zoo_rows(args.recover.split(","), ratios(args.ratios), args.budget)
    state["finished"] = True
    write(args.out, state, run_started, args.part)
    return 0


# PruneOptions' fields as this script's arguments spell them (for its error lines).
BENCH_FLAGS = {
    "ratio": "--ratios",
    "target": "--target",
    "weigh": "--weigh",
    "budget": "--budget",
    "round_to": "--round",
    "min_width": "--min-width",
}


def ratios(text: str) -> list[float]:
    """--ratios as numbers; a ValueError naming the flag when one is not."""
    try:
        return [float(r) for r in text.split(",")]
    except ValueError:
        raise ValueError(f"--ratios {text!r} is not a comma-separated list of numbers") from None


def _check_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Every ratio with the pruning options, as PruneOptions validates them for convert, before the first
    row's minutes of work: a bad one exits with the option's one-line error."""
    try:
        for ratio in ratios(args.ratios):
            validate_options(
                PruneOptions,
                {
                    "ratio": ratio,
                    "target": args.target,
                    "weigh": args.weigh,
                    "budget": args.budget,
                    "round_to": args.round,
                    "min_width": args.min_width,
                },
                spell=lambda field: BENCH_FLAGS[field],
            )
    except (EdgeportError, ValueError) as exc:
        parser.error(str(exc).splitlines()[0])


def _deploy_logged(module: torch.nn.Module, key: str, baseline: dict | None) -> dict:
    try:
        return deploy(module, key, Path(baseline["convert_dir"]) if baseline else None)
    except (subprocess.SubprocessError, OSError, KeyError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {str(exc)[:200]} (see {CACHE / key / 'tools.log'})"}


# The bench's pruning options a row records when they differ from edgeport's default: {argument: (the
# default, how the criterion cell shows it)}. They are part of the row's identity.
ROW_OPTIONS = {
    "weigh": (None, "weighed in {}"),
    "round": (DEFAULT_ROUND, "round {}"),
    "min_width": (DEFAULT_MIN_WIDTH, "min width {}"),
    "seed": (0, "seed {}"),
    "blocks": (True, "prune-blocks {}"),
}


def _non_defaults(args: argparse.Namespace) -> dict:
    """The row's options that differ from edgeport's defaults (shown beside its criterion)."""
    return {k: getattr(args, k) for k, (default, _) in ROW_OPTIONS.items() if getattr(args, k) != default}


def _criterion(row: dict) -> str:
    """The criterion cell: the criterion, then any option that differs from the default."""
    return ", ".join([row["criterion"], *(w.format(row[k]) for k, (_, w) in ROW_OPTIONS.items() if k in row)])


def _reference(name: str, images: np.ndarray, labels: np.ndarray, specs: list, args, state: dict) -> dict:
    module = BUILDERS[name]()
    x = model_input(name, images)
    pred = predict(module, x)
    top1 = round(100.0 * float(np.mean(pred == labels)), 2)
    synthetic, made = cached_synthetic(name, module, specs, args.budget, args.seed)
    ref = {"module": module, "x": x, "pred": pred, "top1": top1, "synthetic": synthetic}
    info = {
        "top1": top1,
        "synthetic_seconds": round(made, 1),
        "synthetic_samples": int(synthetic[0][0].shape[0] + synthetic[1][0].shape[0]),
        "pool": int(synthetic[0][0].shape[0]),
    }
    if not args.no_deploy:
        ref["deploy"] = _deploy_logged(module, f"{name}-unpruned", None)
        info["deploy"] = ref["deploy"]
        if "error" in ref["deploy"]:
            ref["deploy"] = None
    state["floats"][name] = info
    print(f"{name} float: {top1:.2f}%, synthetic inputs {made:.0f}s", flush=True)
    return ref


def cached_synthetic(
    name: str, module: torch.nn.Module, specs: list, budget: float, seed: int = 0
) -> tuple[tuple, float]:
    """The model's synthetic inputs (recovery pool, held out), made once per model and recipe and kept
    in CACHE (they take minutes under load and depend only on the weights, the pool size the budget
    buys, PruneOptions' defaults, the distillation steps that make them and the image prior), and the
    seconds making them took."""
    defaults = PruneOptions(ratio=0.5, budget=budget)
    plan = pool_of(module, specs, defaults)
    weights = hashlib.sha256(
        b"".join(v.detach().numpy().tobytes() for v in module.state_dict().values())
    ).hexdigest()[:12]
    recipe = f"{plan.count}-{defaults.held_out}-{seed}-d{plan.steps}"
    if IMAGE_PRIOR is not None:
        recipe += f"-p{IMAGE_PRIOR.grid}x{IMAGE_PRIOR.tv_weight:g}"
    path = CACHE / f"synthetic-{name}-{weights}-{recipe}.pt"
    info = path.with_suffix(".json")
    if path.exists() and info.exists():
        return torch.load(path), json.loads(info.read_text())["seconds"]
    started = time.perf_counter()
    synthetic = synthetic_inputs(module, specs, {}, plan.count, defaults.held_out, seed, steps=plan.steps)
    made = time.perf_counter() - started
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(synthetic, path)
    info.write_text(json.dumps({"seconds": round(made, 1)}))
    return synthetic, made


def _commit() -> str:
    """The commit the rows ran at, and whether the pruning code differed from it."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout
    dirty = subprocess.run(
        [*git, "status", "--porcelain", "quant/prune", "quant/calibration.py"], capture_output=True, text=True
    ).stdout
    return head.strip() + (" + uncommitted quant/prune changes" if dirty.strip() else "")


def _finetune_file(data: np.lib.npyio.NpzFile) -> Path:
    """Images 0-499 as the data-aware rows' --finetune-data (normalised like the models' input)."""
    path = Path(tempfile.gettempdir()) / "edgeport_prune_finetune_0_499.npz"
    np.savez(path, x=model_input("resnet20", data["images"][CAL]))
    return path


def zoo_rows(recover: list[str], ratios: list[float], budget: float) -> list[dict]:
    """tests/zoo's MobileNetV2: fidelity to the unpruned model only (random weights, nothing to score)."""
    from tests.zoo.models import by_name

    zoo = by_name("mobilenet_v2")
    module = zoo.build().eval()
    specs = [TensorSpec("x", list(zoo.input_shapes[0]))]
    rows = []
    for ratio in ratios:
        for criterion in dict.fromkeys([recover[0], "l1"]):
            options = PruneOptions(ratio=ratio, criterion=criterion, recovery="distill", budget=budget)
            try:
                section = prune_module(module, specs, {}, options).section
            except Exception as exc:  # noqa: BLE001 - a row that fails says why
                rows.append({"ratio": ratio, "criterion": criterion, "error": str(exc)[:200]})
                continue
            fid = section.fidelity
            rows.append(
                {
                    "ratio": ratio,
                    "criterion": criterion,
                    "macs": section.after.macs,
                    "macs_before": section.before.macs,
                    "sqnr_db_none": fid.sqnr_db_before_recovery,
                    "sqnr_db": fid.sqnr_db,
                    "agree_none": fid.top1_agreement_before_recovery,
                    "agree": fid.top1_agreement,
                    "steps": section.recovery.steps,
                    "budget": budget,
                    "pool": pool_of(module, specs, PruneOptions(ratio=0.5, budget=budget)).count,
                    "reconstructed_layers": section.recovery.reconstructed_layers,
                    "seconds": section.recovery.seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def write(out: Path, state: dict, started: float, part: str = "") -> None:
    state["wall_seconds"] = round(time.perf_counter() - started)
    state["load_average"] = psutil.getloadavg()
    name = f"prune_tradeoff.{part}.json" if part else "prune_tradeoff.json"
    (out / name).write_text(json.dumps(state, indent=1))
    render(out)


def render(out: Path) -> None:
    merged = merge([json.loads(p.read_text()) for p in sorted(out.glob("prune_tradeoff*.json"))])
    (out / "prune_tradeoff.md").write_text(markdown(merged))
    plot(merged, out / "prune_tradeoff.png")


def merge(states: list[dict]) -> dict:
    """One table from the parts (processes) of a run."""
    first = states[0]
    return {
        **first,
        "started": min(s["started"] for s in states),
        "wall_seconds": max(s["wall_seconds"] for s in states),
        "load_average": max(s["load_average"] for s in states),
        "planned": sum(s["planned"] for s in states),
        "floats": {k: v for s in states for k, v in s["floats"].items()},
        "synthetic": _synthetic_lines(states),
        "rows": _unique_rows(states),
        "zoo": [
            {"budget": s["budget_seconds"], "commit": s.get("commit", OLD_ROWS), **z}
            for s in states
            for z in s.get("zoo", [])
        ],
        "finished": all(s.get("finished") for s in states),
    }


def _pool(state: dict, model: str) -> int:
    """The recovery pool of a part's model (parts before the pool was recorded: all but the held-out)."""
    info = state["floats"][model]
    return info.get("pool", info["synthetic_samples"] - PruneOptions(ratio=0.5).held_out)


def _synthetic_lines(states: list[dict]) -> list[str]:
    """One line per model and pool: how many synthetic inputs, made in how long."""
    lines: dict[tuple, str] = {}
    for state in states:
        for name, f in state["floats"].items():
            pool = _pool(state, name)
            lines[(name, pool)] = (
                f"{name}: {f['synthetic_samples']} synthetic inputs ({pool} recovery pool + "
                f"{f['synthetic_samples'] - pool} held out), made once in {f['synthetic_seconds']:.0f} s and "
                f"shared by its rows with pool {pool}."
            )
    return list(lines.values())


def _unique_rows(states: list[dict]) -> list[dict]:
    """Every part's rows, each with its run's budget, pool and commit; a row two parts both ran (one
    started to get it sooner) once."""
    rows: dict[tuple, dict] = {}
    for state in states:
        for r in state["rows"]:
            r = {"budget_seconds": state["budget_seconds"], "pool": _pool(state, r["model"]), **r}
            r.setdefault("commit", state.get("commit", OLD_ROWS))
            budget = None if r["recovery"] == "none" else r["budget_seconds"]  # none: no budget spent
            pool = None if r["recovery"] == "none" else r["pool"]
            target = r.get("target", "flops")
            options = tuple(r.get(k) for k in ROW_OPTIONS)
            key = (
                r["model"],
                r["ratio"],
                target,
                r["criterion"],
                *options,
                r["recovery"],
                budget,
                pool,
                r["commit"],
            )
            rows.setdefault(key, r)
    return list(rows.values())


def _asked(row: dict) -> str:
    """What the row asked for: RATIO of the FLOPs, or of the measured latency."""
    target = row.get("target", "flops")
    return f"{100 * row['ratio']:.0f}%" + (f" of {target}" if target != "flops" else "")


def _ms(d: dict | None, key: str) -> str:
    return f"{d[key]:.3f}" if d and key in d and d[key] is not None else "-"


def markdown(state: dict) -> str:
    rows = state["rows"]
    partial = len(rows) < state["planned"] or not state.get("finished")
    lines = [
        f"# Structured pruning ({state['images']}, PyTorch float top-1)",
        "",
        f"First part started {state['started']}, the longest part ran {state['wall_seconds'] / 60:.0f} min; "
        f"recovery budget per row in the budget column (the default is {DEFAULT_BUDGET:.0f} s; turned into "
        "steps by the work model: the same on every machine; from session 15 on it pays for making the "
        "synthetic pool too, before that for the steps alone), "
        f"load average at the last write {state['load_average'][0]:.1f} on 2 cores."
        + (f" PARTIAL: {len(rows)} of {state['planned']} planned rows." if partial else ""),
        "",
        "Recovery: `LS + distill` re-solves, by least squares on the synthetic inputs, the layers that read "
        "pruned channels and those after them, in forward order, with residual-aware targets "
        "(quant/prune/reconstruct.py; layers re-solved in the LS column), then distils; "
        "`data-free distill` rows are the earlier method (distillation only, no least squares). "
        "Pool: the synthetic inputs recovery trains on (since session 7 as many as the budget buys for the "
        "model, quant/prune/recover.pool_plan; 256 before). Rows at a session-7 commit also re-solve the "
        "layers whose outputs the cut narrowed (inner convs, a pruned stream) against the teacher's kept "
        "channels; at 2a8e4a7 distillation also matched those inner layers' own outputs, from 50b44c4 on "
        "only what a block hands on. From 04af5ef on the synthetic inputs are made with an image prior "
        "(calibration.ImagePrior) and a budget buys about 1.8x the steps (recover.TRAIN_FACTOR 1.1); from "
        "7b5a54d on 1.375x more again (0.8, the measured step time on 2 cores). "
        "`asked N% of latency`: --prune-target latency (the FLOPs ratio searched with real conversions). "
        "Speed-ups, each beside the unpruned model in one `edgeport bench` run: float on the host, one "
        "thread, with XNNPACK (`speed-up`) and with LiteRT's builtin kernels (`no-XNNPACK`); the int8 "
        "model on the host, one thread, XNNPACK (`int8 XNNPACK`); the int8 "
        "firmware (CMSIS-NN kernels) on a Cortex-M7 in QEMU (`M7`: instructions per inference at one per "
        "cycle on the board's 25 MHz clock, an estimate, not a board's time).",
        "",
        *state["synthetic"],
        "",
        "| model | FLOPs cut | criterion | recovery | top-1 % | vs float (±2SE) | MACs | params | budget s | "
        "pool | LS | steps | recovery s | float ms (unpruned) | speed-up | no-XNNPACK speed-up | "
        "int8 XNNPACK speed-up | Cortex-M7 int8 ms (unpruned) | M7 speed-up | int8 KiB | arena KiB | "
        "commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in state["floats"].items():
        d = f.get("deploy") or {}
        lines.append(
            f"| {name} | 0% | - | unpruned float | {f['top1']:.2f} | | | | | | | | | "
            f"{_ms(d, 'float_ms')} | 1.00x | 1.00x | 1.00x | {_ms(d, 'm7_ms')} | 1.00x | "
            f"{_kib(d.get('int8_bytes'))} | {_kib(d.get('arena_bytes'))} | |"
        )
    for r in rows:
        delta = r["top1"] - r["float_top1"]
        cut = 100 * (1 - r["macs"] / r["macs_before"])
        d = r.get("deploy") or {}
        speed, builtin, int8, m7 = (
            _speedup(d, key) for key in ("float_ms", "builtin_ms", "int8_ms", "m7_ms")
        )
        budget = "-" if r["recovery"] == "none" else f"{r['budget_seconds']:.0f}"
        pool = "-" if r["recovery"] == "none" else str(r["pool"])
        lines.append(
            f"| {r['model']} | {cut:.0f}% (asked {_asked(r)}) | {_criterion(r)} | "
            f"{r['recovery']} | {r['top1']:.2f} | {delta:+.2f} (±{r['delta_2se']:.2f}) | "
            f"{r['macs'] / 1e6:.1f}M | {r['params'] / 1e3:.0f}k | "
            f"{budget} | {pool} | "
            f"{r.get('reconstructed_layers', 0)} | {r['recovery_steps']} | "
            f"{r['recovery_seconds']:.0f} | "
            f"{_ms(d, 'float_ms')} ({_ms(d, 'unpruned_float_ms')}) | {speed} | {builtin} | {int8} | "
            f"{_ms(d, 'm7_ms')} ({_ms(d, 'unpruned_m7_ms')}) | {m7} | {_kib(d.get('int8_bytes'))} | "
            f"{_kib(d.get('arena_bytes'))} | {r['commit']} |"
        )
    if state.get("zoo"):
        lines += [
            "",
            "## tests/zoo MobileNetV2 (random weights: fidelity to the unpruned model on held-out "
            "synthetic inputs)",
            "",
            *(
                ["Rows without an LS count are the earlier recovery (distillation only, 150 s budget).", ""]
                if any("reconstructed_layers" not in z for z in state["zoo"])
                else []
            ),
            "| FLOPs cut | criterion | SQNR dB none -> recovered | top-1 agreement none -> recovered | "
            "budget s | pool | LS | steps | recovery s | commit |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for z in state["zoo"]:
            if "error" in z:
                lines.append(f"| {100 * z['ratio']:.0f}% | {z['criterion']} | {z['error']} | | | | | | | |")
                continue
            cut = 100 * (1 - z["macs"] / z["macs_before"])
            lines.append(
                f"| {cut:.0f}% (asked {100 * z['ratio']:.0f}%) | {z['criterion']} | {z['sqnr_db_none']} -> "
                f"{z['sqnr_db']} | {_pct(z['agree_none'])} -> {_pct(z['agree'])} | {z['budget']:.0f} | "
                f"{z.get('pool', '-')} | {z.get('reconstructed_layers', '-')} | {z['steps']} | "
                f"{z['seconds']:.0f} | {z['commit']} |"
            )
    return "\n".join(lines) + "\n"


def _speedup(d: dict, key: str) -> str:
    """The unpruned model's median over the pruned one's (`key` and `unpruned_<key>`), "-" if unmeasured;
    a host timing taken at a load of QUIET_LOAD or more says so."""
    before, after = d.get(f"unpruned_{key}"), d.get(key)
    if not (before and after):
        return "-"
    load = d.get(key.replace("_ms", "_load"))
    loaded = load is not None and load >= QUIET_LOAD
    return f"{before / after:.2f}x" + (f" (load {load:.1f})" if loaded else "")


def _kib(value: int | None) -> str:
    return f"{value / 1024:.0f}" if value else "-"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def plot(state: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(state["floats"])
    if not models:
        return
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, name in zip(axes[0], models, strict=True):
        rows = [r for r in state["rows"] if r["model"] == name]
        series: dict[str, list[dict]] = {}
        for r in rows:
            when = "" if r["commit"] == OLD_ROWS else f", pool {r['pool']} at {r['commit'][:7]}"
            series.setdefault(f"{r['criterion']}, {r['recovery']}{when}", []).append(r)
        for label, rs in sorted(series.items()):
            rs = sorted(rs, key=lambda r: r["macs"])
            style = "-o" if "distill" in label else ":x"
            ax.plot([r["macs"] / 1e6 for r in rs], [r["top1"] for r in rs], style, label=label)
        if rows:
            ax.plot(
                [rows[0]["macs_before"] / 1e6], [state["floats"][name]["top1"]], "k*", ms=12, label="unpruned"
            )
        ax.set_title(f"{name}: top-1 vs MACs ({state['images']})")
        ax.set_xlabel("MACs (millions)")
        ax.set_ylabel("top-1 %")
        ax.grid(alpha=0.3)
        if rows:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
