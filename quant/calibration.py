"""Calibration samples for int8: real data when given, else synthetic inputs made without any data.

Methods (all selectable, `--calibration-method`):
* `data`: the user's samples (`--calibration file.npy|file.npz|dir`).
* `gaussian`: naive N(0, 1) noise, whatever the model expects (the baseline the benchmark shows).
* `input-stats`: Gaussian noise with the input statistics quant/input_stats.py found (user
  `--mean/--std/--input-range`, the model's own normalisation, or its first BatchNorm), clipped to
  the input range when one is known.
* `distill`: ZeroQ (Cai et al. 2020): start from `input-stats` noise and optimise the inputs so the
  batch mean/std that every BatchNorm of the model sees match its running statistics. The
  activations then have roughly the statistics the network was trained on, layer by layer, which
  is what the converter's min/max calibration needs. Needs BatchNorms: a PyTorch source's, or an
  ONNX source's BatchNormalization nodes (before folding), the graph run in PyTorch by
  quant/onnx_torch.py so autograd reaches the inputs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgeport.errors import EdgeportError
from edgeport.manifest import sha256_of
from edgeport.quant.input_stats import InputStats, default_stats, integer_samples
from edgeport.tensors import DEFAULT_INDEX_RANGE, Sample, TensorSpec

METHODS = ("auto", "distill", "input-stats", "gaussian", "data")
# 50 Adam steps on one batch of 80 (64 calibration + 16 held-out inputs). Measured on ResNet-20 (2
# shared cores; output SQNR of int8 vs float on 64 held-out inputs distilled for 100 steps / on 64
# Gaussian inputs with the input statistics): 10 steps 22.1 / 20.0 dB in 2.7 s, 25 steps 27.2 / 22.5
# dB, 50 steps 26.5 / 30.4 dB in 12 s, input statistics alone 16.5 / 31.3 dB; a batch of 32 is
# worse at equal steps (50: 23.8 / 21.8 dB). The previous 200 steps took 70-100 s; 50 keeps
# `--quantize int8` on ResNet-20 under a minute. Trade-off: the BN loss is still falling at 50 steps
# (160 -> 21; -> 37 at 25), so a deeper net's later BNs are matched less closely than with 200.
DISTILL_STEPS = 50
DISTILL_LR = 0.2
# Synthetic inputs are clipped to mean ± 3 std per channel when the input's range is unknown (a
# known range, e.g. from --input-range, is used instead). Without it, distillation drives some input
# values far out (ResNet-20: -7.7..6.2 where real normalised pixels span -2.1..2.6), the converter's
# min/max sets the int8 input step ~2.9x coarser than real data would, and top-1 drops: on CIFAR-10
# images 500-9999 (bench/quant_accuracy.py) unclipped vs clipped distillation is 81.03 vs 81.46 %
# (ResNet-20), 81.19 vs 81.51 % (raw-pixel ResNet-20), 83.08 vs 83.48 % (ResNet-56); real-data
# calibration 81.58 / 81.41 / 83.23 %.
CLIP_SIGMAS = 3.0
MAX_DATA_SAMPLES = 1000  # more real samples than this add conversion time, not accuracy
# Inputs distilled together keep at most this many bytes of activations for the backward (autograd's
# saved tensors, counted per sample on one forward): more inputs are optimised in consecutive batches,
# so a large model's synthetic inputs cost time, not memory. The peak RSS rose by 1.7x the saved bytes
# per sample on ResNet-56 and 3x on PP-OCRv4 rec (45 MB saved per 3x48x160 input, which at the 160 of a
# pruning chunk peaked at 16 GB): one batch adds at most ~3 GB. ResNet-20/56 (1.5 / 4.3 MB per input)
# stay one batch at every count distilled today (160 in pruning, 80 in calibration).
DISTILL_ACTIVATIONS = 1 << 30


@dataclass
class CalibrationSet:
    method: str
    samples: list[Sample]  # used by the converter
    held_out: list[Sample]  # same distribution, not used for calibration: the fidelity inputs
    notes: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


def _stats_for(spec: TensorSpec, stats: dict[str, InputStats]) -> InputStats:
    return stats.get(spec.name) or default_stats()


def _bounds(
    st: InputStats, shape: list[int], clip_sigmas: float | None
) -> tuple[Any, Any] | tuple[None, None]:
    """The range synthetic inputs are clipped to: the known hard range, else (with `clip_sigmas`)
    mean ± clip_sigmas * std per channel, else none."""
    if st.low is not None:
        return st.low, st.high
    if clip_sigmas is None:
        return None, None
    mean, std = st.broadcast(shape)
    return mean - clip_sigmas * std, mean + clip_sigmas * std


def _clip(x: np.ndarray, st: InputStats, clip_sigmas: float | None = None) -> np.ndarray:
    low, high = _bounds(st, list(x.shape), clip_sigmas)
    if low is None:
        return x
    return np.clip(x, low, high)


def is_integer(spec: TensorSpec) -> bool:
    return np.dtype(spec.dtype).kind in "iu"


def _assumed_ranges(specs: Sequence[TensorSpec], stats: dict[str, InputStats]) -> list[str]:
    """A note per integer input whose range nobody gave: calibration assumed the default."""
    low, high = DEFAULT_INDEX_RANGE
    return [
        f"integer input {s.name!r} has no stated range: calibrated on integers drawn uniformly from "
        f"{low}..{high} (assumed); pass --input-range {s.name}=lo,hi (e.g. 0,vocabulary size - 1)"
        for s in specs
        if is_integer(s) and _stats_for(s, stats).low is None
    ]


def gaussian_samples(
    specs: Sequence[TensorSpec],
    count: int,
    seed: int,
    stats: dict[str, InputStats] | None = None,
    clip_sigmas: float | None = None,
) -> list[Sample]:
    """N(mean, std) per channel (N(0, 1) without stats), one sample of each spec's shape."""
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(count):
        sample = {}
        for spec in specs:
            if is_integer(spec):
                sample[spec.name] = integer_samples(rng, spec, _stats_for(spec, stats or {}))
                continue
            z = rng.standard_normal(spec.shape)
            if stats is not None:
                st = _stats_for(spec, stats)
                mean, std = st.broadcast(spec.shape)
                z = _clip(mean + std * z, st, clip_sigmas)
            sample[spec.name] = z.astype(np.float32)
        samples.append(sample)
    return samples


