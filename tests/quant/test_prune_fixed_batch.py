"""A model whose forward runs only at batch 1 is refused by --prune in one line naming where it fails
(pruning's checks and rankings run it on batches), not from inside a check."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from edgeport.cli import main
from edgeport.errors import EdgeportError
from edgeport.quant.prune import prune_module
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import ENTRIES

OPTIONS = fast_options(round_to=4, min_width=4)


# Zoo models (none in the fast set) that run only at batch 1 -> the module the refusal names: a key
# padding mask buffer made for one input; recurrent states given as inputs with their batch on axis 1.
FIXED_BATCH = {
    "attention/mha_padding_mask": "attn (MultiheadAttention)",
    "recurrent/lstm2_stateful": "(LSTM)",
    "recurrent/gru_bidir_stateful": "(GRU)",
    "recurrent/rnn_relu_stateful_time_major": "(RNN)",
    "recurrent/lstm_cell_stateful": "(LSTMCell)",
}


@pytest.mark.parametrize("zoo_id", sorted(FIXED_BATCH))
def test_zoo_models_that_run_only_at_batch_1_are_refused_naming_the_module(zoo_id: str) -> None:
    entry = next(e for e in ENTRIES if e.id == zoo_id)
    specs = [TensorSpec(f"input_{i}", s) for i, s in enumerate(entry.model.input_shapes)]
    with pytest.raises(EdgeportError) as err:
        prune_module(entry.model.build(), specs, {}, OPTIONS)
    text = str(err.value)
    assert "\n" not in text and "at batch 2 " in text and FIXED_BATCH[zoo_id] + ":" in text
    assert "any batch size" in err.value.fix


class BatchOneView(nn.Module):
    """Runs at batch 1 only: the flatten names the batch as 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).view(1, -1))


def test_a_forward_that_fixes_batch_1_itself_is_refused_naming_the_forward() -> None:
    with pytest.raises(EdgeportError, match="at batch 2 the model's forward|at batch 2 fc") as err:
        prune_module(BatchOneView(), [TensorSpec("x", [1, 3, 4, 4])], {}, OPTIONS)
    assert "\n" not in str(err.value)


def test_a_model_that_runs_at_no_batch_is_not_called_a_fixed_batch_model() -> None:
    class Broken(BatchOneView):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.conv(x))  # [N, 8, 4, 4] into a Linear of 128: fails at every batch

    with pytest.raises(Exception) as err:  # noqa: PT011 - whatever the analysis says, not the batch line
        prune_module(Broken(), [TensorSpec("x", [1, 3, 4, 4])], {}, OPTIONS)
    assert "at batch 2" not in str(err.value)


def test_convert_refuses_it_in_one_line_and_writes_nothing(tmp_path: Path, capsys) -> None:
    source = tmp_path / "masked.py"
    source.write_text(
        textwrap.dedent(
            """
            import torch
            from torch import nn

            class Masked(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.attn = nn.MultiheadAttention(16, 4, batch_first=True)
                    self.register_buffer("mask", torch.tensor([[False] * 5 + [True]]))

                def forward(self, x):
                    return self.attn(x, x, x, key_padding_mask=self.mask, need_weights=False)[0]

            def build():
                torch.manual_seed(0)
                return Masked().eval()
            """
        )
    )
    outdir = tmp_path / "out"
    argv = [
        "convert",
        f"{source}:build",
        "--input-shape",
        "1,6,16",
        "--prune",
        "0.3",
        "-o",
        str(outdir),
        "-q",
    ]
    assert main(argv) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert "at batch 2 attn (MultiheadAttention)" in lines[0] and "pass 'prune' failed" not in lines[0]
    assert not captured.out and not outdir.exists()
