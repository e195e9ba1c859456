"""int8 LOGISTIC / TANH inputs too wide for TFLite Micro: found from the scale, refused with the reason."""

from pathlib import Path

import pytest

from edgeport.quant.tflm_saturation import input_radius

# Scales measured on silero-vad's int8 model: its LSTM gates (+-6e4, every input saturated in TFLite
# Micro) and the cell-state TANH that follows (an ordinary range).
GATE_SCALE, CELL_SCALE = 468.7236633300781, 0.03045324794948101


@pytest.mark.parametrize(
    ("scale", "radius"),
    [(GATE_SCALE, 0), (CELL_SCALE, 480), (7.4, 1), (15.1, 0), (1 / 128, 960), (0.05, 240)],
)
def test_input_radius_is_tflite_micros(scale: float, radius: int) -> None:
    assert input_radius(scale) == radius


LOUD_GATE_SOURCE = '''
import torch
from torch import nn


class LoudGate(nn.Module):
    """A sigmoid on a Linear whose outputs span about +-2e4 (an unnormalized gate)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(8, 8)
        with torch.no_grad():
            self.fc.weight.mul_(1e4)

    def forward(self, x):
        return torch.sigmoid(self.fc(x))
'''


def test_int8_of_a_sigmoid_too_wide_for_tflite_micro_is_refused_with_the_reason(
    run_cli, tmp_path: Path
) -> None:
    (tmp_path / "loud.py").write_text(LOUD_GATE_SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'loud.py'}:LoudGate", "-o", out, "--input-shape", "1,8", "--quantize", "int8"
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err and not out.exists()
    assert "TFLite Micro's int8 LOGISTIC" in err and "saturates every input, 0 included" in err
    assert "--quantize dynamic or float16" in err