def _bn_modules(module: Any) -> list[Any]:
    import torch.nn as nn

    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.track_running_stats
        and m.running_mean is not None
    ]


def has_batchnorm(module: Any) -> bool:
    """Whether `module` has BatchNorms to distill from: a PyTorch module's BN layers with running
    statistics, or an ONNX graph's BatchNormalization nodes."""
    if isinstance(module, onnx.ModelProto):
        return any(n.op_type == "BatchNormalization" for n in module.graph.node)
    return module is not None and bool(_bn_modules(module))


def activation_bytes(module: Any, inputs: Sequence[Any]) -> int:
    """Bytes of activations one forward of `module` on `inputs` keeps for the backward (autograd's
    saved tensors, each storage once; parameters and buffers not counted), per sample of the batch.
    Saved tensors rather than module outputs: an ONNX source's evaluator computes most of its values
    outside modules (PP-OCRv4 rec: 45 MB saved per input, 12 MB in leaf module outputs)."""
    import torch

    held = {t.untyped_storage().data_ptr() for t in [*module.parameters(), *module.buffers()]}
    seen: set[int] = set()
    total = [0]

    def pack(t: Any) -> Any:
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen and storage.data_ptr() not in held:
            seen.add(storage.data_ptr())
            total[0] += storage.nbytes()
        return t

    batch = max(1, int(inputs[0].shape[0])) if inputs and inputs[0].dim() > 0 else 1
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(*[x.detach().clone().requires_grad_(x.is_floating_point()) for x in inputs])
    return total[0] // batch


