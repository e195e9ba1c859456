"""`edgeport run`: every variant converted, packaged for every target, benched, summarized.

Per variant (in parallel worker processes, `jobs`): convert (edgeport.pipeline.convert_model) into
variants/NAME/model, then package for each target into variants/NAME/TARGET; each stage is looked up in the
cache first (edgeport/run/cache.py). Then, in this process, the bench: one `edgeport.bench.bench` call per
runner over every variant (interleaved, so the variants see the same machine load). Everything is written
into a staging directory that replaces OUTDIR at the end (edgeport/outdir.py): a failed or interrupted run
leaves the previous results as they were. The cache lives in OUTDIR/.cache (or `cache_dir`) and is kept
across runs.

OUTDIR:
    run.json            every variant x target, where its artifacts are, what each stage did
    report.md           the summary table
    report.html         the table, plots and provenance in one self-contained page
    edgeport.toml       the config the run read
    variants/NAME/model/        the convert output (edgeport.json, model_*.tflite, model.onnx)
    variants/NAME/TARGET/       the target's package
    bench/RUNNER.json   the bench report of each runner (edgeport.bench.schema.BenchReport)
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.options import split_weights
from edgeport.outdir import check_outdir, staged_outdir
from edgeport.pipeline.state import ConvertOptions
from edgeport.run.cache import StageCache, digest, file_digest, tools_digest
from edgeport.run.config import (
    PACKAGE_RUNNERS,
    RunConfig,
    TargetSpec,
    Variant,
    config_words,
    file_option,
    safe_name,
    source_file,
    split_file,
)
from edgeport.run.progress import live_status

RUN_JSON = "run.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
CACHE_DIR = ".cache"
EVALUATION_DIR = "evaluation"  # in each variant's folder: evaluation.json
RUN_SCHEMA_VERSION = 1
Say = Callable[..., None]  # say(text, **fields): a line, or with -v a JSON object of the fields


# ---------------------------------------------------------------------------------------------------------
# Keys


def _path_digest(value: Any) -> Any:
    """A path option as what it holds: its file name and content hash (moving a project keeps the key).
    Of `weights = "ckpt.pt:ema"` the file is hashed; the name keeps the key."""
    if value is None:
        return None
    text, _ = split_weights(str(value))
    path, name = Path(text), Path(text).name + str(value)[len(text) :]
    return {"name": name, "sha256": file_digest(path)} if path.exists() else {"name": name}


def hashed_options(options: BaseModel, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    """`options` as JSON with every file option (config.file_option; in nested options models too) as
    what its files hold, so editing a file under the same name misses the cache of the stage reading it."""
    data = options.model_dump(mode="json", exclude=set(exclude))
    for name, info in type(options).model_fields.items():
        value = getattr(options, name)
        if name in exclude or value is None:
            continue
        if isinstance(value, BaseModel):
            data[name] = hashed_options(value)
            continue
        kind = file_option(info)
        if kind is None:
            continue
        items = [split_file(str(item), kind) for item in (value if isinstance(value, list) else [value])]
        hashed = [{"prefix": prefix, **_path_digest(text)} for prefix, text in items]
        data[name] = hashed if isinstance(value, list) else hashed[0]
    return data


def convert_key(options: ConvertOptions, tools: dict[str, str]) -> str:
    """What a conversion's output depends on: the source's bytes, the options (their files' bytes), the
    tools, edgeport's code. A file.py source is hashed alone: an edited module it imports is not seen
    (pass --no-cache)."""
    data = hashed_options(options, frozenset({"outdir", "force", "debug"}))
    path = source_file(options.source)
    data["source"] = {**_path_digest(path), "entry": options.source[len(path) :]}
    return digest({"stage": "convert", "options": data, "tools": tools})


def package_key(convert: str, target: TargetSpec) -> str:
    """A package stage's key: its conversion's key and the target's options (their files' bytes)."""
    options = hashed_options(target.options)
    return digest({"stage": "package", "convert": convert, "target": target.target, "options": options})


# ---------------------------------------------------------------------------------------------------------
# One variant (runs in a worker process)


@dataclass
class StageRun:
    """What one stage of one variant did."""

    stage: str  # "convert", or "package:TARGET"
    key: str
    cached: bool
    seconds: float
    path: str  # its output, relative to OUTDIR
    error: str | None = None  # the one-line EdgeportError it failed with (no output then)

    def line(self, variant: str) -> str:
        what = self.stage.replace(":", " ")
        if self.error:
            return f"{variant}: {what} failed: {self.error}"
        how = f"cached (key {self.key[:12]}), not rerun" if self.cached else f"ran in {self.seconds:.1f}s"
        return f"{variant}: {what} {how}"


@dataclass
class VariantJob:
    variant: Variant
    targets: list[TargetSpec]
    root: Path  # the staging directory (OUTDIR to be)
    cache: StageCache
    tools: dict[str, str]  # tool versions and edgeport's code digest, taken once for the whole run
    validation: Any = None  # evaluate.ValidationOptions
    quiet: bool = False
    debug: bool = False
    json_log: bool = False  # -v: one JSON object per event instead of a line
    events: Any = None  # the queue of the live status (progress.py) the events go to instead of stderr


@dataclass
class VariantDone:
    variant: str
    stages: list[StageRun] = field(default_factory=list)

    def stage(self, name: str) -> StageRun | None:
        return next((s for s in self.stages if s.stage == name), None)

    def ok(self, name: str) -> bool:
        found = self.stage(name)
        return found is not None and found.error is None


def sayer(stream: Any, quiet: bool, json_log: bool) -> Say:
    """How a run reports progress on `stream`: a line per event, a JSON object per event (-v), or nothing."""

    def say(text: str, **fields: Any) -> None:
        if not quiet:
            print(json.dumps({"message": text, **fields}) if json_log else text, file=stream, flush=True)

    return say


def queue_sayer(events: Any) -> Say:
    """A Say that hands each event's fields to the live status (progress.LiveStatus) in the parent."""
    return lambda text, **fields: events.put(fields)


