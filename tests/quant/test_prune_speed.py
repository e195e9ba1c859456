"""Pruning's analysis does less work without changing its result: the analysis makes only the first chunk
of synthetic inputs (the only one it reads), recovery the others once the cut is made, and the pruned
weights stay bit-identical to pruning on the whole pool made first; every phase is named in the
progress, with counts."""

from __future__ import annotations

import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.quant.prune import prune as prune_mod
from edgeport.quant.prune.prune import (
    SENSITIVITY_POINTS,
    SYNTHETIC_CHUNK,
    measured_removals,
    synthetic_count,
    synthetic_inputs,
)
from edgeport.quant.prune.recover import PoolPlan
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import coupled, fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import ENTRIES

ZOO = {e.id: e for e in ENTRIES}
CHUNK = 16  # a small distillation chunk keeps the test fast; three chunks make the whole pool
OPTIONS = fast_options(round_to=4, min_width=4, samples=3 * CHUNK, seed=3)


def _specs(entry_id: str) -> list[TensorSpec]:
    return [TensorSpec(f"input_{i}", s) for i, s in enumerate(ZOO[entry_id].model.input_shapes)]


@pytest.mark.parametrize("entry_id", ["core/resnet_basic", "core/mobilenet_v2"])
def test_pruned_weights_are_bit_identical_to_pruning_on_the_whole_pool(entry_id: str, monkeypatch) -> None:
    monkeypatch.setattr(prune_mod, "SYNTHETIC_CHUNK", CHUNK)
    specs = _specs(entry_id)
    reference = ZOO[entry_id].model.build().eval()
    # What pruning made before: the whole pool (every chunk), whatever the recovery.
    whole = synthetic_inputs(
        reference, specs, {}, OPTIONS.samples, OPTIONS.held_out, OPTIONS.seed, steps=OPTIONS.synthetic_steps
    )
    assert whole[0][0].shape[0] == 3 * CHUNK
    before = prune_module(reference, specs, {}, OPTIONS, synthetic=whole)
    made: list[str] = []
    after = prune_module(reference, specs, {}, OPTIONS, say=made.append)
    assert [m for m in made if m.startswith("analysis: synthetic inputs")] == [
        "analysis: synthetic inputs, 16 in one chunk (1/1)"
    ]
    a, b = before.module.state_dict(), after.module.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert before.section.groups == after.section.groups
    assert before.section.fidelity == after.section.fidelity


def test_recovery_makes_the_rest_of_the_pool_after_the_cut_the_same_as_made_first(monkeypatch) -> None:
    monkeypatch.setattr(prune_mod, "SYNTHETIC_CHUNK", CHUNK)
    specs = _specs("core/resnet_basic")
    reference = ZOO["core/resnet_basic"].model.build().eval()
    options = OPTIONS.model_copy(update={"recovery": "distill", "max_steps": 3})
    whole = synthetic_inputs(
        reference, specs, {}, options.samples, options.held_out, options.seed, steps=options.synthetic_steps
    )
    before = prune_module(reference, specs, {}, options, synthetic=whole)
    said: list[str] = []
    after = prune_module(reference, specs, {}, options, say=said.append)
    made = [s for s in said if "synthetic inputs, 48 in 3 chunks" in s]
    assert made == [
        "analysis: synthetic inputs, 48 in 3 chunks (1/3)",
        "recovery: synthetic inputs, 48 in 3 chunks (2/3)",
        "recovery: synthetic inputs, 48 in 3 chunks (3/3)",
    ]
    # The rest of the pool comes after the analysis and the cut, before the least squares.
    assert said.index(made[1]) > max(i for i, s in enumerate(said) if s.startswith("analysis:"))
    assert said.index(made[2]) < said.index("recovery: least-squares reconstruction, layer by layer")
    a, b = before.module.state_dict(), after.module.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert before.section.recovery == after.section.recovery.model_copy(
        update={"seconds": before.section.recovery.seconds}
    )
    assert "48 inputs by BatchNorm-statistics distillation" in after.section.recovery.inputs


def test_an_unreachable_ratio_is_refused_before_recovery_makes_its_inputs(monkeypatch) -> None:
    monkeypatch.setattr(prune_mod, "SYNTHETIC_CHUNK", CHUNK)
    specs = _specs("core/resnet_basic")
    reference = ZOO["core/resnet_basic"].model.build().eval()
    said: list[str] = []
    options = OPTIONS.model_copy(update={"recovery": "distill", "ratio": 0.99})
    with pytest.raises(EdgeportError, match="cannot"):
        prune_module(reference, specs, {}, options, say=said.append)
    made = [s for s in said if ": synthetic inputs, " in s]
    assert made == ["analysis: synthetic inputs, 48 in 3 chunks (1/3)"]


def test_the_phases_are_named_with_counts() -> None:
    specs = [TensorSpec("x", (1, 3, 8, 8))]
    options = PruneOptions(
        ratio=0.3, round_to=4, min_width=4, samples=16, held_out=4, max_steps=2, budget=600, seed=0
    )
    said: list[str] = []
    prune_module(coupled(), specs, {}, options, say=said.append)
    text = "\n".join(said)
    assert "analysis: synthetic inputs, 16 in one chunk (1/1)" in said
    assert "analysis: verifying " in text
    verified = [s for s in said if s.endswith("kept whole") and "channel groups verified" in s]
    assert len(verified) == 1
    groups = int(verified[0].split()[1])
    assert groups > 0
    assert f"analysis: sensitivities, group 1/{groups} (0/" in text
    assert f"analysis: sensitivities, group {groups}/{groups} (" in text
    assert any(
        s.startswith("recovery: 2 distillation steps (--prune-budget 600: about ")
        and s.endswith(" s of it making 16 synthetic inputs, the rest for steps)")
        for s in said
    ), said
    assert any(s.startswith("recovery: step 2/2, loss ") for s in said)
    # In order: analysis, then recovery.
    first_recovery = next(i for i, s in enumerate(said) if s.startswith("recovery:"))
    assert all(not s.startswith("recovery:") for s in said[:first_recovery])
    assert all(not s.startswith("analysis:") for s in said[first_recovery:])


def test_synthetic_count_makes_the_whole_pool_only_for_distillation() -> None:
    plan = PoolPlan(count=256, steps=200, seconds=1.0)
    assert synthetic_count(PruneOptions(ratio=0.3), plan) == 256
    assert synthetic_count(PruneOptions(ratio=0.3, recovery="none"), plan) == SYNTHETIC_CHUNK
    assert synthetic_count(PruneOptions(ratio=0.3, samples=40, recovery="none"), plan) == 40
    # The user's --finetune-data inputs: fewer than the pool train beside it, as many replace it.
    assert synthetic_count(PruneOptions(ratio=0.3), plan, user_samples=255) == 256
    assert synthetic_count(PruneOptions(ratio=0.3), plan, user_samples=256) == SYNTHETIC_CHUNK


def test_measured_removals_spread_at_most_the_sensitivity_points() -> None:
    assert measured_removals(8, [8, 4]) == [0, 4]
    many = measured_removals(64, list(range(64, 0, -8)))
    assert many[0] == 0 and len(many) == SENSITIVITY_POINTS + 1
    assert many[1] == 8 and many[-1] == 56