def distill_batches(count: int, per_sample: int, budget: int = DISTILL_ACTIVATIONS) -> list[int]:
    """Sizes of the batches `count` inputs are distilled in: as few as keep each batch's activations
    (`per_sample` bytes each) within `budget`, as even as possible, at least one input each."""
    fits = max(1, budget // max(1, per_sample))
    n = -(-count // fits)
    return [count // n + (1 if i < count % n else 0) for i in range(n)]


# A 4-D float input smaller than this on a side is a feature map or a spectrogram patch rather than a
# picture: no image prior, and recovery does not shift or mirror it.
MIN_IMAGE_SIDE = 8


@dataclass(frozen=True)
class ImagePrior:
    """What makes synthetic images look like images (DeepInversion's image prior, Yin et al. 2020):
    the noise they start from is drawn on a `grid` x `grid` lattice and upsampled bilinearly,
    `tv_weight` times their total variation (mean squared difference of neighbouring pixels, in units
    of the input's spread) joins the loss, and each step sees them moved (`move`). BatchNorm matching
    from per-pixel noise leaves the inputs about 3.5x as rough as real images (ResNet-20, mean absolute
    neighbour difference 1.07 against CIFAR-10's 0.31; 0.42 with this prior): a student distilled on
    them learns the teacher where real inputs never are."""

    grid: int = 8
    tv_weight: float = 10.0
    # Each optimisation step sees the batch shifted (circularly, by up to this fraction of each side)
    # and, half the time, mirrored left-right: an input that matches the statistics only at one exact
    # placement of its pixels is not what a real image is (DeepInversion's jitter and flip). Small and
    # whole-batch on purpose: the inputs are being made; recovery's own augmentation of the made inputs
    # (recover.py) moves each image further and on its own.
    jitter: float = 1 / 16
    flip: bool = True

    def move(self, x: Any, gen: Any) -> Any:
        """`x` (NCHW) shifted and mirrored at random, drawn from `gen`."""
        import torch

        limits = [max(1, round(self.jitter * side)) if self.jitter else 0 for side in x.shape[2:]]
        shifts = [int(torch.randint(-lim, lim + 1, (1,), generator=gen)) if lim else 0 for lim in limits]
        x = torch.roll(x, shifts, (2, 3))
        if self.flip and float(torch.rand(1, generator=gen)) < 0.5:
            x = x.flip(3)
        return x


def is_image(spec: TensorSpec) -> bool:
    """A float NCHW input with both spatial sides at least MIN_IMAGE_SIDE (what an image prior applies to)."""
    return not is_integer(spec) and len(spec.shape) == 4 and min(spec.shape[2:]) >= MIN_IMAGE_SIDE


def smooth_noise(shape: Sequence[int], grid: int, gen: Any) -> Any:
    """Unit-variance noise of `shape` (N, C, H, W) drawn on a grid x grid lattice (at most H x W) and
    upsampled bilinearly."""
    import torch

    low = torch.randn([*shape[:2], min(grid, shape[2]), min(grid, shape[3])], generator=gen)
    up = torch.nn.functional.interpolate(low, size=tuple(shape[2:]), mode="bilinear", align_corners=False)
    return up / up.std().clamp_min(1e-12)


def total_variation(z: Any) -> Any:
    """Mean squared difference of vertically and horizontally neighbouring values of an NCHW tensor."""
    return ((z[:, :, 1:] - z[:, :, :-1]) ** 2).mean() + ((z[..., 1:] - z[..., :-1]) ** 2).mean()


def distill_samples(
    module: Any,
    specs: Sequence[TensorSpec],
    count: int,
    seed: int,
    stats: dict[str, InputStats],
    steps: int = DISTILL_STEPS,
    lr: float = DISTILL_LR,
    labels: bool = True,
    clip_sigmas: float | None = None,
    budget: int | None = None,
    prior: ImagePrior | None = None,
) -> tuple[list[Sample], dict[str, Any]]:
    """ZeroQ-style BN-statistics matching on `count` synthetic inputs, optimised together in as few
    batches as keep their activations within `budget` bytes (DISTILL_ACTIVATIONS by default;
    distill_batches: one batch for most models).

    With `labels` and a classifier-shaped output ([batch, classes]), a cross-entropy term towards
    evenly assigned target classes is added (DeepInversion, Yin et al. 2020): BN matching alone
    gives inputs the network is unsure about, whose logits span a smaller range than real inputs'
    and leave the output's int8 range too narrow (real logits would clip).

    `prior` (image inputs only, is_image): start from smooth noise and penalise pixel-to-pixel
    differences, so the inputs look like images rather than per-pixel noise (ImagePrior). A model
    without an image input is distilled (and reported) without it.
    """
    import torch

    imaged = [prior is not None and is_image(spec) for spec in specs]
    prior = prior if any(imaged) else None

    bns = _bn_modules(module)
    if not bns:
        raise ValueError("the model has no BatchNorm to distill from")
    started = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)

    captured: list[tuple[Any, Any]] = []

    def hook(bn: Any, args: tuple) -> None:
        x = args[0]
        dims = [0] + list(range(2, x.dim()))
        captured.append((bn, x.mean(dims), x.var(dims, unbiased=False)))

    use_labels = [labels]

    def optimise(size: int, first_target: int) -> tuple[float, float, list[np.ndarray]]:
        """One batch of `size` inputs: (loss before, loss after, the inputs)."""
        # x = mean + std * z with z optimised: the step size is then in units of the input's own
        # spread, so raw 0..255 inputs and normalised ones converge alike.
        params, offsets, scales, bounds = [], [], [], []
        for spec, image in zip(specs, imaged, strict=True):
            st = _stats_for(spec, stats)
            shape = [size, *spec.shape[1:]]
            mean, std = st.broadcast(shape)
            z = smooth_noise(shape, prior.grid, gen) if image else torch.randn(shape, generator=gen)
            params.append(z.requires_grad_(True))
            offsets.append(torch.as_tensor(mean, dtype=torch.float32))
            scales.append(torch.as_tensor(std, dtype=torch.float32))
            low, high = _bounds(st, shape, clip_sigmas)
            bounds.append(
                (None, None)
                if low is None
                else (torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32))
            )

        def inputs() -> list[Any]:
            out = []
            for z, m, s, (low, high) in zip(params, offsets, scales, bounds, strict=True):
                x = m + s * z
                out.append(torch.clamp(x, low, high) if low is not None else x)
            return out

        def loss_of(moved: bool = False) -> Any:
            captured.clear()
            xs = inputs()
            if moved and prior is not None:
                xs = [prior.move(x, gen) if image else x for x, image in zip(xs, imaged, strict=True)]
            out = module(*xs)
            total = 0.0
            if use_labels[0] and isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[1] > 1:
                # Target classes continue across batches, so they stay evenly assigned over `count`.
                targets = (torch.arange(out.shape[0]) + first_target) % out.shape[1]
                total = torch.nn.functional.cross_entropy(out, targets)
            else:
                use_labels[0] = False
            if prior is not None and prior.tv_weight:
                total = total + prior.tv_weight * sum(
                    total_variation(z) for z, image in zip(params, imaged, strict=True) if image
                )
            for bn, mean, var in captured:
                # ZeroQ's loss: L2 distance of the batch mean and std to the running ones, summed over BNs.
                total = total + torch.linalg.vector_norm(mean - bn.running_mean)
                std = var.clamp_min(0).add(bn.eps).sqrt()
                total = total + torch.linalg.vector_norm(std - bn.running_var.add(bn.eps).sqrt())
            return total

        optimizer = torch.optim.Adam(params, lr=lr)
        with torch.enable_grad():
            first = float(loss_of().detach())
            for _ in range(steps):
                optimizer.zero_grad()
                loss = loss_of(moved=True)
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                last = float(loss_of())
                return first, last, [x.detach().numpy().astype(np.float32) for x in inputs()]

    grads = {p: p.requires_grad for p in module.parameters()}
    was_training = module.training
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)  # gradients w.r.t. the inputs only: half the backward work
    try:
        probe = [torch.zeros([1, *s.shape[1:]], dtype=getattr(torch, s.dtype)) for s in specs]
        sizes = distill_batches(count, activation_bytes(module, probe), budget or DISTILL_ACTIVATIONS)
        handles = [bn.register_forward_pre_hook(hook) for bn in bns]
        try:
            made = [optimise(size, sum(sizes[:i])) for i, size in enumerate(sizes)]
        finally:
            for handle in handles:
                handle.remove()
    finally:
        for p, flag in grads.items():
            p.requires_grad_(flag)
        module.train(was_training)
    final = [np.concatenate(parts) for parts in zip(*(inputs for _, _, inputs in made), strict=True)]
    samples = [
        {spec.name: np.ascontiguousarray(x[i : i + 1]) for spec, x in zip(specs, final, strict=True)}
        for i in range(count)
    ]

    def mean_loss(which: int) -> float:  # over the batches, by their sizes
        if len(made) == 1:
            return made[0][which]
        return sum(size * m[which] for size, m in zip(sizes, made, strict=True)) / count

    report = {
        "batchnorms": len(bns),
        "steps": steps,
        "lr": lr,
        "batch": max(sizes),
        "batches": len(sizes),
        "class_targets": use_labels[0],
        **({"image_prior": asdict(prior)} if prior else {}),
        "loss_start": round(mean_loss(0), 4),
        "loss_end": round(mean_loss(1), 4),
        "seconds": round(time.perf_counter() - started, 2),
    }
    return samples, report