def variant_dir(name: str) -> str:
    return f"variants/{name}"


def run_variant(job: VariantJob) -> VariantDone:
    """Convert one variant and package it for every target, each stage from the cache when it can be."""
    from edgeport.quiet import silenced

    done = VariantDone(job.variant.name)
    with silenced(not job.debug) as stderr:
        say = sayer(stderr, job.quiet, job.json_log) if job.events is None else queue_sayer(job.events)

        _variant_stages(job, done, say)
    return done


class StageLines:
    """A convert StageObserver for a variant in a worker: one line per finished stage, named by variant
    (a live display per process would fight over the terminal)."""

    def __init__(self, variant: str, say: Say) -> None:
        self.variant, self.say = variant, say

    def started(self, stage: str) -> None:
        pass

    def finished(self, stage: str, seconds: float) -> None:
        text = f"{self.variant}: convert: {stage} {seconds:.1f}s"
        self.say(text, variant=self.variant, stage=f"convert:{stage}", seconds=round(seconds, 3))


def _variant_stages(job: VariantJob, done: VariantDone, say: Say) -> None:
    name = job.variant.name
    base = inside(job.root, variant_dir(name))
    model_dir = base / "model"
    options = job.variant.options
    key = convert_key(options, job.tools)

    def convert() -> None:
        from edgeport.pipeline import convert_model  # TensorFlow and torch load only when a stage runs

        say(f"{name}: converting", variant=name, stage="convert", started=True)
        convert_model(options.model_copy(update={"outdir": model_dir, "force": False}), StageLines(name, say))

    if not _stage(job, done, say, "convert", key, model_dir, convert):
        return  # nothing to package
    if job.validation is not None:
        from edgeport.run.evaluate import write_evaluation

        validation = job.validation
        data = {
            "convert": key,
            "data": file_digest(validation.data),
            **validation.model_dump(exclude={"data"}),
        }
        out = base / EVALUATION_DIR
        _stage(
            job,
            done,
            say,
            "evaluate",
            digest(data),
            out,
            lambda: write_evaluation(model_dir, validation, out),
        )
    for target in job.targets:
        out = inside(base, target.name)
        command = package_command(model_dir, target, out.relative_to(job.root).as_posix(), job)

        def package(target: TargetSpec = target, out: Path = out, command: str = command) -> None:
            from edgeport.targets import get_target

            get_target(target.target).package(model_dir, out, target.options, force=False, command=command)

        _stage(job, done, say, f"package:{target.name}", package_key(key, target), out, package)


