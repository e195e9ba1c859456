"""quant/prune/recover.py: recovery is deterministic with a seed, the batches it trains on, and
data-aware recovery (--finetune-data): labelled as such everywhere, bad data refused before any work."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import DISTILL_STEPS
from edgeport.quant.cost import ELEMENT_WEIGHT
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.quant.prune import prune as prune_mod
from edgeport.quant.prune.options import SYNTHETIC_STEPS
from edgeport.quant.prune.recover import (
    KEEP_MARGIN_DB,
    MAX_POOL,
    MIN_POOL,
    POOL_ROUND,
    POOL_SHARE,
    STEP_SHARE,
    _batch,
    _shift_flip,
    distill,
    distillation_loss,
    kept_stage,
    module_work,
    pool_plan,
    step_seconds,
)
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    one_torch_thread,  # noqa: F401 (autouse fixture)
    random_batch,
)

SPECS = [TensorSpec("x", INPUT_SHAPE)]


def _options(**over: object) -> PruneOptions:
    values = {"ratio": 0.4, "round_to": 2, "min_width": 2, "samples": 16, "held_out": 8, "max_steps": 12}
    return PruneOptions.model_validate({**values, **over})


def _pruned() -> tuple[torch.nn.Module, torch.nn.Module]:
    model = coupled()
    return model, prune_module(model, SPECS, {}, _options(recovery="none")).module


def test_recovery_is_deterministic_with_a_seed() -> None:
    model, student = _pruned()
    pool = random_batch(32, seed=2)
    a, b, c = copy.deepcopy(student), copy.deepcopy(student), copy.deepcopy(student)
    log_a = distill(a, model, [pool], steps=20, seed=5)
    log_b = distill(b, model, [pool], steps=20, seed=5)
    distill(c, model, [pool], steps=20, seed=6)
    assert log_a.loss_end == log_b.loss_end
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters(), strict=True))


def test_recovery_lowers_the_loss_on_held_out_inputs() -> None:
    model, student = _pruned()
    held = random_batch(16, seed=3)
    before = distillation_loss(student, model, [held])
    distill(student, model, [random_batch(32, seed=2)], steps=60, seed=0)
    assert distillation_loss(student, model, [held]) < 0.7 * before


def test_shift_flip_keeps_shape_and_content_and_moves_pixels() -> None:
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16) + 1
    gen = torch.Generator().manual_seed(0)
    moved = torch.cat([_shift_flip(x, gen) for _ in range(8)])
    assert moved.shape == (16, 3, 16, 16)
    assert not torch.equal(moved[:2], x) or not torch.equal(moved[2:4], x)
    # Every value is one of the image's own or the zero fill.
    assert set(moved.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_batches_leave_non_image_inputs_unshifted() -> None:
    vectors = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    ids = torch.arange(8)
    out_v, out_i = _batch([vectors, ids], torch.Generator().manual_seed(1), 16, augment=True)
    assert out_v.shape == (16, 6) and out_i.shape == (16,)
    assert set(out_i.tolist()) <= set(ids.tolist())


def _save(path: Path, array: np.ndarray) -> Path:
    np.savez(path, x=array)
    return path


def test_finetune_data_is_labelled_data_aware(tmp_path: Path) -> None:
    data = _save(tmp_path / "inputs.npz", random_batch(24, seed=7).numpy())
    result = prune_module(coupled(), SPECS, {}, _options(finetune_data=data))
    rec = result.section.recovery
    assert rec.method == "distill" and not rec.data_free and rec.steps == 12
    assert "data-aware" in (rec.inputs or "") and "inputs.npz" in (rec.inputs or "")
    # 24 inputs, more than the 16 of the synthetic pool: the user's alone.
    assert "the user's 24 inputs" in (rec.inputs or "") and "distillation" not in (rec.inputs or "")
    assert "(data-aware)" in result.section.describe()
    free = prune_module(coupled(), SPECS, {}, _options()).section
    assert free.recovery.data_free and "data-aware" not in free.describe()


@pytest.mark.parametrize("given, trained_on", [(6, 6 + 16), (16, 16), (24, 24)])
def test_few_finetune_inputs_train_beside_the_synthetic_pool(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: int, trained_on: int
) -> None:
    """Fewer user inputs than the synthetic pool holds (16 here) are mixed into it; as many or more
    train alone, with the whole budget for steps."""
    user = random_batch(given, seed=7)
    data = _save(tmp_path / "inputs.npz", user.numpy())
    seen: list[torch.Tensor] = []

    def recording(student, teacher, pool, steps, *args, **kw):  # noqa: ANN001, ANN202 - a stand-in
        seen.append(pool[0])
        return distill(student, teacher, pool, steps, *args, **kw)

    monkeypatch.setattr(prune_mod, "distill", recording)
    rec = prune_module(coupled(), SPECS, {}, _options(finetune_data=data)).section.recovery
    (pool,) = seen
    assert pool.shape[0] == trained_on
    assert torch.equal(pool[:given], user)  # the user's inputs, unchanged, first
    mixed = "and 16 inputs by BatchNorm-statistics distillation" in (rec.inputs or "")
    assert mixed == (given < 16), rec.inputs
    assert not rec.data_free and f"the user's {given} inputs" in (rec.inputs or "")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing", "does not exist"),
        ("shape", "has shape (4, 3, 9, 9)"),
        ("nan", "NaN"),
        ("no_recovery", "--prune-recovery none"),
    ],
)
def test_bad_finetune_data_is_one_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, expected: str
) -> None:
    good = random_batch(8, seed=1).numpy()
    path = {
        "missing": tmp_path / "absent.npz",
        "shape": _save(tmp_path / "shape.npz", np.zeros((4, 3, 9, 9), np.float32)),
        "nan": _save(tmp_path / "nan.npz", np.where(good > 1, np.nan, good).astype(np.float32)),
        "no_recovery": _save(tmp_path / "good.npz", good),
    }[case]

    def no_work(*_args: object, **_kw: object) -> None:
        raise AssertionError("pruning started before the data was checked")

    monkeypatch.setattr(prune_mod, "analyze", no_work)
    over = {"recovery": "none"} if case == "no_recovery" else {}
    with pytest.raises(EdgeportError) as info:
        prune_module(coupled(), SPECS, {}, _options(finetune_data=path, **over))
    text = str(info.value)
    assert expected in text and "--finetune-data" in text
    assert "\n" not in info.value.problem


def test_finetune_data_is_read_once_and_refused_in_its_own_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """finetune_inputs checks and loads the file in one read; sample counts that differ between inputs
    beyond --calibration's 1000-sample check are refused under --finetune-data's name, not half-loaded."""
    from edgeport.quant import calibration
    from edgeport.quant.prune.recover import finetune_inputs

    reads: list[Path] = []
    real = calibration._arrays_in

    def counted(path: Path) -> object:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(calibration, "_arrays_in", counted)
    specs = [TensorSpec("a", [1, 3]), TensorSpec("b", [1, 2])]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1200, 3)).astype(np.float32), rng.normal(size=(1200, 2)).astype(np.float32)
    good = tmp_path / "good.npz"
    np.savez(good, a=a, b=b)
    loaded = finetune_inputs(good, specs)
    assert len(reads) == 1
    assert torch.equal(loaded[0], torch.from_numpy(a)) and torch.equal(loaded[1], torch.from_numpy(b))

    uneven = tmp_path / "uneven.npz"
    np.savez(uneven, a=a, b=b[:1100])
    with pytest.raises(EdgeportError) as info:
        finetune_inputs(uneven, specs)
    assert str(info.value.problem).startswith("--finetune-data gives different sample counts per input")
    assert "calibration data" not in str(info.value.problem)


def test_a_pool_larger_than_one_chunk_is_made_in_seeded_chunks() -> None:
    from edgeport.quant.prune.prune import SYNTHETIC_CHUNK, synthetic_inputs

    model = coupled()
    count = SYNTHETIC_CHUNK + 3
    pool, held, how, _notes = synthetic_inputs(model, SPECS, {}, count, 4, seed=0)
    again, _, _, _ = synthetic_inputs(model, SPECS, {}, count, 4, seed=0)
    assert pool[0].shape[0] == count and held[0].shape[0] == 4 and "BatchNorm" in how
    assert torch.equal(pool[0], again[0])
    # The second chunk is not a copy of the first.
    assert not torch.allclose(pool[0][SYNTHETIC_CHUNK:], pool[0][:3])


def test_module_work_counts_the_macs_and_every_leaf_output_per_sample() -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU()).eval()
    macs = 8 * 8 * 4 * (3 * 3 * 3)  # each of the 4x8x8 outputs reads 3 channels x 3x3
    elements = 2 * 4 * 8 * 8  # the convolution's output and the ReLU's
    for n in (1, 5):  # per sample, whatever the batch
        assert module_work(model, [random_batch(n, shape=(1, 3, 8, 8))], macs) == (
            macs + ELEMENT_WEIGHT * elements,
            2,
        )


def test_the_pool_grows_with_the_budget_in_whole_rounds_within_its_bounds() -> None:
    model = coupled()
    plans = [pool_plan(model, SPECS, 1e-4 * 1.25**i, held=8) for i in range(80)]
    sizes = [p.count for p in plans]
    assert sizes == sorted(sizes) and sizes[0] == MIN_POOL and sizes[-1] == MAX_POOL
    assert set(sizes) == set(range(MIN_POOL, MAX_POOL + 1, POOL_ROUND))  # every size in between on the way
    # A model four times wider costs more per synthetic input: no larger a pool for the same budget.
    wide = coupled(width=64)
    assert all(pool_plan(wide, SPECS, 1e-4 * 1.25**i, 8).count <= n for i, n in enumerate(sizes))
    assert any(pool_plan(wide, SPECS, 1e-4 * 1.25**i, 8).count < n for i, n in enumerate(sizes))


def test_a_budget_too_small_for_the_smallest_pool_makes_it_in_fewer_steps() -> None:
    model = coupled()
    plans = [pool_plan(model, SPECS, 1e-4 * 1.25**i, held=8) for i in range(80)]
    steps = [p.steps for p in plans]
    assert steps == sorted(steps) and steps[0] == DISTILL_STEPS and steps[-1] == SYNTHETIC_STEPS
    # Fewer steps only where even the smallest pool at full steps is over the pool's share.
    for budget, plan in zip((1e-4 * 1.25**i for i in range(80)), plans, strict=True):
        if plan.steps < SYNTHETIC_STEPS:
            assert plan.count == MIN_POOL
        if DISTILL_STEPS < plan.steps:
            assert plan.seconds <= POOL_SHARE * budget * (1 + 1e-9)
    # The seconds are the modelled cost of every input made, held-out ones too: linear in both.
    plan = plans[-1]
    again = pool_plan(model, SPECS, 1.0, held=8, count=plan.count // 2, steps=plan.steps // 2)
    assert (again.count, again.steps) == (plan.count // 2, plan.steps // 2)  # given: kept
    per = plan.seconds / (plan.steps * (plan.count + 8))
    assert again.seconds == pytest.approx(per * again.steps * (again.count + 8))


def test_a_model_of_almost_no_work_gets_the_largest_pool_in_full_steps() -> None:
    # No MACs (a model of none at all, tests/zoo's einsum, is test_prune_zoo's).
    nothing = torch.nn.Sequential(torch.nn.Identity()).eval()
    plan = pool_plan(nothing, SPECS, 600.0, held=8)
    assert (plan.count, plan.steps) == (MAX_POOL, SYNTHETIC_STEPS) and plan.seconds < 1.0


def test_the_steps_get_what_the_pool_leaves_and_at_least_their_share() -> None:
    model = coupled()
    plan = pool_plan(model, SPECS, 0.01, held=8)
    assert step_seconds(0.01, plan) == pytest.approx(max(0.01 - plan.seconds, STEP_SHARE * 0.01))
    assert step_seconds(0.01, None) == 0.01  # no synthetic pool (the user's data): the whole budget
    costly = pool_plan(model, SPECS, 1e-6, held=8)  # the smallest pool costs more than the budget
    assert costly.seconds > 1e-6 and step_seconds(1e-6, costly) == pytest.approx(STEP_SHARE * 1e-6)


def test_a_pool_made_without_distillation_leaves_the_steps_the_whole_budget() -> None:
    # No BatchNorm: the synthetic inputs are input-statistics noise, made at once; the budget's line
    # says nothing of a pool's time (a distilled pool's is test_prune_speed's).
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 8, 3, padding=1)
    ).eval()
    said: list[str] = []
    options = _options(recovery="distill", max_steps=2, budget=600)
    prune_module(model, SPECS, {}, options, say=said.append)
    assert "recovery: 2 distillation steps (--prune-budget 600)" in said, said


def test_the_latest_stage_within_the_margin_of_the_best_is_kept() -> None:
    assert kept_stage([3.0, 12.0, 14.0]) == 2  # each stage better: distillation's model
    assert kept_stage([34.2, 5.7, -113.1]) == 0  # both lowered it: the cut's
    assert kept_stage([3.0, 12.0, 9.0]) == 1
    assert kept_stage([3.0, 12.0, 12.0 - 0.9 * KEEP_MARGIN_DB]) == 2  # within the margin: not a loss
    assert kept_stage([None, 40.0, 50.0]) == 0  # None: identical to the unpruned model


def test_a_recovery_that_lowers_the_fidelity_is_not_kept() -> None:
    """Outputs a thousandth of the usual scale (as a random-weight torchvision classifier's logits are):
    Adam's first steps move the bias by about the learning rate, far more than the outputs, so
    distillation lowers the SQNR and the model before it is kept, with a note."""
    model = coupled()
    with torch.no_grad():
        model.fc.weight.mul_(1e-4)
        model.fc.bias.mul_(1e-4)
    result = prune_module(model, SPECS, {}, _options(max_steps=3))
    section = result.section
    assert section.recovery.kept in ("the cut", "least squares")
    assert section.fidelity.sqnr_db >= section.fidelity.sqnr_db_before_recovery
    assert any("lowered the pruned model's SQNR on held-out synthetic inputs" in n for n in result.notes)
    assert "(not kept: " in section.describe()
    normal = prune_module(coupled(), SPECS, {}, _options(max_steps=100)).section
    assert normal.recovery.kept == "distillation"


def test_a_module_caching_a_parameter_in_eval_recovers_and_its_cache_follows_the_parameter() -> None:
    """timm's LeViT-128S failed in recovery ('Trying to backward through the graph a second time'): its
    attention-bias cache, empty when distillation began, kept the first step's graph."""
    from tests.quant.test_prune_outside_patterns import CachedBiasNet

    torch.manual_seed(0)
    teacher = CachedBiasNet().eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        student.patch.weight.mul_(0.9)  # something to recover
    attn = student.attn
    attn.attention_bias_cache.clear()
    start = attn.attention_biases.detach().clone()
    distill(student, teacher, [random_batch(16, seed=2, shape=(1, 3, 16, 16))], steps=5, seed=0)
    assert not torch.equal(attn.attention_biases.detach(), start)  # the cached parameter learnt too
    x = random_batch(2, seed=4, shape=(1, 3, 16, 16))
    with torch.no_grad():
        served = student(x)
        gathered = attn.attention_biases[:, attn.attention_bias_idxs]
        assert torch.equal(attn.attention_bias_cache["cpu"], gathered)
    attn.attention_bias_cache.clear()
    with torch.no_grad():
        assert torch.equal(student(x), served)


def test_forgotten_caches_lose_what_carries_a_graph_and_keep_the_rest() -> None:
    from edgeport.quant.prune.graph import detach_caches

    m = torch.nn.Linear(2, 2)
    graph = m.weight * 2
    m.cache = {"with_graph": graph, "constant": torch.ones(2)}
    m.last = m.weight + 1
    detach_caches(m, forget=True)
    assert list(m.cache) == ["constant"]
    assert m.last.grad_fn is None and torch.equal(m.last, m.weight.detach() + 1)