# ---- real data -------------------------------------------------------------------------------
# Every check collects problems instead of raising, so the user sees all of them at once, and the
# same checks run before any conversion work (check_calibration) and when the data is used.

CALIBRATION_FIX = (
    "save one sample per row, shape (N, *input shape) in the model's input layout, as finite numbers "
    "in .npy/.npz (a .npz with one array per input name for several inputs)"
)


def _arrays_in(path: Path) -> tuple[list[tuple[str, dict[str, np.ndarray]]], list[str]]:
    """(file, {key: array}) for a .npy/.npz file or every .npy/.npz in a directory, and the problems."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz"))
        if not files:
            return [], [f"calibration directory {path} has no .npy or .npz files"]
    elif path.is_file():
        files = [path]
    else:
        return [], [f"calibration data {path} does not exist"]
    found, problems = [], []
    for file in files:
        if file.suffix not in (".npy", ".npz"):
            problems.append(f"calibration file {file.name} is not .npy or .npz")
            continue
        try:
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.ndarray):
                found.append((file.name, {"": loaded}))
            else:
                with loaded:
                    found.append((file.name, {k: loaded[k] for k in loaded.files}))
        except Exception as exc:  # a corrupt file or an object array
            problems.append(
                f"cannot read calibration file {file.name} ({type(exc).__name__}: {str(exc)[:80]})"
            )
    return found, problems


def _fit(array: np.ndarray, spec: TensorSpec, where: str) -> tuple[np.ndarray | None, str | None]:
    """Samples of one input as [N, *shape[1:]] float32 in the source layout, or the problem."""
    if array.dtype.kind not in "fiub":
        return None, f"calibration data {where} has dtype {array.dtype}, not numbers"
    want = tuple(spec.shape[1:])
    nhwc = (*want[1:], want[0]) if len(want) >= 2 else None
    got = tuple(array.shape)
    if got[1:] == want:
        out = array
    elif spec.channels_last and nhwc is not None and got[1:] == nhwc and want != nhwc:
        out = np.moveaxis(array, -1, 1)  # channels-last samples for an image input
    elif got == want:
        out = array[None]
    else:
        layouts = f"(N, {', '.join(map(str, want))})"
        if spec.channels_last and nhwc is not None:
            layouts += f" or channels-last (N, {', '.join(map(str, nhwc))})"
        return None, f"calibration data {where} has shape {got} but input {spec.name!r} takes {layouts}"
    if out.shape[0] == 0:
        return None, f"calibration data {where} has no samples (shape {got})"
    out = out.astype(np.float32)
    bad = out.size - int(np.count_nonzero(np.isfinite(out)))
    if bad:
        return None, f"calibration data {where} has {bad} NaN or infinite value(s)"
    return out, None


def read_calibration(
    path: Path, specs: Sequence[TensorSpec], limit: int
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Samples per input name, joined over files (at most `limit`), and every problem found: one read
    for a caller that words the problems its own way (--finetune-data, quant/prune/recover.py)."""
    per_input: dict[str, list[np.ndarray]] = {s.name: [] for s in specs}
    files, problems = _arrays_in(Path(path))
    for file, arrays in files:
        for spec in specs:
            if spec.name in arrays:
                fitted, problem = _fit(arrays[spec.name], spec, f"{file}[{spec.name}]")
            elif len(specs) > 1:
                fitted, problem = (
                    None,
                    f"calibration file {file} has no array named {spec.name!r} (has {sorted(arrays)})",
                )
            else:
                # Prefer an array whose sample shape fits (labels beside images are ignored); report
                # the first candidate's problem otherwise.
                fitting = [k for k, a in arrays.items() if len(a.shape) >= len(spec.shape) - 1]
                fitted, problem = (
                    None,
                    f"calibration file {file} has no array of samples for input {spec.name!r}",
                )
                for key in fitting:
                    fitted, why = _fit(arrays[key], spec, f"{file}{f'[{key}]' if key else ''}")
                    if fitted is not None:
                        problem = None
                        break
                    problem = problem if key != fitting[0] else why
            if fitted is not None:
                per_input[spec.name].append(fitted)
            else:
                problems.append(problem)
    joined = {name: np.concatenate(parts)[:limit] for name, parts in per_input.items() if parts}
    counts = {name: len(a) for name, a in joined.items()}
    if not problems and len(set(counts.values())) > 1:
        problems.append(f"calibration data gives different sample counts per input ({counts})")
    return joined, problems


