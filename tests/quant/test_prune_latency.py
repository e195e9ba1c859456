"""--prune-target latency: the search on the MACs removed against injected allocations and measurers
(pure, no timing; an allocation that removes more than asked, one repeated), the prune with a fake
measurer and fake load readings (the load recorded, the chosen trial timed again and
refused when the two timings disagree, a busy host noted), the host timer's second run of the same
files with a fake bench, and one real run (conversion + host LiteRT) asserting only structure."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch.nn as nn

from edgeport.errors import EdgeportError
from edgeport.quant.prune import PruneOptions, latency, layer_latency, prune_module
from edgeport.quant.prune.count import module_macs
from edgeport.quant.prune.latency import (
    BRACKET_TRIALS,
    MAX_TRIALS,
    RETIME_TOLERANCE,
    TOLERANCE,
    Candidate,
    Load,
    Search,
    Trial,
    agree,
    next_guess,
    search,
    timed,
)
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
)


def _trial(asked: float, macs: float, removed: float, load: float | None = None) -> Trial:
    """A measured trial, 10 ms unpruned."""
    return Trial(asked, macs, removed, 10.0, 10.0 * (1 - removed), load)


def _allocations(latency, achieved=lambda asked: asked):  # noqa: ANN001, ANN202 - fakes
    """An `allocate` for search: the allocation asked for `ratio` removes `achieved(ratio)` of the
    MACs, and converted and timed, `latency(macs removed)` of the latency. Returns it, the ratios asked
    and the ratios converted."""
    asked: list[float] = []
    converted: list[float] = []

    def allocate(ratio: float) -> Candidate:
        asked.append(ratio)
        macs = achieved(ratio)

        def measure() -> Trial:
            converted.append(ratio)
            return _trial(ratio, macs, latency(macs))

        return Candidate(ratio, macs, measure)

    return allocate, asked, converted


def _linear(slope: float, cap: float = 1.0):  # noqa: ANN202 - an allocate
    """Latency removed = slope x MACs removed, never more than `cap`; each allocation removes what it
    is asked to."""
    allocate, _, calls = _allocations(lambda macs: min(cap, slope * macs))
    return allocate, calls


def test_latency_slower_than_flops_is_found_by_the_secant() -> None:
    measure, calls = _linear(0.8)
    found = search(0.3, measure, reachable=0.7)
    assert calls[0] == 0.3  # first guess: latency falls with MACs
    assert calls[1] == pytest.approx(0.375, abs=1e-3)  # through (0, 0) and (0.3, 0.24)
    best = found.best()
    assert best is not None and abs(best.removed - 0.3) <= TOLERANCE
    assert len(calls) == 2


def test_an_overshoot_comes_back_down_between_the_bracketing_points() -> None:
    measure, calls = _linear(1.5)
    found = search(0.3, measure, reachable=0.7)
    assert calls[1] == pytest.approx(0.2, abs=1e-3)
    assert found.best().flops_ratio == pytest.approx(0.2, abs=1e-3)


def test_an_unreachable_goal_stops_at_the_most_the_options_allow() -> None:
    measure, calls = _linear(0.5)
    found = search(0.5, measure, reachable=0.4)
    assert calls == [0.4]  # the first guess is already the most: one conversion
    assert found.best() is None


def test_a_flat_latency_jumps_to_the_reachable_end_and_stops_after_it() -> None:
    measure, calls = _linear(1.0, cap=0.2)
    found = search(0.3, measure, reachable=0.6)
    assert calls[-1] == 0.6 and len(calls) <= 4
    assert found.best() is None


def test_the_trial_budget_holds_and_the_last_trial_is_the_reachable_end() -> None:
    """A noisy measurer that keeps missing: four conversions, the last at the end, which falls short too."""
    answers = iter([0.2, 0.25, 0.26, 0.27])
    measure, _, calls = _allocations(lambda _macs: next(answers))
    found = search(0.3, measure, reachable=0.9)
    assert calls == pytest.approx([0.3, 0.45, 0.6, 0.9])  # secant, secant, then the end
    assert found.best() is None


def test_a_reachable_end_beyond_the_goal_is_not_kept_the_bracket_is_narrowed() -> None:
    """Short of the goal until the end, which removes far more: the trials after it close in on the goal
    from both sides instead of keeping a model pruned to the end (a ResNet-56 asked for 0.34 got 99.5 %
    of its MACs removed)."""
    answers = iter([0.2, 0.25, 0.26, 0.9])
    measure, _, calls = _allocations(lambda macs: next(answers, 0.3 + (macs - 0.65)))
    found = search(0.3, measure, reachable=0.9)
    assert calls[:4] == pytest.approx([0.3, 0.45, 0.6, 0.9])
    # Regula falsi between (0.6, 0.26) and (0.9, 0.9): 0.6 + 0.04 x 0.3 / 0.64.
    assert calls[4] == pytest.approx(0.61875, abs=1e-4)
    assert len(calls) <= MAX_TRIALS + BRACKET_TRIALS
    best = found.best()
    assert best is not None and best.flops_ratio < 0.9 and abs(best.removed - 0.3) <= TOLERANCE


def _block_between(low: float, high: float, jump: float):  # noqa: ANN202 - an allocation's achieved
    """An allocation that removes what it is asked to, except for a ratio asked in (low, high]: there
    the step that reaches it with the least error is a residual block whole, and it removes `jump`
    (the issue's: asked for 9.4 % of the MACs, 34 % removed)."""
    return lambda asked: jump if low < asked <= high else asked


def test_the_search_interpolates_on_the_macs_removed_not_the_ratio_asked() -> None:
    """Asked for 30 % the allocation removes 60 % (a block whole), 48 % of the latency: the second
    guess comes from (0.6, 0.48), not (0.3, 0.48), and is asked of the allocation as its ratio."""
    allocate, asked, converted = _allocations(lambda macs: 0.8 * macs, _block_between(0.25, 0.35, 0.6))
    found = search(0.3, allocate, reachable=0.9)
    # (0, 0) to (0.6, 0.48) reaches 0.3 at 0.375; through the asked (0.3, 0.48) it would be 0.1875.
    assert asked == converted == pytest.approx([0.3, 0.375])
    assert [t.flops_ratio for t in found.trials] == asked
    assert [t.macs_removed for t in found.trials] == pytest.approx([0.6, 0.375])
    assert found.best().removed == pytest.approx(0.3)


def test_an_allocation_repeated_is_not_converted_again() -> None:
    """Every ratio asked above 25 % gives the same allocation (60 % of the MACs): the second guess
    gets it again, is not converted, and the search ends on the first trial."""
    allocate, asked, converted = _allocations(lambda macs: 0.8 * macs, _block_between(0.25, 1.0, 0.6))
    found = search(0.3, allocate, reachable=0.9)
    assert asked == pytest.approx([0.3, 0.375]) and converted == [0.3]
    assert len(found.trials) == 1 and found.best() is found.trials[0]


def test_the_least_pruned_is_chosen_by_the_macs_removed() -> None:
    found = Search(0.3, [_trial(0.2, 0.5, 0.31), _trial(0.3, 0.35, 0.30)])
    assert found.best().flops_ratio == 0.3  # asked for more, removed less


def test_next_guess_interpolates_within_the_bracket() -> None:
    assert next_guess(0.3, [(0.0, 0.0), (0.2, 0.1), (0.6, 0.5)], 0.9) == pytest.approx(0.4)
    assert next_guess(0.3, [(0.0, 0.0), (0.5, 0.1), (0.6, 0.05)], 0.9) == 0.9  # latency rose: go to the end


SPECS = [TensorSpec("x", INPUT_SHAPE)]


def _fast(**over: object) -> PruneOptions:
    return fast_options(**{"target": "latency", **over})


def _macs_clock(reference: nn.Module, slope: float):  # noqa: ANN202 - a fake measurer
    """Milliseconds proportional to MACs raised to `slope` (a fake clock: no timing)."""
    example = [p.new_zeros([1, *INPUT_SHAPE[1:]]) for p in list(reference.parameters())[:1]]
    full = sum(module_macs(reference, example).values())

    def measure(module: nn.Module) -> tuple[float, float]:
        fraction = sum(module_macs(module, example).values()) / full
        return 10.0, 10.0 * fraction**slope

    return measure


REAL_LAYER_TIMES = layer_latency.time_shapes


@pytest.fixture(autouse=True)
def layer_times_by_macs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-layer times a latency target weighs its steps in: the layer's MACs, not a timing, so
    every allocation here is the same on any host (the real end-to-end test times them)."""

    def timer(shapes: Sequence[layer_latency.LayerShape]) -> list[list[float]]:
        return [[s.height * s.width * s.cin * s.cout * s.kernel[0] * s.kernel[1] / 1e3] for s in shapes]

    monkeypatch.setattr(layer_latency, "time_shapes", timer)


@pytest.fixture
def quiet_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The load read around each timing: 0.5 on 2 cores, all of it this process (no real reading)."""
    monkeypatch.setattr(latency, "host_load", lambda: Load(0.5, 2, 0.5))


def test_latency_target_prunes_to_the_measured_goal_and_records_the_search(quiet_host: None) -> None:
    model = coupled()
    result = prune_module(model, SPECS, {}, _fast(ratio=0.3), measure=_macs_clock(model, 0.7))
    section = result.section
    lat = section.latency
    assert lat is not None and lat.asked == 0.3
    assert lat.removed >= 0.3 - TOLERANCE and 1 <= len(lat.trials) <= 4
    assert lat.after_ms == pytest.approx(10.0 * (1 - lat.removed), abs=1e-3)
    assert section.removed("flops") > 0.3  # latency falls slower than MACs here: more MACs go
    assert "latency 10.00 -> " in section.describe() and "asked -30%" in section.describe()
    assert result.module(random_batch(2, seed=0)).shape == model(random_batch(2, seed=0)).shape


def _jumping_allocation(monkeypatch: pytest.MonkeyPatch, low: float, high: float, jump: float) -> None:
    """prune.py's allocation_at, except that a FLOPs ratio asked in (low, high] is answered with the
    real allocation at `jump`: it removes far more than asked, as when a residual block goes whole."""
    from edgeport.quant.prune import prune

    real = prune.allocation_at

    def allocation_at(analysis, target, ratio, *rest, **options):  # noqa: ANN001, ANN202 - a fake
        return real(analysis, target, jump if low < ratio <= high else ratio, *rest, **options)

    monkeypatch.setattr(prune, "allocation_at", allocation_at)


def test_the_search_asks_for_what_the_measured_macs_removed_say(monkeypatch, quiet_host) -> None:
    """Asked for 30 % the allocation removes about 60 %: the second trial is asked for the fraction the
    (60 %, latency) point gives, and each trial in the manifest carries the ratio asked and the MACs
    removed."""
    _jumping_allocation(monkeypatch, 0.25, 0.35, 0.6)
    model = coupled()
    lines: list[str] = []
    result = prune_module(
        model, SPECS, {}, _fast(ratio=0.3), say=lines.append, measure=_macs_clock(model, 0.7)
    )
    lat = result.section.latency
    first, second = lat.trials[:2]
    assert first.flops_ratio == 0.3 and first.macs_removed >= 0.59  # far above the ratio asked
    # Through (0, 0) and (MACs removed, latency removed); the ratio asked would have given ~0.19.
    assert second.flops_ratio == pytest.approx(0.3 * first.macs_removed / first.removed, abs=2e-3)
    assert second.macs_removed < first.macs_removed
    best = min((t for t in lat.trials if t.removed >= 0.3 - TOLERANCE), key=lambda t: t.macs_removed)
    assert (lat.flops_ratio, lat.macs_removed) == (best.flops_ratio, best.macs_removed)
    assert lat.retimed.macs_removed == lat.macs_removed
    written = result.section.model_dump()["latency"]
    assert written["trials"][0]["flops_ratio"] == 0.3
    assert written["trials"][0]["macs_removed"] == first.macs_removed
    assert written["macs_removed"] == lat.macs_removed
    assert any("asked for 30% of the MACs, the allocation removes 6" in line for line in lines)


def test_a_repeated_allocation_is_not_converted_twice(monkeypatch, quiet_host) -> None:
    """Every ratio asked above 25 % gives the same allocation: the second guess gets it again and is
    neither cut nor timed; the one trial is chosen and timed again."""
    _jumping_allocation(monkeypatch, 0.25, 1.0, 0.6)
    model, timed_modules = coupled(), []
    clock = _macs_clock(model, 0.7)

    def measure(module: nn.Module) -> tuple[float, float]:
        timed_modules.append(id(module))
        return clock(module)

    result = prune_module(model, SPECS, {}, _fast(ratio=0.3), measure=measure)
    lat = result.section.latency
    assert len(lat.trials) == 1 and lat.flops_ratio == 0.3
    assert len(timed_modules) == 2 and len(set(timed_modules)) == 1  # the trial, then its re-timing


def test_the_summary_shows_the_chosen_trials_two_timings(monkeypatch) -> None:
    _rising_load(monkeypatch)
    model = coupled()
    result = prune_module(model, SPECS, {}, _fast(ratio=0.3), measure=_retimed_by(model, 0.7, 0.3))
    lat, text = result.section.latency, result.section.describe()
    again = lat.retimed
    assert (
        f"host LiteRT latency 10.00 -> {lat.after_ms:.2f} ms, again 10.00 -> {again.after_ms:.2f} ms "
        f"(-{100 * lat.removed:.0f}% then -{100 * again.removed:.0f}%, asked -30%)"
    ) in text
    assert f"{again.after_ms:.2f}" != f"{lat.after_ms:.2f}"


def test_a_manifest_written_before_the_macs_removed_reads_back() -> None:
    from edgeport.quant.prune.section import LatencySearch

    old = {"flops_ratio": 0.3, "removed": 0.28, "before_ms": 10.0, "after_ms": 7.2}
    search = LatencySearch.model_validate(
        {"runner": "r", "asked": 0.3, **old, "trials": [old], "retimed": old}
    )
    assert search.macs_removed is None and search.trials[0].macs_removed is None
    written = search.model_dump()
    assert "macs_removed" not in written and "macs_removed" not in written["trials"][0]


def test_an_unreachable_latency_says_the_most_measured(quiet_host: None) -> None:
    model = coupled()
    with pytest.raises(
        EdgeportError, match=r"--prune 0\.9 of the latency cannot be reached: at most 0\.\d\d"
    ) as err:
        prune_module(model, SPECS, {}, _fast(ratio=0.9), measure=_macs_clock(model, 0.5))
    assert "\n" not in str(err.value) and "Use --prune 0." in str(err.value)


def test_a_trial_that_does_not_convert_is_named_in_the_one_line(quiet_host: None) -> None:
    def fails(_module: nn.Module) -> tuple[float, float]:
        raise EdgeportError("onnx2tf failed on model.onnx (ValueError: ...)", "rerun with --debug")

    with pytest.raises(EdgeportError) as err:
        prune_module(coupled(), SPECS, {}, _fast(ratio=0.3), measure=fails)
    line = str(err.value)
    assert line.startswith("--prune-target latency: trial 1 (") and "\n" not in line
    assert "of the MACs removed) could not be timed: onnx2tf failed on model.onnx" in line
    assert line.endswith("Rerun with --debug.")


def test_the_load_counts_only_other_work_against_the_free_core_a_timing_needs() -> None:
    assert Load(3.3, 2, 1.0).busy  # the loaded run of the issue: two other one-thread jobs
    assert not Load(2.0, 2, 1.8).busy  # this process's own analysis on both cores, nothing else
    assert not Load(1.0, 2, 0.0).busy  # one other job leaves one core free
    assert Load(1.2, 2, 0.0).busy
    assert Load(3.3, 2, 1.0).describe() == "load 3.3 on 2 cores, 2.3 of it other work"


def test_a_timing_records_the_higher_load_read_around_it() -> None:
    readings = iter([Load(0.4, 2), Load(1.7, 2)])
    trial = timed(0.3, 0.34, lambda: (10.0, 7.0), lambda: next(readings))
    assert trial == Trial(0.3, 0.34, pytest.approx(0.3), 10.0, 7.0, 1.7)


def test_two_timings_agree_within_the_retiming_tolerance() -> None:
    first = _trial(0.3, 0.3, 0.30)
    assert agree(first, _trial(0.3, 0.3, 0.30 + RETIME_TOLERANCE - 0.001))
    assert not agree(first, _trial(0.3, 0.3, 0.30 + RETIME_TOLERANCE + 0.001))
    assert not agree(_trial(0.19, 0.19, 0.36), _trial(0.19, 0.19, 0.12))  # the loaded run


def _rising_load(monkeypatch: pytest.MonkeyPatch, cores: int = 2) -> list[float]:
    """Readings 0.1, 0.2, ... (none of it this process), each one kept in the returned list."""
    read: list[float] = []

    def reader() -> Load:
        read.append(round(0.1 * (len(read) + 1), 1))
        return Load(read[-1], cores)

    monkeypatch.setattr(latency, "host_load", reader)
    return read


def _retimed_by(reference: nn.Module, slope: float, shift: float):  # noqa: ANN202 - a fake measurer
    """_macs_clock, but a module timed a second time measures `shift` ms slower."""
    clock, seen = _macs_clock(reference, slope), set()

    def measure(module: nn.Module) -> tuple[float, float]:
        before, after = clock(module)
        again = id(module) in seen
        seen.add(id(module))
        return before, after + (shift if again else 0.0)

    return measure


def test_each_trial_records_its_load_and_the_chosen_one_is_timed_again(monkeypatch) -> None:
    read = _rising_load(monkeypatch)
    model = coupled()
    lines: list[str] = []
    result = prune_module(
        model, SPECS, {}, _fast(ratio=0.3), say=lines.append, measure=_retimed_by(model, 0.7, 0.3)
    )
    lat = result.section.latency
    assert lat is not None and lat.cores == 2
    # One reading at the start (0.1: not busy), then two around each timing; the higher one is kept.
    assert [t.load_average for t in lat.trials] == read[2 : 2 * len(lat.trials) + 1 : 2]
    assert lat.retimed is not None and lat.retimed.load_average == read[-1]
    assert lat.retimed.flops_ratio == lat.flops_ratio
    assert lat.retimed.after_ms == pytest.approx(lat.after_ms + 0.3, abs=1e-3)
    assert lat.retimed.removed == pytest.approx(lat.removed - 0.03, abs=1e-3)  # agrees: kept
    assert any("timing the chosen trial" in line and "again" in line for line in lines)
    assert not any("busy" in note for note in result.notes)
    written = result.section.model_dump()["latency"]
    assert written["trials"][0]["load_average"] == lat.trials[0].load_average and written["cores"] == 2
    assert written["retimed"]["removed"] == lat.retimed.removed


def test_a_retiming_that_disagrees_refuses_with_the_load_and_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(latency, "host_load", lambda: Load(3.3, 2, 1.0))
    model = coupled()
    with pytest.raises(EdgeportError, match="two timings of the chosen trial disagree") as err:
        prune_module(model, SPECS, {}, _fast(ratio=0.3), measure=_retimed_by(model, 0.7, 2.0))
    line = str(err.value)
    assert "\n" not in line and "load 3.3 on 2 cores" in line
    assert line.endswith("Rerun on a quieter machine or use --prune-target flops.")


def test_a_busy_host_at_the_start_is_said_and_noted(monkeypatch) -> None:
    monkeypatch.setattr(latency, "host_load", lambda: Load(3.3, 2, 1.0))
    model = coupled()
    lines: list[str] = []
    result = prune_module(
        model, SPECS, {}, _fast(ratio=0.3), say=lines.append, measure=_macs_clock(model, 0.7)
    )
    busy = [note for note in result.notes if "busy host" in note]
    assert len(busy) == 1 and busy[0] in lines
    assert "load 3.3 on 2 cores, 2.3 of it other work" in busy[0] and "--prune-target flops" in busy[0]
    assert [t.load_average for t in result.section.latency.trials] == [3.3] * len(
        result.section.latency.trials
    )


def test_host_weighing_on_a_busy_host_is_said_and_noted(monkeypatch) -> None:
    """--prune-weigh host times layers too: a busy host at the start is a note naming the fix."""
    monkeypatch.setattr(latency, "host_load", lambda: Load(3.3, 2, 1.0))
    lines: list[str] = []
    result = prune_module(
        coupled(), SPECS, {}, _fast(ratio=0.3, target="flops", weigh="host"), say=lines.append
    )
    busy = [note for note in result.notes if "busy host" in note]
    assert len(busy) == 1 and busy[0] in lines
    assert busy[0].startswith("--prune-weigh host timed layers on a busy host (load 3.3 on 2 cores")
    assert busy[0].endswith("rerun on a quieter machine or use --prune-weigh macs")
    assert result.section.weigh == "host" and result.section.latency is None


class _FakeBench:
    """edgeport.bench.bench for HostLatency: medians in ms = the bytes each file holds, as a number."""

    def __init__(self) -> None:
        self.runs: list[list[Path]] = []

    def __call__(self, paths: list[Path], *_args: object, **_kwargs: object) -> object:
        from types import SimpleNamespace

        self.runs.append(list(paths))
        medians = [float(Path(p).read_bytes()) for p in paths]
        return SimpleNamespace(results=[SimpleNamespace(stats=SimpleNamespace(median=m)) for m in medians])


def test_the_host_timer_times_the_chosen_trials_file_again_without_converting_it(
    monkeypatch, quiet_host
) -> None:
    """The default measurer (HostLatency) with the real exporter's graphs, a fake conversion (the
    graph's MACs / 1e6 as the file) and a fake bench: the second timing reuses the trial's file."""
    import edgeport.bench
    from edgeport.pipeline.torch_passes import prune_exporter
    from edgeport.quant.prune.count import onnx_counts

    exporter, conversions = prune_exporter(), []

    class Exporter:
        graph = exporter.graph

        def float_tflite(self, graph: object) -> bytes:
            conversions.append(graph)
            return str(onnx_counts(graph)[0] / 1e6).encode()

    fake = _FakeBench()
    monkeypatch.setattr(edgeport.bench, "bench", fake)
    result = prune_module(coupled(), SPECS, {}, _fast(ratio=0.3), exporter=Exporter())
    lat = result.section.latency
    assert len(conversions) == 1 + len(lat.trials)  # the unpruned model and each trial, once
    assert len(fake.runs) == len(lat.trials) + 1
    chosen = [t.flops_ratio for t in lat.trials].index(lat.flops_ratio)
    assert fake.runs[-1] == fake.runs[chosen]  # the same two files, timed again
    assert lat.retimed.removed == lat.removed


def test_real_latency_target_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One real conversion per trial, timed on this host's LiteRT, the allocation weighed in real layer
    times: only the structure is asserted (a latency figure before and after, the ratio applied to the
    model), never a time."""
    monkeypatch.setattr(layer_latency, "time_shapes", REAL_LAYER_TIMES)
    from edgeport.manifest import Manifest
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.prune import PruningSection
    from tests.zoo import by_name

    zoo = by_name("resnet_basic")
    outdir = tmp_path / "o"
    # 15 % of the latency: far inside what cutting up to ~80 % of the MACs gives, whatever the load, so
    # the run cannot end unreachable on a busy machine (the search itself is tested above).
    prune = PruneOptions(
        ratio=0.15, target="latency", round_to=4, min_width=4, recovery="none", samples=16, held_out=8
    )
    options = ConvertOptions(
        source=f"{Path(__file__).resolve().parents[1] / 'zoo' / 'models.py'}:resnet_basic",
        outdir=outdir,
        input_shapes=zoo.input_shapes,
        prune=prune,
    )
    try:
        result = convert_model(options)
    except EdgeportError as err:  # a busy host's two timings need not repeat: the refusal is tested above
        if "two timings of the chosen trial disagree" in str(err):
            pytest.skip(f"this host's timing did not repeat itself: {err}")
        raise
    section = PruningSection.of(Manifest.read(outdir), str(outdir))
    lat = section.latency
    assert lat is not None and lat.before_ms > 0 and lat.after_ms > 0 and lat.trials
    assert lat.retimed is not None and lat.retimed.flops_ratio == lat.flops_ratio and lat.cores
    assert all(t.load_average is not None for t in [*lat.trials, lat.retimed])
    assert lat.flops_ratio in [t.flops_ratio for t in lat.trials]
    assert section.layer_shapes_timed
    assert section.after.macs < section.before.macs  # the chosen ratio was applied
    assert section.after.onnx_macs == section.after.macs
    assert "host LiteRT latency" in result.summary().splitlines()[0]


def test_host_load_reads_psutils_load_average_which_windows_has_too(monkeypatch):
    # os.getloadavg does not exist on Windows; psutil's does on every OS the tool runs on.
    import psutil

    monkeypatch.setattr(psutil, "getloadavg", lambda: (1.5, 1.0, 0.5))
    load = latency.host_load()
    assert load.average == 1.5
    assert load.cores == (os.cpu_count() or 1)
    assert 0.0 <= load.own <= load.cores
