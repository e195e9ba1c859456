"""What the PyTorch exporter refuses but ONNX expresses (Python's `not` on an int, `~` on integers), and
TorchScript modules that keep state between calls (silero-vad's .jit: a context buffer and an RNN state
set in forward(), a sample-rate argument); seeded stand-ins, not the real model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from edgeport.converters.sources import FreshStateModule, attributes_set, load_source
from edgeport.converters.torch_to_onnx import export_onnx, run_module, with_output_shapes
from edgeport.runtimes.onnxrt import run_onnx


class _Invert(nn.Module):
    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return x * (~k).to(torch.float32)


KEYS = {
    torch.int64: torch.tensor([[-5, -1, 0, 1, 7]]),
    torch.int32: torch.tensor([[-2147483648, -1, 0, 1, 2147483647]]),
    torch.int8: torch.tensor([[-128, -1, 0, 1, 127]]),
    torch.uint8: torch.tensor([[0, 1, 128, 254, 255]]),
    torch.bool: torch.tensor([[True, False, True, True, False]]),
}


@pytest.mark.parametrize("dtype", list(KEYS), ids=str)
def test_bitwise_not_exports_and_matches_pytorch(tmp_path: Path, dtype: torch.dtype) -> None:
    x, k = torch.linspace(-1, 1, 5).reshape(1, 5), KEYS[dtype].to(dtype)
    model = export_onnx(_Invert(), [x, k], tmp_path / "m.onnx", ["x", "k"])
    (got,) = run_onnx(model.SerializeToString(), [{"x": x.numpy(), "k": k.numpy()}])
    np.testing.assert_array_equal(got["output"], _Invert()(x, k).numpy())


class Streaming(nn.Module):
    """A streaming model as silero-vad's TorchScript file is: forward() prepends the previous call's
    last samples (a context kept on the module, created on the first call: `if not len(...)`), steps
    a recurrence from the state the previous call left, branches on a sample-rate argument."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv1d(1, 4, 5, stride=4)
        self.w = nn.Linear(4, 6)
        self.u = nn.Linear(6, 6, bias=False)
        self.head = nn.Linear(6, 1)
        self._context = torch.zeros(0)
        self._state = torch.zeros(0)

    def forward(self, x: torch.Tensor, sr: int) -> torch.Tensor:
        if not len(self._context):
            self._context = torch.zeros(x.shape[0], 8)
        if not len(self._state):
            self._state = torch.zeros(x.shape[0], 6)
        x = torch.cat([self._context, x], 1)
        scale = 1.0 if sr == 16000 else 2.0
        features = torch.relu(self.conv(x.unsqueeze(1) * scale)).mean(-1)
        self._state = torch.tanh(self.w(features) + self.u(self._state))
        self._context = x[:, -8:]
        return torch.sigmoid(self.head(self._state))


def _scripted(tmp_path: Path) -> Path:
    path = tmp_path / "streaming.pt"
    torch.jit.save(torch.jit.script(Streaming().eval()), str(path))
    return path


def test_attributes_set_names_the_state_a_scripted_forward_assigns(tmp_path: Path) -> None:
    net = torch.jit.load(str(_scripted(tmp_path)))
    assert attributes_set(net) == ["_context", "_state"]
    assert attributes_set(nn.Linear(2, 2)) == []
    assert attributes_set(torch.jit.script(nn.Linear(2, 2))) == []


def test_a_stateful_torchscript_is_called_fresh_and_warned_about(tmp_path: Path) -> None:
    source = load_source(str(_scripted(tmp_path)))
    assert isinstance(source.module, FreshStateModule)
    assert "keeps state between calls" in source.warnings[0] and "_context, _state" in source.warnings[0]
    x = torch.linspace(-1, 1, 32).reshape(1, 32)
    first = run_module(source.module, [x, torch.tensor(16000)])[0]
    again = run_module(source.module, [x, torch.tensor(16000)])[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    # The module itself would have moved on: the second call of one copy differs.
    copy = source.module.fresh()
    run_module(copy, [x, torch.tensor(16000)])
    assert not torch.equal(run_module(copy, [x, torch.tensor(16000)])[0], first)


def test_the_export_holds_the_loaded_state_and_matches_a_fresh_call(tmp_path: Path) -> None:
    source = load_source(str(_scripted(tmp_path)))
    x = torch.linspace(-1, 1, 32).reshape(1, 32)
    sr = torch.tensor(16000)
    model = export_onnx(source.module, [x, sr], tmp_path / "m.onnx", ["x", "sr"])
    onnx.checker.check_model(model)  # outputs have shapes (a scripted export writes none)
    assert [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim] == [1, 1]
    (got,) = run_onnx(model.SerializeToString(), [{"x": x.numpy(), "sr": sr.numpy()}])
    expected = torch.jit.load(str(tmp_path / "streaming.pt"))(x, 16000)
    np.testing.assert_allclose(got["output"], expected.detach().numpy(), rtol=1e-6, atol=1e-7)


def test_with_output_shapes_fills_only_missing_shapes() -> None:
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["a"], ["b"]), onnx.helper.make_node("Identity", ["a"], ["c"])],
        "g",
        [onnx.helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [2, 3])],
        [
            onnx.helper.make_tensor_value_info("b", onnx.TensorProto.FLOAT, None),
            onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, ["n", 3]),
        ],
    )
    model = with_output_shapes(onnx.helper.make_model(graph), [[2, 3], [2, 3]])
    dims = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in model.graph.output]
    assert dims == [[2, 3], ["n", 3]]


def test_stateful_torchscript_converts_with_the_sample_rate_fixed(tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli(
        "convert", _scripted(tmp_path), "--input-shape", "1,32", "--input-shape", "scalar",
        "--input-value", "input_1=16000", "-o", tmp_path / "out",
    )  # fmt: skip
    assert code == 0, err
    assert "input input_1 fixed to 16000" in out and "keeps state between calls" in out


class _Counter(nn.Module):
    """A Python module that counts its calls in a buffer and adds the count to its output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.register_buffer("calls", torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fc(x) + self.calls


class _Cache(nn.Module):
    """State that does not change the outputs (a cache filled on the first call) is not refused."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.cached: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cached is None:
            self.cached = torch.ones(2)
        return self.fc(x) * self.cached


def test_a_python_module_whose_outputs_drift_between_calls_is_refused(tmp_path: Path) -> None:
    from edgeport.errors import EdgeportError

    torch.manual_seed(0)
    with pytest.raises(EdgeportError, match="other outputs on a second call with the same inputs"):
        export_onnx(_Counter().eval(), [torch.ones(1, 4)], tmp_path / "m.onnx", ["x"])
    torch.manual_seed(0)
    export_onnx(_Cache().eval(), [torch.ones(1, 4)], tmp_path / "c.onnx", ["x"])