def _stage(
    job: VariantJob, done: VariantDone, say: Say, stage: str, key: str, out: Path, make: Callable[[], None]
) -> bool:
    """One stage of a variant into `out`: copied from the cache, else made and cached. A stage that fails
    with a user-facing error is recorded (its output absent) and the other variants and targets go on."""
    started = time.perf_counter()
    kind = stage.partition(":")[0]
    error = None
    cached = job.cache.fetch(kind, key, out)
    if not cached:
        try:
            make()
        except EdgeportError as err:
            error = err.one_line()
        else:
            job.cache.store(kind, key, out)
    ran = StageRun(
        stage, key, cached, time.perf_counter() - started, out.relative_to(job.root).as_posix(), error
    )
    done.stages.append(ran)
    say(ran.line(done.variant), variant=done.variant, **dataclasses.asdict(ran))
    return error is None


def package_command(model_dir: Path, target: TargetSpec, outdir: str, job: VariantJob) -> str:
    """The `edgeport package` command this stage is equivalent to, paths relative to OUTDIR: each option
    that is not its default as the flag the package CLI makes from it (edgeport/cli/options.py)."""
    from edgeport.options import extra, flag_name
    from edgeport.targets import get_target

    fields = get_target(target.target).options.model_fields
    words = ["edgeport", "package", model_dir.relative_to(job.root).as_posix(), "--target", target.target]
    for fname, value in target.options.model_dump(mode="json").items():
        info = fields[fname]
        if value == info.get_default(call_default_factory=True):
            continue
        if isinstance(value, bool):  # a True default is turned off with --no-FIELD
            words.append(flag_name(fname, info) if value else f"--no-{fname.replace('_', '-')}")
        elif isinstance(value, list) and extra(info).get("text"):
            words += [flag_name(fname, info), ",".join(str(v) for v in value)]
        else:
            for one in value if isinstance(value, list) else [value]:
                words += [flag_name(fname, info), str(one)]
    return shlex.join([*words, "-o", outdir])


# ---------------------------------------------------------------------------------------------------------
# The whole run


@dataclass
class RunResult:
    outdir: Path
    variants: list[VariantDone]
    bench: dict[str, str]  # runner -> its report, relative to OUTDIR
    seconds: float

    @property
    def failed(self) -> list[str]:
        """`variant: stage failed: why` for every stage that failed (the rest of the run was written)."""
        return [s.line(v.variant) for v in self.variants for s in v.stages if s.error]

    def summary(self) -> str:
        stages = [s for v in self.variants for s in v.stages]
        cached = sum(s.cached for s in stages)
        return (
            f"ran {len(self.variants)} variant{'s' * (len(self.variants) != 1)} -> {self.outdir} in "
            f"{self.seconds:.1f}s: {len(stages)} stages, {cached} from the cache; "
            f"see {self.outdir / REPORT_MD}"
        )


def default_jobs(variants: int) -> int:
    return max(1, min(variants, os.cpu_count() or 1))


def _check_outdir(outdir: Path, force: bool) -> None:
    """Refuse a non-empty OUTDIR without --force; its cache alone does not count."""
    only_cache = outdir.is_dir() and all(p.name == CACHE_DIR for p in outdir.iterdir())
    check_outdir(outdir, force or only_cache)


