"""--prune-target latency: the FLOPs-ratio search against injected measurers (pure, no timing), the
prune with a fake measurer, and one real run (conversion + host LiteRT) asserting only structure."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch.nn as nn

from edgeport.errors import EdgeportError
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.quant.prune.count import module_macs
from edgeport.quant.prune.latency import TOLERANCE, Trial, next_guess, search
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
)


def _linear(slope: float, cap: float = 1.0):  # noqa: ANN202 - a measurer
    """Latency removed = slope x FLOPs removed, never more than `cap`; 10 ms unpruned."""
    calls: list[float] = []

    def measure(ratio: float) -> Trial:
        calls.append(ratio)
        removed = min(cap, slope * ratio)
        return Trial(ratio, removed, 10.0, 10.0 * (1 - removed))

    return measure, calls


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
    """A noisy measurer that keeps missing: never more than four conversions, the last at the end."""
    answers = iter([0.2, 0.25, 0.26, 0.5])
    calls: list[float] = []

    def measure(ratio: float) -> Trial:
        calls.append(ratio)
        return Trial(ratio, next(answers), 10.0, 5.0)

    found = search(0.3, measure, reachable=0.9)
    assert calls == pytest.approx([0.3, 0.45, 0.6, 0.9])  # secant, secant, then the end
    assert found.best().flops_ratio == 0.9


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


def test_latency_target_prunes_to_the_measured_goal_and_records_the_search() -> None:
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


def test_an_unreachable_latency_says_the_most_measured() -> None:
    model = coupled()
    with pytest.raises(
        EdgeportError, match=r"--prune 0\.9 of the latency cannot be reached: at most 0\.\d\d"
    ) as err:
        prune_module(model, SPECS, {}, _fast(ratio=0.9), measure=_macs_clock(model, 0.5))
    assert "\n" not in str(err.value) and "Use --prune 0." in str(err.value)


def test_real_latency_target_end_to_end(tmp_path: Path) -> None:
    """One real conversion per trial, timed on this host's LiteRT: only the structure is asserted
    (a latency figure before and after, the ratio applied to the model), never a time."""
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
    result = convert_model(
        ConvertOptions(
            source=f"{Path(__file__).resolve().parents[1] / 'zoo' / 'models.py'}:resnet_basic",
            outdir=outdir,
            input_shapes=zoo.input_shapes,
            prune=prune,
        )
    )
    section = PruningSection.of(Manifest.read(outdir), str(outdir))
    lat = section.latency
    assert lat is not None and lat.before_ms > 0 and lat.after_ms > 0 and lat.trials
    assert lat.flops_ratio in [t.flops_ratio for t in lat.trials]
    assert section.after.macs < section.before.macs  # the chosen ratio was applied
    assert section.after.onnx_macs == section.after.macs
    assert "host LiteRT latency" in result.summary().splitlines()[0]
