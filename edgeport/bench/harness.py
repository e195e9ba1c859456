"""The bench harness: every model checked on the runner, one session per model, runs interleaved in
rounds where the runner allows it, one BenchReport out. `bench()` is the Python API; the CLI calls it.

Interleaving: on a noisy machine the load drifts over a run, so model A measured entirely before model B
would carry the drift into their ratio. Each session is opened (loaded, first inference, warmup) and
then the N measured runs go in rounds of max(1, N // 10), alternating the models, so both see the
same drift. A runner that cannot keep several sessions open (a board, a firmware run) measures one
model after the other.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from edgeport import __version__
from edgeport.bench.models import resolve_models
from edgeport.bench.runner import BenchModel, Runner, RunnerOptions, Session, cli_words, get_runner
from edgeport.bench.schema import BenchReport, BenchResult, BenchSettings, summarize
from edgeport.bench.unused import refuse_unused
from edgeport.errors import EdgeportError
from edgeport.options import Spell

ROUNDS = 10


def schedule(n_models: int, runs: int, interleave: bool) -> list[tuple[int, int]]:
    """(model index, how many runs) in the order they are measured: rounds of max(1, runs // ROUNDS)
    alternating the models when interleaving, else all of each model's runs at once, model after model."""
    if not interleave:
        return [(i, runs) for i in range(n_models)]
    size = max(1, runs // ROUNDS)
    steps = []
    done = 0
    while done < runs:
        count = min(size, runs - done)
        steps += [(i, count) for i in range(n_models)]
        done += count
    return steps


def bench(
    models: Sequence[str | Path | BenchModel],
    on: str | Runner,
    settings: BenchSettings | None = None,
    options: RunnerOptions | None = None,
    progress: bool | None = None,
    spell: Spell = cli_words,
) -> BenchReport:
    """Measure `models` on the runner `on` ("host", "tflm", "qemu:mps2-an386", ... or a Runner).

    `settings` defaults to BenchSettings' defaults (its `runner` is set to `on`); `progress` shows a
    progress bar on stderr (None: when stderr is a terminal). Bad input raises EdgeportError before
    anything runs; every session is closed on every path, Ctrl-C included. The runner made from `on`
    names options in its errors as `spell` writes them (`edgeport run` passes its config's keys).
    """
    if not models:
        raise EdgeportError("no model given", "pass one or more .tflite files or edgeport output directories")
    spec = on if isinstance(on, str) else on.name
    settings = (settings or BenchSettings(runner=spec)).model_copy(update={"runner": spec})
    runner = get_runner(on, options, spell) if isinstance(on, str) else on
    refuse_unused(settings, runner.uses, spell)
    resolved = resolve_models(models)
    for model in resolved:
        runner.check(model)
    device = runner.device()
    show = sys.stderr.isatty() if progress is None else progress
    samples: list[list[float]] = [[] for _ in resolved]
    results = []
    with ExitStack() as stack, _progress(show, len(resolved) * settings.runs) as advance:
        if runner.interleaves:
            sessions = [_open(stack, runner, m, settings) for m in resolved]
            for index, count in schedule(len(resolved), settings.runs, True):
                samples[index] += _run(sessions[index], resolved[index], count)
                advance(count)
            results = [
                _result(m, s, samples[i], runner, settings)
                for i, (m, s) in enumerate(zip(resolved, sessions, strict=True))
            ]
        else:
            counts = []
            for index, asked in schedule(len(resolved), settings.runs, False):
                with ExitStack() as one:
                    session = _open(one, runner, resolved[index], settings)
                    count = runs_of(session, settings)
                    samples[index] += _run(session, resolved[index], count)
                    advance(count, count - asked)
                    counts.append((getattr(session, "fixed_warmup", None), count))
                    results.append(_result(resolved[index], session, samples[index], runner, settings))
            settings = settings_as_run(settings, counts)
    return BenchReport(
        settings=settings,
        device=device,
        results=results,
        tools={"edgeport": __version__, **_tools(runner)},
    )


def runs_of(session: Session, settings: BenchSettings) -> int:
    """How many runs to time on `session`: --runs when given, else the count a session fixes itself
    (`fixed_runs`: a board's firmware times the runs it was built for), else the default."""
    fixed = getattr(session, "fixed_runs", None)
    return settings.runs if fixed is None or "runs" in settings.model_fields_set else fixed


def settings_as_run(settings: BenchSettings, counts: Sequence[tuple[int | None, int]]) -> BenchSettings:
    """The settings the report states: the warmup a session fixed and the runs timed, when every model
    had the same (a firmware's counts replace the defaults it did not use)."""
    update: dict[str, int] = {}
    warmups = {warmup for warmup, _ in counts}
    if len(warmups) == 1 and None not in warmups:
        update["warmup"] = warmups.pop()  # type: ignore[assignment]
    if len({runs for _, runs in counts}) == 1:
        update["runs"] = counts[0][1]
    return settings.model_copy(update=update) if update else settings


def _open(stack: ExitStack, runner: Runner, model: BenchModel, settings: BenchSettings) -> Session:
    session = runner.open(model, settings)
    stack.callback(session.close)
    return session


def _run(session: Session, model: BenchModel, count: int) -> list[float]:
    times = list(session.run(count))
    if len(times) != count:
        raise EdgeportError(
            f"{model.info.name}: the runner returned {len(times)} timings for {count} runs",
            "rerun with --debug and report it",
        )
    return times


def _result(
    model: BenchModel, session: Session, samples: list[float], runner: Runner, settings: BenchSettings
) -> BenchResult:
    extras = session.finish()
    return BenchResult(
        model=model.info,
        runner=settings.runner,
        time_kind=runner.time_kind,
        init_ms=session.init_ms,
        first_ms=session.first_ms,
        samples_ms=samples,
        stats=summarize(samples),
        ticks=extras.ticks,
        memory=extras.memory,
        delegation=extras.delegation,
        notes=extras.notes,
        profile=extras.profile,
    )


def _tools(runner: Runner) -> dict[str, str]:
    """A runner may name the tools (and versions) it measured with: an optional `tools()` method."""
    tools = getattr(runner, "tools", None)
    return dict(tools()) if callable(tools) else {}


@contextmanager
def _progress(show: bool, total: int) -> Iterator:
    """A transient rich progress bar on stderr, advanced by the number of runs done; a no-op when hidden."""
    if not show:
        yield lambda count, more=0: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("bench"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(file=sys.stderr),
        transient=True,
        redirect_stdout=False,
        redirect_stderr=False,
    ) as bar:
        task = bar.add_task("bench", total=total)

        def advance(count: int, more: int = 0) -> None:
            """`count` runs done; `more` runs than planned (a session that fixes its own count)."""
            if more:
                bar.update(task, total=(bar.tasks[0].total or 0) + more)
            bar.advance(task, count)

        yield advance