def calibration_problems(path: Path, specs: Sequence[TensorSpec]) -> list[str]:
    """Every problem of the calibration data at `path` for inputs `specs`, one line each (none: usable).

    Needs only the inputs' names and shapes, so it can run before export and conversion; mark an
    input channels_last when its samples may be given channels-last (an image input, unless
    --keep-nchw).
    """
    return read_calibration(path, specs, MAX_DATA_SAMPLES)[1]


def _refuse(problems: list[str]) -> EdgeportError:
    if len(problems) == 1:
        return EdgeportError(problems[0], CALIBRATION_FIX)
    lines = "".join(f"\n  - {p}" for p in problems)
    return EdgeportError(f"the calibration data has {len(problems)} problems:{lines}", CALIBRATION_FIX)


def check_calibration(path: Path, specs: Sequence[TensorSpec]) -> None:
    """Refuse unusable calibration data before any work: one line per problem."""
    problems = calibration_problems(path, specs)
    if problems:
        raise _refuse(problems)


def check_calibration_inputs(
    path: Path | None, inputs: Mapping[str, Sequence[int]], keep_nchw: bool = False
) -> None:
    """check_calibration before export, when only the inputs' names and shapes are known (None: no
    data given). Samples may be channels-last unless --keep-nchw: which inputs the .tflite holds
    channels-last is known only after conversion, and this check must not refuse what loading accepts."""
    if path is not None:
        check_calibration(
            path, [TensorSpec(n, list(s), channels_last=not keep_nchw) for n, s in inputs.items()]
        )


