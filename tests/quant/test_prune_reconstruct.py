"""quant/prune/reconstruct.py: the least-squares reconstruction is exact when a removed channel is a
linear combination of kept ones, lowers a layer's output error otherwise, is seeded, and its pieces
(patch matrices, the ridge solve) agree with PyTorch's own layers."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from edgeport.quant.calibration import DISTILL_STEPS
from edgeport.quant.prune import PruneOptions, prune_module
from edgeport.quant.prune.prune import synthetic_inputs
from edgeport.quant.prune.reconstruct import (
    _fed_batchnorms,
    layers_to_solve,
    narrowed_axis,
    outputs,
    patches,
    reconstruct,
    solve,
    to_student,
)
from edgeport.quant.prune.recover import distill, distillation_loss, lr_factor, shared_features
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import (
    INPUT_SHAPE,
    coupled,
    fast_options,
    one_torch_thread,  # noqa: F401 (autouse fixture)
)
from tests.zoo import zoo_model


class Block(nn.Module):
    """conv1 -> bn1 -> relu -> conv2 -> bn2, the inner channels of a ResNet block."""

    def __init__(self, mid: int = 8, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, 6, 3, padding=1, bias=bias)
        self.bn2 = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))


def _randomize(block: Block, gen: torch.Generator) -> None:
    with torch.no_grad():
        for bn in (block.bn1, block.bn2):
            n = bn.num_features
            bn.running_mean.copy_(0.4 * torch.rand(n, generator=gen) - 0.2)
            bn.running_var.copy_(0.5 + 1.5 * torch.rand(n, generator=gen))
            bn.weight.copy_(0.5 + torch.rand(n, generator=gen))
            bn.bias.copy_(0.6 * torch.rand(n, generator=gen) - 0.3)


def _dependent_pair(bias: bool) -> tuple[Block, Block]:
    """A block whose last inner channel is 3x its first after the ReLU (a positive multiple passes a ReLU
    unchanged), and the block with that channel cut and nothing else changed."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    teacher = Block(8, bias).eval()
    _randomize(teacher, gen)
    bn = teacher.bn1
    with torch.no_grad():
        teacher.conv1.weight[7] = 2 * teacher.conv1.weight[0]
        bn.running_mean[7], bn.running_var[7] = 2 * bn.running_mean[0], 4 * bn.running_var[0]
        bn.weight[7], bn.bias[7] = 3 * bn.weight[0], 3 * bn.bias[0]
    bn.eps = 0.0  # so that the variance scales exactly with the channel
    student = Block(7, bias).eval()
    student.bn1.eps = 0.0
    with torch.no_grad():
        student.conv1.weight.copy_(teacher.conv1.weight[:7])
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(student.bn1, key).copy_(getattr(teacher.bn1, key)[:7])
        student.conv2.weight.copy_(teacher.conv2.weight[:, :7])
        if bias:
            student.conv2.bias.copy_(teacher.conv2.bias)
        student.bn2.load_state_dict(teacher.bn2.state_dict())
    return teacher, student


def _x(n: int, seed: int, shape: tuple[int, ...] = (3, 10, 10)) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("bias", [False, True])
def test_a_removed_channel_that_is_a_combination_of_kept_ones_is_reconstructed_exactly(bias: bool) -> None:
    teacher, student = _dependent_pair(bias)
    held = _x(16, seed=9)
    with torch.no_grad():
        scale = float(teacher(held).abs().max())
        assert float((student(held) - teacher(held)).abs().max()) > 0.05 * scale  # the cut matters
    log = reconstruct(student, teacher, [_x(48, seed=1)], ridge=1e-10)
    assert log.layers == ["conv2"]
    with torch.no_grad():
        assert float((student(held) - teacher(held)).abs().max()) < 1e-4 * scale


def test_reconstruction_lowers_each_layers_error_on_held_out_inputs() -> None:
    torch.manual_seed(0)
    teacher = Block(8).eval()
    _randomize(teacher, torch.Generator().manual_seed(3))
    student = copy.deepcopy(teacher)
    # A cut of three channels that are not combinations of the others.
    with torch.no_grad():
        student.conv2.weight[:, 5:] = 0.0
    fit, held = _x(64, seed=1), _x(32, seed=2)

    def error(model: nn.Module) -> float:
        with torch.no_grad():
            got, want = model.conv2(_inner(model, held)), teacher.conv2(_inner(teacher, held))
        return float(((got - want) ** 2).sum() / (want**2).sum())

    before = error(student)
    conv1 = student.conv1.weight.detach().clone()
    log = reconstruct(student, teacher, [fit])
    assert log.layers == ["conv2"]  # conv1's output already matched: left as it was
    assert torch.equal(student.conv1.weight, conv1)
    assert log.error_after < log.error_before
    assert error(student) < 0.8 * before