def run(
    config: RunConfig,
    outdir: Path,
    *,
    force: bool = False,
    jobs: int | None = None,
    use_cache: bool = True,
    cache_dir: Path | None = None,
    quiet: bool = False,
    debug: bool = False,
    json_log: bool = False,
    executor: str = "process",
    ray_address: str | None = None,
    say: Say | None = None,
    live: bool = False,
) -> RunResult:
    """Run `config` into `outdir` (see the module docstring). A stage that fails is recorded in the result
    (`failed`), run.json and the report, and the rest is written; when no variant converts, EdgeportError
    is raised and OUTDIR is left as it was."""
    started = time.perf_counter()
    outdir = Path(outdir)
    say = say or sayer(sys.stderr, quiet, json_log)
    _check_outdir(outdir, force)
    cache_root = Path(cache_dir) if cache_dir is not None else outdir / CACHE_DIR
    in_outdir = cache_root.absolute() == (outdir / CACHE_DIR).absolute()
    if not in_outdir and outdir.absolute() in cache_root.absolute().parents:
        raise EdgeportError(
            f"--cache-dir {cache_dir} is inside the output directory, which the run replaces",
            f"leave --cache-dir out (the cache goes to {outdir / CACHE_DIR}) or put it elsewhere",
        )
    cache = StageCache(cache_root, read=use_cache)
    jobs = jobs or default_jobs(len(config.variants))
    # Checked above; the staging directory replaces OUTDIR as a whole, the cache is carried over.
    with staged_outdir(outdir, force=True) as stage:
        tools = tools_digest()
        # The live status (a terminal, neither -q nor -v: the CLI decides) follows the process pool's workers.
        names = [v.name for v in config.variants]
        with live_status(live and executor == "process", names, sys.stderr) as status:
            events = status.queue if status else None
            jobs_list = [
                VariantJob(
                    v, config.targets, stage, cache, tools, config.validation, quiet, debug, json_log, events
                )
                for v in config.variants
            ]
            results = (
                _run_ray(jobs_list, jobs, ray_address) if executor == "ray" else _run_jobs(jobs_list, jobs)
            )
        if not any(r.ok("convert") for r in results):
            first = results[0].stages[0]
            raise EdgeportError(
                f"no variant converted; {results[0].variant}: {first.error}",
                "nothing was written to OUTDIR",
            )
        bench = _bench(config, stage, results, say)
        (stage / "edgeport.toml").write_text(config.text)
        document = run_document(config, stage, results, bench)
        (stage / RUN_JSON).write_text(json.dumps(document, indent=2) + "\n")
        from edgeport.run.html import render_html
        from edgeport.run.report import render_markdown

        (stage / REPORT_MD).write_text(render_markdown(stage, document))
        (stage / REPORT_HTML).write_text(render_html(stage, document))
        if in_outdir and cache_root.is_dir():
            cache_root.rename(stage / CACHE_DIR)
    return RunResult(outdir, results, bench, time.perf_counter() - started)


