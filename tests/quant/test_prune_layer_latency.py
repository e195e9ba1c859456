"""quant/prune/layer_latency.py: the one-op .tflite models it times compute what the torch modules do
(LiteRT against torch, so the timed op is the real op), and the table a latency target weighs steps
in, with a fake timer (no timing assertions)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from edgeport.quant.prune import layer_latency
from edgeport.quant.prune.allocate import (
    LOOKAHEAD,
    CostModel,
    CostTerm,
    Sensitivity,
    allocate,
    kept_widths,
    lookahead,
)
from edgeport.quant.prune.layer_latency import (
    LayerShape,
    LayerTable,
    Timer,
    layer_shape,
    single_op_model,
)
from edgeport.runtimes.litert import interleaved_invoke_times, interpreter
from tests.quant.prune_models import one_torch_thread  # noqa: F401 (autouse fixture)


def _litert(model: bytes, value: np.ndarray) -> np.ndarray:
    runner = interpreter(model, delegates=True)
    runner.allocate_tensors()
    runner.set_tensor(runner.get_input_details()[0]["index"], value)
    runner.invoke()
    return runner.get_tensor(runner.get_output_details()[0]["index"])


CONVS = [
    nn.Conv2d(8, 12, 3, padding=1),  # SAME
    nn.Conv2d(8, 12, 3, stride=2, padding=1),  # torch pads 1/1, SAME would pad 0/1: VALID on a padded input
    nn.Conv2d(8, 6, (3, 5), stride=(1, 2), padding=(0, 2), dilation=(2, 1)),
    nn.Conv2d(8, 8, 1),
    nn.Conv2d(8, 8, 3, groups=8, padding=1),  # depthwise
    nn.Conv2d(8, 8, 3, groups=8, stride=2, padding=1),
]


@pytest.mark.parametrize("index", range(len(CONVS)))
def test_a_convolution_built_from_the_schema_computes_what_torch_does(index: int) -> None:
    torch.manual_seed(index)
    conv = CONVS[index].eval()
    x = torch.randn(1, 8, 11, 9)
    shape = layer_shape(conv, x.shape)
    assert shape is not None and shape.kind == ("depthwise" if conv.groups > 1 else "conv")
    order = (0, 2, 3, 1) if shape.kind == "conv" else (1, 2, 3, 0)  # OHWI, 1HWO
    model = single_op_model(shape, conv.weight.detach().permute(*order).numpy(), conv.bias.detach().numpy())
    fed = x if shape.same else F.pad(x, conv._reversed_padding_repeated_twice)
    ours = _litert(model, fed.permute(0, 2, 3, 1).contiguous().numpy())
    with torch.no_grad():
        theirs = conv(x).permute(0, 2, 3, 1).numpy()
    assert ours.shape == theirs.shape == (1, *shape.out_size, conv.out_channels)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_a_linear_built_from_the_schema_computes_what_torch_does() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(20, 7)
    x = torch.randn(1, 5, 20)  # a sequence: 5 rows through one FULLY_CONNECTED
    shape = layer_shape(linear, x.shape)
    assert shape == LayerShape("linear", 5, 1, 20, 7)
    ours = _litert(
        single_op_model(shape, linear.weight.detach().numpy(), linear.bias.detach().numpy()),
        x.reshape(5, 20).numpy(),
    )
    with torch.no_grad():
        np.testing.assert_allclose(ours, linear(x).reshape(5, 7).numpy(), atol=1e-4)


def test_ops_it_does_not_time_have_no_shape() -> None:
    x = torch.zeros(1, 8, 6, 6)
    assert layer_shape(nn.Conv2d(8, 8, 3, groups=2), x.shape) is None  # grouped
    assert layer_shape(nn.Conv2d(8, 16, 3, groups=8), x.shape) is None  # a channel multiplier
    assert layer_shape(nn.ConvTranspose2d(8, 8, 2), x.shape) is None
    assert layer_shape(nn.Conv1d(8, 8, 3), (1, 8, 6)) is None


def test_interleaved_times_are_one_figure_per_round_per_model() -> None:
    models = [single_op_model(LayerShape("conv", 6, 6, 4, c, (3, 3), same=True)) for c in (4, 8)]
    times = interleaved_invoke_times(models, rounds=3)
    assert [len(t) for t in times] == [3, 3] and all(v > 0 for t in times for v in t)


class _Net(nn.Module):
    """conv (group 0 out) -> conv (group 0 in, group 1 out) -> a transposed conv the table cannot time."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(32, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.b(self.a(x)))