def _inner(block: Block, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(block.bn1(block.conv1(x)))


def test_reconstruction_after_a_real_cut_lowers_the_output_error_and_is_seeded() -> None:
    teacher = coupled()
    specs = [TensorSpec("x", INPUT_SHAPE)]
    options = fast_options(ratio=0.4, criterion="l1")
    pruned = prune_module(teacher, specs, {}, options).module
    fit, held = _x(64, seed=4, shape=tuple(INPUT_SHAPE[1:])), _x(32, seed=5, shape=tuple(INPUT_SHAPE[1:]))

    def error(model: nn.Module) -> float:
        with torch.no_grad():
            got, want = model(held), teacher(held)
        return float(((got - want) ** 2).sum() / (want**2).sum())

    a, b, c = copy.deepcopy(pruned), copy.deepcopy(pruned), copy.deepcopy(pruned)
    log = reconstruct(a, teacher, [fit], seed=3, positions=32)
    reconstruct(b, teacher, [fit], seed=3, positions=32)
    reconstruct(c, teacher, [fit], seed=4, positions=32)
    assert log.layers and set(log.layers) <= set(layers_to_solve(pruned, teacher, [fit], pruned_only=False))
    assert error(a) < 0.7 * error(pruned)
    same = [torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)]
    other = [torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values(), strict=True)]
    assert all(same) and not all(other)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(4, 5, 3, stride=2, padding=1, dilation=1), (2, 4, 9, 7)),
        (nn.Conv2d(4, 5, (3, 1), padding=(2, 0), dilation=(2, 1)), (2, 4, 9, 7)),
        (nn.Conv1d(4, 5, 3, stride=2, padding=1), (2, 4, 11)),
        (nn.Linear(4, 5), (2, 3, 4)),
    ],
)
def test_patches_times_the_weight_is_the_layer(layer: nn.Module, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = outputs(layer, layer(x))
        got = patches(layer, x) @ layer.weight.reshape(layer.weight.shape[0], -1).T + layer.bias
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)


def test_solve_is_the_ridge_regression() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    assert torch.allclose(solve(x.T @ x, x.T @ (x @ w), ridge=0.0), w, atol=1e-9)
    shrunk = solve(x.T @ x, x.T @ (x @ w), ridge=0.5)
    assert float(shrunk.norm()) < float(w.norm())


def _fast(**over: object) -> PruneOptions:
    return fast_options(**{"ratio": 0.4, "samples": 32, "criterion": "l1", "recovery": "distill", **over})


def test_recovery_reconstructs_then_distillation_still_lowers_the_loss() -> None:
    teacher = coupled()
    specs = [TensorSpec("x", INPUT_SHAPE)]
    shape = tuple(INPUT_SHAPE[1:])
    held = [_x(16, seed=6, shape=shape)]
    plain = prune_module(teacher, specs, {}, _fast(recovery="none")).module
    result = prune_module(teacher, specs, {}, _fast(recovery="distill", max_steps=60))
    assert result.section.recovery.reconstructed_layers > 0
    assert distillation_loss(result.module, teacher, held) < 0.5 * distillation_loss(plain, teacher, held)
    # Distillation still lowers the loss it trains on after the least squares.
    rebuilt, pool = copy.deepcopy(plain), [_x(64, seed=2, shape=shape)]
    reconstruct(rebuilt, teacher, pool)
    before = distillation_loss(rebuilt, teacher, pool)
    distill(rebuilt, teacher, pool, steps=200, seed=0)
    assert distillation_loss(rebuilt, teacher, pool) < 0.8 * before


def test_the_learning_rate_rises_over_the_warmup_then_decays_to_zero() -> None:
    factors = [lr_factor(i, 100, warmup=0.1) for i in range(100)]
    assert factors[0] < 0.2 and factors[:10] == sorted(factors[:10])
    assert max(factors) == 1.0 and factors[10] == 1.0
    assert factors[10:] == sorted(factors[10:], reverse=True) and factors[-1] < 0.01
    assert lr_factor(0, 100) == 1.0  # no warmup: the cosine from the first step


