"""Recovery: the layers that read pruned channels are first re-solved by least squares (reconstruct.py,
closed form), then the pruned model learns the unpruned one's outputs and intermediate features, seeded,
for a step count fixed from the budget before the first step. Data-free, on synthetic inputs (made by
quant/calibration.py from the model's BatchNorm statistics); data-aware with --finetune-data, on the
user's own inputs (no labels: the unpruned model is the teacher).

Loss: mean squared error of each output and of each intermediate feature both models still share in
shape (up to MAX_FEATURES of them, spread over the depth), each divided by the unpruned model's mean
square of that tensor so every term weighs alike. Logit matching by MSE rather than KL: it needs no
temperature, applies to regression outputs unchanged, and KL at T=4 recovered less (ResNet-20 below).
Batches are half inputs as made, half mixtures of two (the teacher labels any input, so mixtures add
variety at no cost), and image inputs are shifted by up to 1/8 of their size and mirrored: a pool of
a few hundred synthetic images is otherwise learnt by heart. BatchNorm statistics stay frozen:
synthetic batches are not real ones (re-estimating them on the synthetic pool after the least squares
scored lower: 66.1 against 68.6 % on ResNet-20's images 500-2499).

Measured on ResNet-20 pruned by 40 % of its FLOPs (red), 600 steps, CIFAR-10 test images 500-1499
(float 77.1 %; two standard errors of a difference about 2 points): 128 synthetic inputs 72.8 %,
shifted/mirrored 73.9 %; shifted/mirrored with 256 inputs 73.9 %, 512 73.6 %, 1024 75.7 % (without
shift/mirror 73.7 %; KL at T=4 instead of MSE 73.1 %). Images 500-1499 understate the gap: the same
recipe (256 inputs, shifted/mirrored, 558 steps) scores 73.2 / 66.0 / 79.1 % on images 500-1499 /
1500-4999 / 5000-9999 against the float model's 77.1 / 76.1 / 85.9 %.

The budget pays for the synthetic pool and the steps (pool_plan): making an input costs its distillation
steps' forward/backward passes of the unpruned model, so the pool's size, and where even the smallest pool
would take most of the budget its steps, follow the model's cost. Measurements: README, "Recovery".
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import (
    CALIBRATION_FIX,
    DISTILL_STEPS,
    MIN_IMAGE_SIDE,
    read_calibration,
)
from edgeport.quant.cost import DISTILL_BUDGET, batch_work, steps_within, work
from edgeport.quant.prune.count import forward_with_hooks, module_macs
from edgeport.quant.prune.graph import detach_caches, flat_outputs
from edgeport.quant.prune.options import SYNTHETIC_STEPS
from edgeport.quant.prune.reconstruct import Kept, corresponds, to_student
from edgeport.tensors import TensorSpec

BATCH = 32
LR = 1e-3
# The learning rate rises over the first tenth of the steps: Adam's first steps at the full rate move
# every weight by about LR, which undoes much of what the least-squares reconstruction found.
WARMUP = 0.1
MAX_FEATURES = 8
# Work (MAC units, quant/cost.py) per second on 2 shared cores: quant/cost.py's distillation budget
# is what 12 s bought there. A training step of one sample (the teacher's forward, the student's
# forward and backward) costs TRAIN_FACTOR times that sample's work, measured on 2 cores (torch's 2
# threads): at 1.1, ResNet-56's steps at the default budget took 0.27-0.28 s each against 0.43 s
# modelled (bench rows of sessions 16-17), so 2 minutes of the 15 went unspent. At 0.8 they take
# 75-90 % of the modelled time, and ResNet-20's (0.113 s each, 4000 steps in 453 s) 6 % more.
WORK_PER_SECOND = DISTILL_BUDGET / 12
TRAIN_FACTOR = 0.8
MAX_STEPS = 4000  # a small model stops here (ResNet-20 at the default budget, about where it ends)
# The budget pays for the synthetic pool first: up to POOL_SHARE of it, as many inputs as fit in whole
# POOL_ROUNDs between MIN_POOL and MAX_POOL, each made in options.SYNTHETIC_STEPS of BatchNorm-statistics
# distillation (fewer, down to calibration's DISTILL_STEPS, where MIN_POOL inputs would not fit); the
# distillation steps get the rest, and never less than STEP_SHARE of the budget.
POOL_SHARE = 0.6
STEP_SHARE = 0.25
POOL_ROUND = 256
MIN_POOL = 256
MAX_POOL = 1024
# A distillation step of one synthetic input (its forward and the backward to the input) costs this many
# times its forward work, measured: ResNet-56, 132 inputs x 200 steps in 228 s on 2 quiet cores.
SYNTHETIC_FACTOR = 1.8

Progress = Callable[[int, int, float], None]  # (step done, steps, loss)


@dataclass
class RecoveryLog:
    steps: int
    seconds: float
    loss_start: float
    loss_end: float


def _leafflat_outputs(module: nn.Module, inputs: Sequence[torch.Tensor]) -> tuple[int, int]:
    """(activation elements per sample, leaf module calls) of one forward."""
    elements, calls = [0], [0]
    batch = max(1, int(inputs[0].shape[0]))

    def hook(_m: nn.Module, _a: tuple, out: object) -> None:
        calls[0] += 1
        if isinstance(out, torch.Tensor):
            elements[0] += out.numel() // batch

    forward_with_hooks(module, inputs, ((m, hook) for m in module.modules() if not list(m.children())))
    return elements[0], calls[0]


def module_work(module: nn.Module, inputs: Sequence[torch.Tensor], macs: int) -> tuple[int, int]:
    """(one sample's forward work in MAC units, quant/cost.py's `work`; leaf module calls) of `module` on
    `inputs`, `macs` being its MACs per sample."""
    elements, calls = _leafflat_outputs(module, inputs)
    return work(macs, elements), calls


def steps_for_budget(
    module: nn.Module, inputs: Sequence[torch.Tensor], macs: int, seconds: float, batch: int = BATCH
) -> int:
    """Steps whose estimated work fits `seconds` on 2 cores (at most MAX_STEPS)."""
    per_sample, ops = module_work(module, inputs, macs)
    per_step = TRAIN_FACTOR * batch_work(per_sample, ops, batch)
    return steps_within(seconds * WORK_PER_SECOND, per_step, MAX_STEPS)


@dataclass(frozen=True)
class PoolPlan:
    """The synthetic inputs recovery trains on: how many, made in how many distillation steps each, and
    the modelled seconds (2 cores) making them and the held-out inputs costs."""

    count: int
    steps: int
    seconds: float


def pool_plan(
    module: nn.Module,
    specs: Sequence[TensorSpec],
    budget: float,
    held: int,
    count: int | None = None,
    steps: int | None = None,
) -> PoolPlan:
    """What the recovery `budget` (seconds, 2 cores) buys of synthetic inputs for `module` (unpruned),
    besides `held` held-out ones; `count` / `steps` given are kept."""
    inputs = [torch.zeros([1, *s.shape[1:]], dtype=getattr(torch, s.dtype)) for s in specs]
    per_sample, _ops = module_work(module, inputs, sum(module_macs(module, inputs).values()))
    # Seconds per input and step (a model of no counted work, e.g. einsum only: one unit).
    per_step = SYNTHETIC_FACTOR * max(1, per_sample) / WORK_PER_SECOND
    share = POOL_SHARE * budget
    if steps is None:
        fits = int(share / (per_step * ((count or MIN_POOL) + held)))
        steps = min(SYNTHETIC_STEPS, max(DISTILL_STEPS, fits))
    if count is None:
        fits = share / (per_step * steps) - held
        count = int(min(MAX_POOL, max(MIN_POOL, fits // POOL_ROUND * POOL_ROUND)))
    return PoolPlan(count, steps, per_step * steps * (count + held))


def step_seconds(budget: float, pool: PoolPlan | None) -> float:
    """What of the recovery `budget` the distillation steps get once `pool` is made (None: no pool)."""
    return budget if pool is None else max(budget - pool.seconds, STEP_SHARE * budget)


def shared_features(
    student: nn.Module, teacher: nn.Module, inputs: Sequence[torch.Tensor], kept: Kept | None = None
) -> list[str]:
    """Modules (by name) whose output has the same shape in both models (or the teacher's cut to
    `kept[name]`, a narrowed module's channels), spread over the depth."""
    kept = kept or {}
    shapes: dict[str, dict[str, tuple[int, ...]]] = {"s": {}, "t": {}}
    order: list[str] = []

    def record(which: str, name: str):  # noqa: ANN202 - a forward hook
        def hook(_m: nn.Module, _a: tuple, out: object) -> None:
            if isinstance(out, torch.Tensor) and name not in shapes[which]:
                shapes[which][name] = tuple(out.shape)
                if which == "t":
                    order.append(name)

        return hook

    handles = []
    for which, model in (("s", student), ("t", teacher)):
        handles += [m.register_forward_hook(record(which, n)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            student(*inputs)
            teacher(*inputs)
    finally:
        for h in handles:
            h.remove()
    leaves = {n for n, m in teacher.named_modules() if not list(m.children())}
    # A narrowed layer's own output (an inner conv's) is not matched: only what a block hands on (a
    # narrowed stream) is, so a cut that leaves the stream whole matches the features it did without a map.
    same = [
        n
        for n in order
        if n in shapes["s"]
        and (
            shapes["s"][n] == shapes["t"][n]
            or (n not in leaves and corresponds(shapes["s"][n], shapes["t"][n], kept.get(n)))
        )
    ]
    if len(same) <= MAX_FEATURES:
        return same
    pick = [same[round(i * (len(same) - 1) / (MAX_FEATURES - 1))] for i in range(MAX_FEATURES)]
    return list(dict.fromkeys(pick))


class _Capture:
    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.values: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name: str):  # noqa: ANN202 - a forward hook
        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
            self.values[name] = out

        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def _loss(
    student_out: list[torch.Tensor],
    teacher_out: list[torch.Tensor],
    s_feat: dict[str, torch.Tensor],
    t_feat: dict[str, torch.Tensor],
    kept: Kept | None = None,
) -> torch.Tensor:
    terms = [
        ((s - t) ** 2).mean() / (t**2).mean().clamp_min(1e-12)
        for s, t in zip(student_out, teacher_out, strict=True)
    ]
    kept = kept or {}
    theirs = {n: to_student(t, s_feat[n].shape, kept.get(n)) for n, t in t_feat.items()}
    features = [((s_feat[n] - t) ** 2).mean() / (t**2).mean().clamp_min(1e-12) for n, t in theirs.items()]
    total = torch.stack(terms).mean()
    return total + torch.stack(features).mean() if features else total


def _shift_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image of an NCHW batch mirrored left-right with probability 1/2 and shifted by up to 1/8
    of its size, zero-filled."""
    size, _, height, width = x.shape
    flip = torch.rand(size, generator=gen) < 0.5
    x = torch.where(flip.reshape(-1, 1, 1, 1), x.flip(3), x)
    ph, pw = max(1, height // 8), max(1, width // 8)
    padded = torch.nn.functional.pad(x, (pw, pw, ph, ph))
    dy = torch.randint(2 * ph + 1, (size,), generator=gen).tolist()
    dx = torch.randint(2 * pw + 1, (size,), generator=gen).tolist()
    return torch.stack(
        [padded[i, :, y : y + height, z : z + width] for i, (y, z) in enumerate(zip(dy, dx, strict=True))]
    )


def _is_image(x: torch.Tensor) -> bool:
    return x.is_floating_point() and x.dim() == 4 and min(x.shape[2:]) >= MIN_IMAGE_SIDE


def _batch(
    pool: Sequence[torch.Tensor], gen: torch.Generator, size: int, augment: bool = False
) -> list[torch.Tensor]:
    n = int(pool[0].shape[0])
    first = torch.randint(n, (size,), generator=gen)
    second = torch.randint(n, (size,), generator=gen)
    lam = torch.rand(size, generator=gen)
    lam[: size // 2] = 1.0  # half the batch as synthesized, half mixtures of two
    out = []
    for x in pool:
        shape = [size] + [1] * (x.dim() - 1)
        w = lam.reshape(shape)
        mixed = w * x[first] + (1 - w) * x[second] if x.is_floating_point() else x[first]
        out.append(_shift_flip(mixed, gen) if augment and _is_image(mixed) else mixed)
    return out


def distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    inputs: Sequence[torch.Tensor],
    features: Sequence[str] = (),
    kept: Kept | None = None,
) -> float:
    """The recovery loss on fixed inputs (no gradient)."""
    s_cap, t_cap = _Capture(student, features), _Capture(teacher, features)
    try:
        with torch.no_grad():
            s_out, t_out = flat_outputs(student(*inputs)), flat_outputs(teacher(*inputs))
            return float(_loss(s_out, t_out, s_cap.values, t_cap.values, kept))
    finally:
        s_cap.close()
        t_cap.close()


def lr_factor(step: int, steps: int, warmup: float = 0.0) -> float:
    """The learning rate's multiplier at `step`: a linear rise over the first `warmup` fraction of the
    steps, then a cosine decay to zero."""
    rise = int(warmup * steps)
    if step < rise:
        return (step + 1) / (rise + 1)
    return 0.5 * (1 + math.cos(math.pi * min(step - rise, steps - rise) / max(1, steps - rise)))


def distill(
    student: nn.Module,
    teacher: nn.Module,
    pool: Sequence[torch.Tensor],
    steps: int,
    seed: int = 0,
    progress: Progress | None = None,
    batch: int = BATCH,
    lr: float = LR,
    augment: bool = True,
    warmup: float = WARMUP,
    kept: Kept | None = None,
) -> RecoveryLog:
    """Train `student` in place towards `teacher` on `pool` (one tensor per input, samples on dim 0);
    `augment`: image inputs also shifted and mirrored; `warmup`: the fraction of the steps the learning
    rate rises over (lr_factor); `kept`: the channels the cut kept of each module it narrowed (their
    features are matched at those channels)."""
    started = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    size = min(batch, int(pool[0].shape[0]))
    probe = [x[:2] for x in pool]
    features = shared_features(student, teacher, probe, kept)
    teacher.eval()
    student.eval()  # BatchNorm statistics frozen; dropout off
    was = {p: p.requires_grad for m in (student, teacher) for p in m.parameters()}
    for p in teacher.parameters():
        p.requires_grad_(False)
    for p in student.parameters():
        p.requires_grad_(True)
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, steps, warmup))
    s_cap, t_cap = _Capture(student, features), _Capture(teacher, features)
    first = last = math.nan
    try:
        for step in range(steps):
            # eval() again each step: modules that cache values in eval drop them there (timm's LeViT
            # its attention biases), so the cache is rebuilt from this step's parameters.
            student.eval()
            inputs = _batch(pool, gen, size, augment)
            with torch.no_grad():
                t_out = flat_outputs(teacher(*inputs))
                t_feat = {n: v.detach() for n, v in t_cap.values.items()}
            with torch.enable_grad():
                loss = _loss(flat_outputs(student(*inputs)), t_out, s_cap.values, t_feat, kept)
                optimizer.zero_grad()
                loss.backward()
            detach_caches(student, forget=True)
            optimizer.step()
            schedule.step()
            last = float(loss.detach())
            first = last if step == 0 else first
            if progress is not None:
                progress(step + 1, steps, last)
    finally:
        s_cap.close()
        t_cap.close()
        detach_caches(student, forget=True)
        student.eval()
        for p, flag in was.items():
            p.requires_grad_(flag)
    return RecoveryLog(steps=steps, seconds=time.perf_counter() - started, loss_start=first, loss_end=last)


STAGES = ("the cut", "least squares", "distillation")  # what recovery.kept names, in order
# dB by which an earlier stage must beat a later one for recovery to go back to it: the SQNR of a few
# dozen held-out inputs moves with them, and a stage that trained on the pool is kept unless it clearly
# lost (the catastrophes this guards against lose tens of dB).
KEEP_MARGIN_DB = 1.0


def kept_stage(sqnrs: Sequence[float | None], margin: float = KEEP_MARGIN_DB) -> int:
    """Which of recovery's stages (STAGES, in order) to keep, from each one's held-out SQNR against the
    unpruned model (None: identical outputs): the latest within `margin` dB of the best. Recovery is
    trained on synthetic inputs and can lower the fidelity (random-weight MobileNetV3-small: 34.2 dB
    after the cut, 5.7 after least squares, -113 after 10 distillation steps); its stages never return
    a model clearly worse than one before them."""
    score = [math.inf if s is None else s for s in sqnrs]
    best = max(score)
    return max(i for i, s in enumerate(score) if s >= best - margin)


def sqnr_db(reference: torch.Tensor, other: torch.Tensor) -> float | None:
    noise = float(((reference - other) ** 2).sum())
    if noise == 0.0:
        return None
    return 10 * math.log10(max(float((reference**2).sum()), 1e-30) / noise)


def fidelity(
    student: nn.Module, teacher: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[float | None, float | None]:
    """(worst output SQNR in dB (None: identical), top-1 agreement for a [batch, classes] output)."""
    with torch.no_grad():
        s_out, t_out = flat_outputs(student(*inputs)), flat_outputs(teacher(*inputs))
    values = [v for v in (sqnr_db(t, s) for s, t in zip(s_out, t_out, strict=True)) if v is not None]
    worst = min(values) if values else None
    first = t_out[0]
    agree = None
    if first.dim() == 2 and first.shape[1] > 1:
        agree = float((s_out[0].argmax(1) == first.argmax(1)).float().mean())
    return worst, agree


# ---- data-aware recovery: the same distillation on the user's own inputs ---------------------------

FINETUNE_FLAG = "--finetune-data"
FINETUNE_LIMIT = 50_000  # samples read; recovery draws its batches from all of them


def _finetune_words(problem: str) -> str:
    """calibration.py's problem lines speak of calibration data; the same file given to
    --finetune-data is named by that flag."""
    for word in ("data", "file", "directory"):
        problem = problem.replace(f"calibration {word} ", f"{FINETUNE_FLAG} {word} ")
    return problem.replace(f"{FINETUNE_FLAG} data ", f"{FINETUNE_FLAG} ")


def finetune_inputs(
    path: Path,
    specs: Sequence[TensorSpec],
    flag: str = FINETUNE_FLAG,
    recovery: str = "distill",
    recovery_flag: str = "--prune-recovery",
) -> list[torch.Tensor]:
    """The user's real inputs, one tensor per input (samples on dim 0), loaded as --calibration is.
    Unusable --finetune-data, or a recovery that would not read it, is refused before any work in one
    line (the first problem, and how many more there are): the checks and formats of --calibration
    (quant/calibration.py)."""
    if recovery == "none":
        raise EdgeportError(
            f"{flag} is data for recovery, but {recovery_flag} none turns recovery off",
            f"drop {flag}, or recover with {recovery_flag} distill",
        )
    joined, found = read_calibration(path, specs, FINETUNE_LIMIT)
    problems = [_finetune_words(p).replace(FINETUNE_FLAG, flag) for p in found]
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise EdgeportError(problems[0] + more, CALIBRATION_FIX)
    return [torch.from_numpy(joined[spec.name]) for spec in specs]


def recovery_inputs(
    how: str, finetune_data: Path | None, seed: int, count: int, steps: int | None, user: int | None = None
) -> str:
    """What recovery trained on, as the manifest says it: the user's `user` inputs from `finetune_data`
    (if given) and `count` inputs made by `how`, in `steps` distillation steps each (None: not
    distilled)."""
    made = f" ({steps} steps each)" if steps is not None else ""
    synthetic = f"{count} inputs by {how}{made} from the unpruned model, seed {seed}"
    if finetune_data is None:
        return synthetic
    given = f"data-aware: the user's {user} inputs from {Path(finetune_data).name} ({FINETUNE_FLAG})"
    return f"{given} and {synthetic}" if count else given