def load_calibration(path: Path, specs: Sequence[TensorSpec], limit: int = MAX_DATA_SAMPLES) -> list[Sample]:
    """Real calibration samples for `specs` from a .npy/.npz file or directory.

    One input: a .npy, or a .npz whose array is named after the input (or its only array that fits;
    labels beside images are ignored). Several inputs: .npz files with one array per input name.
    """
    joined, problems = read_calibration(path, specs, limit)
    if problems:
        raise _refuse(problems)
    n = len(next(iter(joined.values())))
    return [{name: a[i : i + 1] for name, a in joined.items()} for i in range(n)]


def _onnx_module(
    model: Any, specs: Sequence[TensorSpec], stats: dict[str, InputStats], seed: int
) -> tuple[Any, dict[str, Any], str | None]:
    """An ONNX source as a PyTorch module to distill from: (module or None, detail, why not).

    The module is checked against onnxruntime before use (DESIGN: every artifact is verified): a
    wrong op in the evaluator would otherwise silently distill towards the wrong network.
    """
    from edgeport.quant import onnx_torch

    if not onnx_torch.batchnorm_count(model):
        return (
            None,
            {},
            "the ONNX graph has no BatchNormalization node to distill calibration inputs from "
            "(torch.onnx.export folds BNs into Conv unless run with do_constant_folding=False or "
            "training=TrainingMode.PRESERVE)",
        )
    cannot = "cannot distill calibration inputs from the ONNX graph"
    try:
        module = onnx_torch.onnx_to_torch(model)
    except onnx_torch.UnsupportedOnnxGraph as exc:
        return None, {}, f"{cannot}: {exc}"
    # Two samples in one batch: the check also covers running a larger batch than was exported.
    # Inputs as distillation starts from (input statistics; clipped so raw-pixel models see pixels).
    check = gaussian_samples(specs, 2, seed + 2, stats, CLIP_SIGMAS)
    try:
        error = onnx_torch.check_against_onnxruntime(module, model, check)
    except Exception as exc:  # the evaluator or onnxruntime failing on this graph: fall back, named
        return None, {}, f"{cannot}: running it in PyTorch failed ({str(exc).splitlines()[0][:200]})"
    if not error <= onnx_torch.CHECK_TOLERANCE:
        return (
            None,
            {},
            f"{cannot}: its PyTorch evaluation differs from onnxruntime (max rel. error {error:.1e})",
        )
    detail = {
        "via": "ONNX graph via edgeport.quant.onnx_torch",
        "graph_vs_onnxruntime_rel_error": float(f"{error:.2e}"),
    }
    return module, detail, None