@pytest.mark.parametrize("name", ["mobilenet_v2", "unet"])
def test_reconstruction_of_a_zoo_model_lowers_its_output_error(name: str) -> None:
    """Depthwise / inverted-residual and concat couplings: the layers fed by pruned channels are found
    and re-solved, and the pruned model moves towards the unpruned one on other inputs."""
    zoo = zoo_model(name)
    teacher = zoo.build().eval()
    specs = [TensorSpec(f"input_{i}", shape) for i, shape in enumerate(zoo.input_shapes)]
    options = fast_options(round_to=4, min_width=4)
    pruned = prune_module(teacher, specs, {}, options).module
    pool, held, _how, _notes = synthetic_inputs(teacher, specs, {}, 32, 16, seed=1, steps=DISTILL_STEPS)

    def error(model: nn.Module) -> float:
        with torch.no_grad():
            got, want = model(*held), teacher(*held)
        return float(((got - want) ** 2).sum() / (want**2).sum())

    rebuilt = copy.deepcopy(pruned)
    log = reconstruct(rebuilt, teacher, pool)
    assert log.layers
    assert error(rebuilt) < 0.8 * error(pruned)


class Residual(nn.Module):
    """stem -> block (conv1 -> bn1 -> relu -> conv2 -> bn2) + the stem's output, the sum spelt three ways."""

    def __init__(self, mid: int = 8, spelling: str = "+") -> None:
        super().__init__()
        self.spelling = spelling
        self.stem = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(6)
        self.conv1 = nn.Conv2d(6, mid, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.bn0(self.stem(x)))
        b = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(s)))))
        if self.spelling == "+":
            return b + s
        if self.spelling == "torch.add":
            return torch.add(s, b)
        b += s
        return b


def _residual_pair(spelling: str) -> tuple[Residual, Residual]:
    """The unpruned model, and a copy with 3 of the block's 8 inner channels cut and the stem off by
    noise (the error a residual stream brings from earlier blocks)."""
    torch.manual_seed(0)
    teacher = Residual(8, spelling).eval()
    gen = torch.Generator().manual_seed(1)
    for bn in (teacher.bn0, teacher.bn1, teacher.bn2):
        with torch.no_grad():
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
            bn.weight.copy_(0.5 + torch.rand(bn.num_features, generator=gen))
    student = Residual(5, spelling).eval()
    state = {
        k: v[:5] if k.startswith(("conv1", "bn1")) and v.dim() else v for k, v in teacher.state_dict().items()
    }
    state["conv2.weight"] = teacher.conv2.weight[:, :5]
    student.load_state_dict(state)
    with torch.no_grad():
        student.stem.weight.add_(0.3 * torch.randn(student.stem.weight.shape, generator=gen))
    return teacher, student


@pytest.mark.parametrize("spelling", ["+", "torch.add", "+="])
def test_residual_targets_make_up_for_the_shortcuts_error(spelling: str) -> None:
    teacher, student = _residual_pair(spelling)
    fit = [_x(32, seed=1, shape=(3, 8, 8))]

    def error(model: nn.Module) -> float:
        with torch.no_grad():
            got, want = model(*fit), teacher(*fit)
        return float(((got - want) ** 2).sum() / (want**2).sum())

    plain, shortcut = copy.deepcopy(student), copy.deepcopy(student)
    # pruned_only: the stem stays off (the error the shortcut brings), only conv2 is re-solved.
    kept = {"positions": 64, "ridge": 1e-8, "pruned_only": True}
    assert reconstruct(plain, teacher, fit, residual=False, **kept).layers == ["conv2"]
    assert reconstruct(shortcut, teacher, fit, **kept).layers == ["conv2"]
    # Every position is a regression row: the sum's error on these inputs can only fall.
    assert error(shortcut) < 0.8 * error(plain)


def test_narrowed_axis_is_the_one_axis_cut_to_the_kept_channels() -> None:
    keep = [0, 2, 3, 5]
    assert narrowed_axis((2, 4, 5, 5), (2, 6, 5, 5), keep) == 1
    assert narrowed_axis((2, 7, 4), (2, 7, 6), keep) == 2
    assert narrowed_axis((2, 6, 5, 5), (2, 6, 5, 5), keep) is None  # nothing narrowed
    assert narrowed_axis((2, 4, 5, 5), (2, 6, 5, 5), None) is None  # no map for this module
    assert narrowed_axis((2, 3, 5, 5), (2, 6, 5, 5), keep) is None  # not as many as kept
    assert narrowed_axis((2, 4, 4, 5), (2, 6, 5, 5), keep) is None  # two axes differ
    assert narrowed_axis((2, 4, 5, 5), (2, 5, 5, 5), keep) is None  # an index past the teacher's width
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3)
    assert torch.equal(to_student(x, (2, 4, 3), keep), x[:, keep])
    assert to_student(x, (2, 6, 3), keep) is x