def _fake_timer(asked: list[LayerShape]):  # noqa: ANN202 - a fake Timer
    """µs = the shape's output channels plus a tenth of its input channels, one round; records what it
    was asked."""

    def timer(shapes: Sequence[LayerShape]) -> list[list[float]]:
        asked.extend(shapes)
        return [[s.cout + 0.1 * s.cin] for s in shapes]

    return timer


def _table(
    asked: list[LayerShape], timer: Timer | None = None, say: Callable[[str], None] | None = None
) -> LayerTable:
    net = _Net()
    model = CostModel(
        [
            CostTerm(1000, 0, module="a"),
            CostTerm(2000, 1, [(0, 1.0)], module="b"),
            CostTerm(500, None, [(1, 1.0)], module="up"),
        ]
    )
    return LayerTable(net, [torch.zeros(1, 3, 8, 8)], model, 2, timer or _fake_timer(asked), say)


def test_the_table_times_each_layer_at_its_kept_widths_once() -> None:
    asked: list[LayerShape] = []
    table = _table(asked)
    assert {(s.kind, s.cin, s.cout) for s in table.shapes_at(table.full)} == {
        ("conv", 3, 16),
        ("conv", 16, 32),
    }
    # a: 16 + 0.3, b: 32 + 1.6; the transposed conv at the timed layers' µs per MAC (49.9 / 3000)
    assert table.total([1.0, 1.0]) == pytest.approx(16.3 + 33.6 + 500 * 49.9 / 3000)
    assert table.total([0.5, 1.0]) == pytest.approx(8.3 + 32.8 + 500 * 49.9 / 3000)
    assert table.total([0.5, 0.5]) == pytest.approx(8.3 + 16.8 + 250 * 49.9 / 3000)
    table.total([0.5, 1.0])
    assert len(asked) == len(set(asked)) == table.timed == 5  # a shape is timed once per run
    b = next(s for s in asked if s.cin == 8 and s.cout == 16)
    assert (b.height, b.width, b.stride, b.same) == (10, 10, (2, 2), False)  # padded as torch pads it


def test_one_measure_times_every_missing_shape_in_one_batch() -> None:
    asked: list[LayerShape] = []
    calls: list[int] = []
    table = _table(asked)
    timer = table.timer
    table.timer = lambda shapes: calls.append(len(shapes)) or timer(shapes)
    table.measure([[1.0, 1.0], [0.5, 1.0], [1.0, 0.5]])
    assert calls == [5]
    table.measure([[0.5, 1.0]])
    assert calls == [5]


def test_the_noise_floor_is_the_unpruned_layers_median_spread() -> None:
    def timer(shapes: Sequence[LayerShape]) -> list[list[float]]:
        return [
            [10.0, 11.0, 12.0, 13.0, 14.0] if s.cin == 3 else [20.0, 20.0, 24.0, 28.0, 28.0] for s in shapes
        ]

    table = _table([])
    table.timer = timer
    assert table.noise == pytest.approx(np.median([1.0, 4.0]))  # half the interquartile ranges


def _is_b(shape: LayerShape) -> bool:
    """Layer b of _Net (16 -> 32 channels at full width, any narrower cut of them)."""
    return shape.stride == (2, 2)