def make_calibration(
    method: str,
    specs: Sequence[TensorSpec],
    stats: dict[str, InputStats],
    module: Any = None,
    data: Path | None = None,
    count: int = 64,
    held_out: int = 16,
    seed: int = 0,
    distill_steps: int = DISTILL_STEPS,
    clip_sigmas: float | None = None,
    prior: ImagePrior | None = None,
) -> CalibrationSet:
    """The calibration set for `method` ("auto" picks data > distill > input-stats > gaussian).

    `module` is what distillation reads BatchNorms from: a PyTorch module, or an ONNX ModelProto
    with its BatchNormalization nodes (the source before BN folding), or None. `prior`: distillation's
    image prior (distill_samples).
    """
    notes: list[str] = []
    if method not in METHODS:
        raise EdgeportError(f"unknown calibration method {method!r}", f"use one of {', '.join(METHODS)}")
    via: dict[str, Any] = {}
    onnx_why: str | None = None
    no_distill = "no BatchNorm in a PyTorch model to distill calibration inputs from"
    integers = [s.name for s in specs if is_integer(s)]
    if integers:  # distillation optimises float inputs
        no_distill = f"input {integers[0]!r} is an integer input, which distillation cannot optimise"
    if isinstance(module, onnx.ModelProto):
        if method == "distill" or (method == "auto" and data is None and not integers):
            module, via, onnx_why = _onnx_module(module, specs, stats, seed)
            no_distill = onnx_why or no_distill
        else:
            module = None
    elif has_batchnorm(module):
        via = {"via": "PyTorch module"}
    if method == "auto":
        if data is not None:
            method = "data"
        elif has_batchnorm(module) and not integers:
            method = "distill"
        elif stats:
            method = "input-stats"
            # Integer inputs are drawn uniformly from their range (integer_samples); the Gaussian
            # note is about float inputs only.
            what = "integers drawn uniformly from each integer input's range"
            if len(integers) < len(specs):
                what = "Gaussian noise with the input statistics inferred from the model (" + what + ")"
            notes.append(f"{no_distill}: calibrated on {what}")
        else:
            method = "gaussian"
            # An ONNX source says why it gave nothing to distill from; otherwise the plain note.
            why = (
                f"{no_distill}, and no calibration data"
                if onnx_why
                else "no BatchNorm and no calibration data"
            )
            if len(integers) < len(specs):  # a float input was drawn from N(0, 1)
                notes.append(
                    f"{why}: calibrated on N(0, 1) noise; pass --calibration samples.npy, or --mean/--std "
                    "or --input-range if the input is not normalised"
                )
    if method == "data":
        if data is None:
            raise EdgeportError("--calibration-method data needs --calibration PATH", "give the samples")
        real = load_calibration(data, specs)
        # Hold out a few samples for the fidelity report when there are enough to spare.
        spare = min(held_out, len(real) // 5)
        cal, rest = (real[:-spare], real[-spare:]) if spare else (real, real[: min(held_out, len(real))])
        if not spare:
            notes.append("fewer than 5 calibration samples: fidelity measured on the calibration samples")
        detail = {"data": Path(data).name, "local_path": str(Path(data).resolve()), "samples": len(cal)}
        if Path(data).is_file():  # what the int8 model was calibrated on, wherever it lives
            detail["sha256"] = sha256_of(Path(data))
        return CalibrationSet("data", cal, rest, notes, detail)
    notes.extend(_assumed_ranges(specs, stats))
    if method == "distill":
        if not has_batchnorm(module) or integers:
            raise EdgeportError(
                f"--calibration-method distill needs a model with BatchNorm layers ({no_distill})",
                "use --calibration-method input-stats (or give --calibration data)",
            )
        samples, report = distill_samples(
            module, specs, count + held_out, seed, stats, distill_steps, clip_sigmas=clip_sigmas, prior=prior
        )
        report = {**via, **report, "clip_sigmas": clip_sigmas}
        return CalibrationSet("distill", samples[:count], samples[count:], notes, report)
    if method == "input-stats":
        samples = gaussian_samples(specs, count + held_out, seed, stats, clip_sigmas)
        return CalibrationSet(
            "input-stats", samples[:count], samples[count:], notes, {"clip_sigmas": clip_sigmas}
        )
    # Naive: N(0, 1) for calibration. The fidelity inputs still follow the inferred statistics:
    # measuring on the same wrong distribution would hide exactly the failure this method has.
    # An integer input's stated range still applies (stats of integer inputs only: floats stay N(0, 1)).
    ranges = {s.name: stats[s.name] for s in specs if is_integer(s) and s.name in stats}
    samples = gaussian_samples(specs, count, seed, ranges)
    held = gaussian_samples(specs, held_out, seed + 1, stats)
    return CalibrationSet("gaussian", samples, held, notes, {})