class _Narrowed(nn.Module):
    """A Block whose output channels are narrowed, then a 1x1 head back to 3 channels (the output)."""

    def __init__(self, block: Block, out: int) -> None:
        super().__init__()
        self.block = block
        self.head = nn.Conv2d(out, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.block(x)))


def _narrowed_pair(keep: list[int]) -> tuple[nn.Module, nn.Module]:
    """The dependent pair (a removed inner channel that is 3x a kept one) with the block's output
    channels also cut to `keep`, as a pruned residual stream would be, and the head reading them."""
    block_t, block_s = _dependent_pair(bias=False)
    teacher = _Narrowed(block_t, 6).eval()
    torch.manual_seed(1)
    student = _Narrowed(block_s, 6).eval()
    narrow_conv = nn.Conv2d(7, len(keep), 3, padding=1, bias=False)
    narrow_bn = nn.BatchNorm2d(len(keep)).eval()
    head = nn.Conv2d(len(keep), 3, 1)
    with torch.no_grad():
        narrow_conv.weight.copy_(block_t.conv2.weight[keep][:, :7])
        for key in ("weight", "bias", "running_mean", "running_var"):
            getattr(narrow_bn, key).copy_(getattr(block_t.bn2, key)[keep])
        head.weight.copy_(teacher.head.weight[:, keep])
        head.bias.copy_(teacher.head.bias)
    student.block.conv2, student.block.bn2, student.head = narrow_conv, narrow_bn, head
    return teacher, student


def test_a_narrowed_layer_is_solved_against_the_teachers_kept_channels() -> None:
    keep = [0, 2, 3, 5]
    teacher, student = _narrowed_pair(keep)
    kept = {"block.conv2": keep, "block.bn2": keep, "block": keep}
    pool, held = [_x(64, seed=2)], [_x(8, seed=3)]
    assert "block.conv2" not in layers_to_solve(student, teacher, pool)
    assert layers_to_solve(student, teacher, pool, kept=kept)[0] == "block.conv2"
    # Distillation matches what the block hands on (narrowed), not its narrowed layers' own outputs.
    assert shared_features(student, teacher, held, kept) == ["block", "head"]
    assert shared_features(student, teacher, held) == ["head"]
    features = ["block.conv2", "block.bn2", "block", "head"]
    before = distillation_loss(student, teacher, held, features, kept)
    log = reconstruct(student, teacher, pool, ridge=1e-10, kept=kept)
    assert log.layers[0] == "block.conv2"
    with torch.no_grad():
        got, want = student.block(held[0]), teacher.block(held[0])[:, keep]
    # The removed channel is 3x a kept one: the kept outputs are rebuilt exactly.
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    # The head cannot make up for the two channels cut from its input: lower, not zero.
    assert distillation_loss(student, teacher, held, features, kept) < 0.2 * before


class _DenseBlocks(nn.Module):
    """Two DenseNet blocks in a row: each layer's output is concatenated and freed when its block returns,
    and the next block's first BatchNorm reads a new concatenation (which may take a freed id)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bns = nn.ModuleList(nn.BatchNorm2d(8 + 4 * (i % 3) + 12 * (i // 3)) for i in range(6))
        self.convs = nn.ModuleList(nn.Conv2d(bn.num_features, 4, 3, padding=1) for bn in self.bns)
        self.out_bn = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def block(self, x: torch.Tensor, first: int) -> torch.Tensor:
        features = [x]
        for bn, conv in zip(self.bns[first : first + 3], self.convs[first : first + 3], strict=True):
            features.append(conv(torch.relu(bn(torch.cat(features, 1)))))
        return torch.cat(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block(self.block(self.stem(x), 0), 3)
        return self.fc(torch.relu(self.out_bn(x)).mean((2, 3)))


def test_a_densenet_layer_is_not_paired_with_a_batchnorm_of_a_later_concatenation() -> None:
    """torchvision's DenseNet-121 failed in recovery ('The size of tensor a (256) must match the size of
    tensor b (32)'): a layer's freed output lent its id to a concatenation another BatchNorm read."""
    teacher = _DenseBlocks().eval()
    specs = [TensorSpec("x", INPUT_SHAPE)]
    widths = {n: m.out_channels for n, m in teacher.named_modules() if isinstance(m, nn.Conv2d)}
    fed = _fed_batchnorms(teacher, [_x(2, seed=1, shape=tuple(INPUT_SHAPE[1:]))], list(widths))
    assert all(bn.num_features == widths[name] for name, bn in fed.items()), fed
    result = prune_module(teacher, specs, {}, _fast(recovery="distill", max_steps=3))
    assert result.section.recovery.reconstructed_layers > 0