def test_a_layer_the_timer_fails_on_counts_by_its_macs_with_one_line() -> None:
    """LiteRT failing on one layer's one-op model does not stop the table: the batch is timed again
    shape by shape, that layer counts from then on by its MACs at the timed layers' µs per MAC (as
    the transposed conv does), is never timed again, and one line names it."""
    asked: list[LayerShape] = []
    batches: list[list[LayerShape]] = []
    fake = _fake_timer(asked)

    def timer(shapes: Sequence[LayerShape]) -> list[list[float]]:
        batches.append(list(shapes))
        if any(_is_b(s) for s in shapes):
            raise RuntimeError("tensorflow/lite/kernels/conv.cc:351 a geometry it cannot run\nmore")
        return fake(shapes)

    lines: list[str] = []
    table = _table(asked, timer, lines.append)
    per_mac = 16.3 / 1000  # a alone is timed at full width
    assert table.total([1.0, 1.0]) == pytest.approx(16.3 + (2000 + 500) * per_mac)
    assert table.total([0.5, 1.0]) == pytest.approx(8.3 + (1000 + 500) * per_mac)
    assert table.total([0.5, 0.5]) == pytest.approx(8.3 + (500 + 250) * per_mac)
    assert table.noise == 0.0 and table.timed == 2 and not any(_is_b(s) for s in asked)
    assert [len(b) for b in batches] == [2, 1, 1, 1]  # a and b, then each alone; then a at 8 alone
    assert len(lines) == 1
    assert "layer b " in lines[0] and "conv 16 -> 32 channels" in lines[0]
    assert "RuntimeError: tensorflow/lite/kernels/conv.cc:351 a geometry it cannot run)" in lines[0]
    assert "\n" not in lines[0]


def test_a_one_op_model_that_cannot_be_built_is_counted_by_its_macs(monkeypatch) -> None:
    """The default timer (this host's LiteRT, one small layer really timed): a shape whose one-op
    model fails to build falls back the same way."""
    real = layer_latency.single_op_model

    def build(shape: LayerShape) -> bytes:
        if _is_b(shape):
            raise ValueError("no such geometry")
        return real(shape)

    monkeypatch.setattr(layer_latency, "single_op_model", build)
    lines: list[str] = []
    table = _table([], layer_latency.time_shapes, lines.append)
    total = table.total([1.0, 1.0])
    (a,) = table.times.values()
    assert total == pytest.approx(a + (2000 + 500) * a / 1000)
    assert len(lines) == 1 and "layer b " in lines[0] and "ValueError: no such geometry" in lines[0]


class _Wide(nn.Module):
    """A 512-wide hidden layer: one group of 512 channels between two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(16, 512), nn.Linear(512, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.relu(self.a(x)))


def test_a_measured_step_times_at_most_the_lookahead_s_widths() -> None:
    """At --prune-round 1 a 512-channel group has 511 narrower widths; a step tries LOOKAHEAD of them
    (the next one and the narrowest among them), so each of its batches times at most that many
    widths of each of the group's two layers (plus the unpruned ones)."""
    assert lookahead(1, 511) == sorted(set(lookahead(1, 511)))
    assert len(lookahead(1, 511)) == LOOKAHEAD and lookahead(1, 511)[::15] == [1, 511]
    assert lookahead(3, 5) == [3, 4, 5] and lookahead(6, 5) == []
    batches: list[int] = []
    fake = _fake_timer([])

    def timer(shapes: Sequence[LayerShape]) -> list[list[float]]:
        batches.append(len(shapes))
        return fake(shapes)

    model = CostModel([CostTerm(16 * 512, 0, module="a"), CostTerm(512 * 10, None, [(0, 1.0)], module="b")])
    table = LayerTable(_Wide(), [torch.zeros(1, 16)], model, 1, timer)
    # Error growing with the square of the channels removed: many small steps, each one timed.
    sensitivity = Sensitivity([0, 128, 256, 511], [0.0, 0.1, 0.4, 1.6])
    taken = allocate(model, [512], [kept_widths(512, 1, 1)], [sensitivity], 0.5, score=table)
    assert len(taken.steps) > 1 and taken.cost_after <= 0.5 * taken.cost_before
    assert batches and max(batches) <= 2 * (LOOKAHEAD + 1)
    assert table.timed == sum(batches) <= 2 * (LOOKAHEAD + 1) * len(taken.steps)
