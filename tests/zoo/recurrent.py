"""Recurrent zoo: GRU / LSTM / RNN in the combinations users bring.

Each model is small, seeded and in eval mode. Together they cover: every cell type (GRU, LSTM, RNN with
tanh and relu), one to three layers, uni- and bidirectional, batch_first or time-major, initial states
given as model inputs (stateful models whose state outputs must come out exact), full-sequence,
last-step (`y[:, -1]`) and final-state (`h_n`, `c_n`) outputs, odd hidden sizes and sequence lengths,
batch 2, a conv front end, and `nn.GRUCell` / `nn.LSTMCell` loops.

`edgeport convert tests/zoo/recurrent.py:<name> --input-shape ...` builds the model named <name>.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

try:
    from tests.zoo.models import ZooModel, _seeded, zoo_getattr
except ImportError:  # imported by `edgeport convert tests/zoo/recurrent.py:...`: this folder is on sys.path
    from models import ZooModel, _seeded, zoo_getattr  # type: ignore[no-redef]


def _rnn(kind: str, features: int, hidden: int, **kw) -> nn.RNNBase:
    if kind == "gru":
        return nn.GRU(features, hidden, **kw)
    if kind == "lstm":
        return nn.LSTM(features, hidden, **kw)
    return nn.RNN(features, hidden, nonlinearity=kind.removeprefix("rnn_"), **kw)


class LastStep(nn.Module):
    """Recurrent layers, then a linear head on the last time step: `head(y[:, -1])`."""

    def __init__(self, kind: str, features: int, hidden: int, classes: int = 5, **kw):
        super().__init__()
        self.rnn = _rnn(kind, features, hidden, batch_first=True, **kw)
        dirs = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear(dirs * hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


class Sequence(nn.Module):
    """The whole output sequence, through a per-step linear layer (sequence labelling)."""

    def __init__(self, kind: str, features: int, hidden: int, batch_first: bool, **kw):
        super().__init__()
        self.rnn = _rnn(kind, features, hidden, batch_first=batch_first, **kw)
        dirs = 2 if kw.get("bidirectional") else 1
        self.head = nn.Linear(dirs * hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.rnn(x)
        return self.head(y)


class FinalState(nn.Module):
    """Only the final states are read: `head(h_n[-1])` (and `c_n[-1]` for an LSTM)."""

    def __init__(self, kind: str, features: int, hidden: int, batch_first: bool, **kw):
        super().__init__()
        self.rnn = _rnn(kind, features, hidden, batch_first=batch_first, **kw)
        self.kind = kind
        self.head = nn.Linear(hidden * (2 if kind == "lstm" else 1), 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        if self.kind == "lstm":
            h, c = state
            return self.head(torch.cat([h[-1], c[-1]], dim=-1))
        return self.head(state[-1])


class Stateful(nn.Module):
    """State in, state out (streaming inference): `(x, h0) -> (y, h_n)`."""

    def __init__(self, kind: str, features: int, hidden: int, batch_first: bool, **kw):
        super().__init__()
        self.rnn = _rnn(kind, features, hidden, batch_first=batch_first, **kw)
        self.head = nn.Linear(hidden * (2 if kw.get("bidirectional") else 1), 3)

    def forward(self, x: torch.Tensor, h0: torch.Tensor):
        y, h = self.rnn(x, h0)
        return self.head(y), h


class StatefulLSTM(Stateful):
    """`(x, h0, c0) -> (y, h_n, c_n)`."""

    def __init__(self, features: int, hidden: int, batch_first: bool, **kw):
        super().__init__("lstm", features, hidden, batch_first, **kw)

    def forward(self, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):  # type: ignore[override]
        y, (h, c) = self.rnn(x, (h0, c0))
        return self.head(y), h, c


class GRUKeywordSpotter(nn.Module):
    """Keyword spotting on MFCC frames [batch, 1, time, coefficients]: conv front end, GRU, last step."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 8, (5, 3), (2, 1), (2, 1)), nn.BatchNorm2d(8), nn.ReLU())
        self.gru = nn.GRU(8 * 10, 32, batch_first=True)
        self.head = nn.Linear(32, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)  # [b, 8, t, 10]
        b, c, t, f = x.shape
        x = x.permute(0, 2, 1, 3).reshape(b, t, c * f)
        y, _ = self.gru(x)
        return self.head(y[:, -1])