def _run_jobs(jobs_list: list[VariantJob], jobs: int) -> list[VariantDone]:
    if jobs <= 1 or len(jobs_list) <= 1:
        return [run_variant(job) for job in jobs_list]
    # spawn, not fork: the parent may hold TensorFlow/torch threads that a forked child would deadlock on.
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"))
    try:
        return list(pool.map(run_variant, jobs_list))
    except BaseException:
        # Ctrl-C reaches the workers too, SIGTERM only this process: stop them either way rather than
        # wait for their conversions to finish (their output goes with the staging directory).
        workers = list(getattr(pool, "_processes", {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.terminate()
        raise
    finally:
        pool.shutdown(wait=True)


def _run_ray(jobs_list: list[VariantJob], jobs: int, address: str | None) -> list[VariantDone]:
    """The same variant jobs as Ray tasks (`--executor ray`): on a local Ray instance of `jobs` CPUs, or on
    the cluster at `address`, whose nodes must see OUTDIR's parent and the cache at the same paths (a
    shared file system): each task writes its variant's folder there, as a worker process does."""
    try:
        import ray
    except ImportError:
        raise EdgeportError(
            "--executor ray needs Ray, which is not installed", "pip install 'edgeport[ray]'"
        ) from None
    started = not ray.is_initialized()
    if started:
        local = {"num_cpus": jobs} if address is None else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, **local)
    try:
        task = ray.remote(num_cpus=1)(run_variant)
        return list(ray.get([task.remote(job) for job in jobs_list]))
    finally:
        if started:
            ray.shutdown()


def _bench(config: RunConfig, root: Path, results: list[VariantDone], say: Say) -> dict[str, str]:
    """One bench per runner over every variant that has what it measures (its model, or for a package
    runner its package)."""
    if config.bench is None:
        return {}
    from edgeport.bench.harness import bench
    from edgeport.bench.models import resolve_model
    from edgeport.bench.runner import parse_spec
    from edgeport.bench.schema import BenchSettings

    written = {}
    (root / "bench").mkdir()
    for spec in config.bench.runners:
        name, arg = parse_spec(spec)
        measured = package_for(config.targets, PACKAGE_RUNNERS.get(name), arg)
        stage = "convert" if measured == "model" else f"package:{measured}"
        dirs = [(r.variant, root / variant_dir(r.variant) / measured) for r in results if r.ok(stage)]
        if not dirs:
            say(f"bench: nothing to measure on {spec} (every {stage} failed)", runner=spec)
            continue
        models = [
            dataclasses.replace(
                m, info=m.info.model_copy(update={"name": label, "path": d.relative_to(root).as_posix()})
            )
            for label, d in dirs
            for m in [resolve_model(str(d))]
        ]
        say(f"bench: {len(models)} variant{'s' * (len(models) != 1)} on {spec}", runner=spec, stage="bench")
        settings = BenchSettings(runner=spec, **config.bench.settings)
        report = bench(
            models, spec, settings, config.bench.runner_options, progress=False, spell=config_words
        )
        path = f"bench/{safe_name(spec)}.json"
        (root / path).write_text(report.to_json())
        written[spec] = path
    return written


def package_for(targets: list[TargetSpec], target: str | None, board: str | None) -> str:
    """What a runner measures in each variant's folder: the convert output ("model"), or for a runner that
    runs a package, that target's package, the one built for the runner's board when there is one."""
    if target is None:
        return "model"
    mine = [t for t in targets if t.target == target]
    same_board = [t for t in mine if getattr(t.options, "board", None) == board]
    return (same_board or mine)[0].name


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refused if it would end outside `root` (a config cannot write elsewhere)."""
    path = (root / relative).resolve()
    if path != root.resolve() and root.resolve() not in path.parents:
        raise EdgeportError(
            f"output path {relative!r} leaves the output directory", "use a relative path inside it"
        )
    return root / relative


# ---------------------------------------------------------------------------------------------------------
# run.json


def _options_json(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


def run_document(
    config: RunConfig, root: Path, results: list[VariantDone], bench: dict[str, str]
) -> dict[str, Any]:
    """run.json: what was asked and where everything is; the same for the same config and inputs, apart
    from the `run` block (seconds, what came from the cache) and the bench reports (measurements)."""
    from edgeport.manifest import tool_versions
    from edgeport.run.cache import TOOLS

    by_name = {r.variant: r for r in results}
    variants = []
    for variant in config.variants:
        done = by_name[variant.name]
        convert = done.stage("convert")
        assert convert is not None
        entry: dict[str, Any] = {
            "name": variant.name,
            "values": variant.values,
            "model": variant_dir(variant.name) + "/model",
            "command": shlex.join([*variant.command, "-o", variant_dir(variant.name) + "/model"]),
            "convert_key": convert.key,
            **({"error": convert.error} if convert.error else {}),
            "targets": {},
        }
        evaluation = done.stage("evaluate")
        if evaluation is not None:
            where = f"{variant_dir(variant.name)}/{EVALUATION_DIR}/evaluation.json"
            entry["evaluation"] = {"error": evaluation.error} if evaluation.error else where
        for target in config.targets:
            package = done.stage(f"package:{target.name}")
            where = f"{variant_dir(variant.name)}/{target.name}"
            entry["targets"][target.name] = {
                "target": target.target,
                "options": _options_json(target.options),
                "package": where,
                **(
                    {"command": Manifest.read(root / where).run.command}
                    if package is not None and package.error is None
                    else {"error": package.error if package else "not packaged: the conversion failed"}
                ),
            }
        variants.append(entry)
    return {
        "schema_version": RUN_SCHEMA_VERSION,
        "config": "edgeport.toml",
        "variants": variants,
        "bench": bench,
        "tools": tool_versions(*TOOLS),
        "run": {
            "stages": {
                f"{r.variant}/{s.stage}": {"cached": s.cached, "seconds": round(s.seconds, 3)}
                for r in results
                for s in r.stages
            },
        },
    }