class TutorialLSTM(nn.Module):
    """The classifier of countless tutorials: zero initial states built in forward(), dropout between
    layers, `out[:, -1, :]`; sequence length, features and hidden size all equal."""

    def __init__(self, size: int = 16, layers: int = 2):
        super().__init__()
        self.layers, self.size = layers, size
        self.lstm = nn.LSTM(size, size, layers, batch_first=True, dropout=0.2)
        self.fc = nn.Linear(size, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.zeros(self.layers, x.size(0), self.size)
        c0 = torch.zeros(self.layers, x.size(0), self.size)
        out, _ = self.lstm(x, (h0, c0))
        return self.fc(out[:, -1, :])


class MfccGRU(nn.Module):
    """Keyword spotting on coefficient-major MFCC [batch, coefficients, frames] (torchaudio's layout)."""

    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(40, 64, batch_first=True)
        self.fc = nn.Linear(64, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x.transpose(1, 2))
        return self.fc(out[:, -1, :])


class ConvLSTM(nn.Module):
    """Voice-activity / wake-word style: Conv1d over mel bins, then a two-layer LSTM, last step."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(40, 32, 3, padding=1), nn.BatchNorm1d(32), nn.ReLU())
        self.lstm = nn.LSTM(32, 24, num_layers=2, batch_first=True)
        self.fc = nn.Linear(24, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(self.conv(x).transpose(1, 2))
        return self.fc(y[:, -1])


class CRNN(nn.Module):
    """Text-line recognition (CRNN + CTC): convs reduce the height to 1, the width becomes time,
    a bidirectional LSTM reads it time-major and a linear layer scores the characters per step."""

    def __init__(self, classes: int = 11):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d((4, 2)),
        )
        self.rnn = nn.LSTM(32, 16, bidirectional=True)
        self.fc = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x).squeeze(2).permute(2, 0, 1)  # [width, batch, channels]
        y, _ = self.rnn(f)
        return self.fc(y)


class SpeakerEmbedding(nn.Module):
    """A speaker encoder as shipped in wheels: stacked LSTM, `h_n[-1]` -> linear -> ReLU -> L2-normalize."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(16, 32, num_layers=3, batch_first=True)
        self.proj = nn.Linear(32, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return F.normalize(F.relu(self.proj(h[-1])), dim=1)


class GRUCellLoop(nn.Module):
    """A hand-written loop over `nn.GRUCell` (traced: unrolled by the exporter), mean over steps."""

    def __init__(self):
        super().__init__()
        self.cell = nn.GRUCell(10, 20)
        self.head = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[0], 20)
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        return self.head(torch.stack(outs, 1).mean(1))


class LSTMCellStateful(nn.Module):
    """One streaming step of an `nn.LSTMCell` pair per frame, with state in and out."""

    def __init__(self):
        super().__init__()
        self.cell1 = nn.LSTMCell(12, 16)
        self.cell2 = nn.LSTMCell(16, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        h1, c1, h2, c2 = h[0], c[0], h[1], c[1]
        ys = []
        for t in range(x.shape[1]):
            h1, c1 = self.cell1(x[:, t], (h1, c1))
            h2, c2 = self.cell2(h1, (h2, c2))
            ys.append(self.head(h2))
        return torch.stack(ys, 1), torch.stack([h1, h2]), torch.stack([c1, c2])


ZOO: list[ZooModel] = [
    ZooModel(
        "gru_kws",
        _seeded(GRUKeywordSpotter),
        [[1, 1, 49, 10]],
        (0,),
        what="conv front end, GRU, head on y[:, -1] (issue 10)",
    ),
    ZooModel(
        "lstm2_last",
        _seeded(lambda: LastStep("lstm", 10, 24, num_layers=2)),
        [[1, 20, 10]],
        what="two-layer LSTM, head on y[:, -1] (issue 10)",
    ),
    ZooModel(
        "lstm2_tutorial",
        _seeded(TutorialLSTM),
        [[1, 16, 16]],
        what="two-layer LSTM, zero states built in forward(), dropout, out[:, -1, :], all sizes 16",
    ),
    ZooModel(
        "gru_mfcc_kws",
        _seeded(MfccGRU),
        [[1, 40, 49]],
        transpose_free=False,  # the model's own x.transpose(1, 2) of an input kept as given
        what="GRU on coefficient-major MFCC (x.transpose(1, 2)), hidden 64, out[:, -1, :]",
    ),
    ZooModel(
        "conv1d_lstm2",
        _seeded(ConvLSTM),
        [[1, 40, 24]],
        (0,),
        what="Conv1d front end over mel bins, two-layer LSTM, y[:, -1]",
    ),
    ZooModel(
        "crnn_ocr",
        _seeded(CRNN),
        [[1, 1, 8, 48]],
        (0,),
        what="CRNN text recognizer: convs, height squeezed, width as time, BiLSTM, per-step scores",
    ),
    ZooModel(
        "gru2_bidir_last",
        _seeded(lambda: LastStep("gru", 8, 16, num_layers=2, bidirectional=True)),
        [[1, 11, 8]],
        what="two-layer bidirectional GRU, y[:, -1]",
    ),
    ZooModel(
        "rnn_tanh_last",
        _seeded(lambda: LastStep("rnn_tanh", 6, 13)),
        [[1, 9, 6]],
        what="nn.RNN tanh, odd hidden size, y[:, -1]",
    ),
    ZooModel(
        "rnn_relu2_seq",
        _seeded(lambda: Sequence("rnn_relu", 6, 12, batch_first=True, num_layers=2)),
        [[1, 7, 6]],
        what="two-layer nn.RNN relu, full sequence",
    ),
    ZooModel(
        "gru_time_major_seq",
        _seeded(lambda: Sequence("gru", 8, 16, batch_first=False)),
        [[9, 1, 8]],
        what="GRU, batch_first=False, full sequence",
    ),
    ZooModel(
        "lstm_bidir_seq",
        _seeded(lambda: Sequence("lstm", 8, 12, batch_first=True, bidirectional=True)),
        [[1, 13, 8]],
        what="bidirectional LSTM, full sequence, odd length",
    ),
    ZooModel(
        "rnn_bidir3_time_major",
        _seeded(lambda: Sequence("rnn_tanh", 5, 10, batch_first=False, num_layers=3, bidirectional=True)),
        [[6, 1, 5]],
        what="three-layer bidirectional nn.RNN, time-major",
    ),
    ZooModel(
        "lstm_final_state",
        _seeded(lambda: FinalState("lstm", 10, 20, batch_first=True, num_layers=2)),
        [[1, 15, 10]],
        what="two-layer LSTM, head on h_n[-1] and c_n[-1]",
    ),
    ZooModel(
        "gru_final_state_batch2",
        _seeded(lambda: FinalState("gru", 7, 11, batch_first=False)),
        [[5, 2, 7]],
        what="GRU, time-major, batch 2, head on h_n[-1]",
    ),
    ZooModel(
        "speaker_lstm3",
        _seeded(SpeakerEmbedding),
        [[1, 25, 16]],
        what="three-layer LSTM speaker embedding, h_n[-1], L2-normalized",
    ),
    ZooModel(
        "lstm2_stateful",
        _seeded(lambda: StatefulLSTM(10, 16, batch_first=True, num_layers=2)),
        [[1, 8, 10], [2, 1, 16], [2, 1, 16]],
        what="two-layer LSTM, h0/c0 in, y/h_n/c_n out",
    ),
    ZooModel(
        "gru_bidir_stateful",
        _seeded(lambda: Stateful("gru", 6, 10, batch_first=True, bidirectional=True)),
        [[1, 7, 6], [2, 1, 10]],
        what="bidirectional GRU, h0 in, y/h_n out",
    ),
    ZooModel(
        "rnn_relu_stateful_time_major",
        _seeded(lambda: Stateful("rnn_relu", 6, 9, batch_first=False)),
        [[5, 1, 6], [1, 1, 9]],
        what="nn.RNN relu, time-major, h0 in, y/h_n out",
    ),
    ZooModel("gru_cell_loop", _seeded(GRUCellLoop), [[1, 8, 10]], what="nn.GRUCell loop, mean over steps"),
    ZooModel(
        "lstm_cell_stateful",
        _seeded(LSTMCellStateful),
        [[1, 6, 12], [2, 1, 16], [2, 1, 16]],
        what="two nn.LSTMCell per frame, state in and out",
    ),
]


__getattr__ = zoo_getattr(ZOO)
