"""What the inputs look like, without --quantize: --input-range / --mean / --std and fixed values
(--input-value NAME=VALUE) shape the verification inputs (and the export and calibration inputs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.options import flag_spell, validate_options
from edgeport.pipeline import ConvertOptions
from edgeport.quant.calibration import make_calibration
from edgeport.quant.input_stats import (
    EVERY_INPUT,
    FIXED,
    InputStats,
    resolve_input_stats,
    verification_sample_kinds,
    verification_samples,
)
from edgeport.quant.modes import QuantOptions
from edgeport.tensors import TensorSpec

SPELL = flag_spell(ConvertOptions)


def _options(**given: object) -> ConvertOptions:
    return validate_options(ConvertOptions, {"source": "m.onnx", "outdir": "o", **given})


def _resolve(specs: list[TensorSpec], opts: ConvertOptions) -> dict[str, InputStats]:
    return resolve_input_stats(specs, {}, opts.input_range, opts.mean, opts.std, opts.input_values, SPELL)


AUDIO = TensorSpec("audio", [1, 512])
SR = TensorSpec("sr", [], "int64")
IDS = TensorSpec("ids", [1, 6], "int64")


# ---- the options ---------------------------------------------------------------------------------


def test_input_values_and_named_ranges_are_parsed() -> None:
    opts = _options(input_values=["sr=16000", "gain = 0.5,1,2"], input_range=["0,1", "ids=0,999"])
    assert opts.input_values == {"sr": [16000.0], "gain": [0.5, 1.0, 2.0]}
    assert opts.input_range == {EVERY_INPUT: (0.0, 1.0), "ids": (0.0, 999.0)}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (
            {"input_values": ["16000"]},
            r"^--input-value '16000' names no input\. Write it as --input-value NAME=",
        ),
        ({"input_values": ["sr=a"]}, r"^--input-value 'a' is not valid"),
        ({"input_values": ["sr=nan"]}, r"^--input-value 'nan' is not valid"),
        (
            {"input_range": ["=0,1"]},
            r"^--input-range '=0,1' names no input\. Write it as --input-range NAME=lo,hi",
        ),
        ({"input_values": ["sr=1", "sr=2"]}, r"^--input-value is given twice for input 'sr'"),
        ({"input_range": ["ids=5,1"]}, r"^--input-range ids=5,1 is empty"),
        ({"input_range": ["0,1", "2,3"]}, r"^--input-range is given twice for every input"),
        ({"input_range": ["1"]}, r"^--input-range '1' is not valid\. Write it as lo,hi"),
        ({"input_values": ["sr=1"], "input_range": ["sr=0,2"]}, r"^input 'sr' has both --input-value and"),
        ({"std": "1,0"}, r"^--std must be positive"),
        (
            {"input_values": ["sr=1"], "quantize": QuantOptions(method="gaussian")},
            r"^--calibration-method gaussian draws every input from N\(0, 1\), ignoring --input-value",
        ),
    ],
)
def test_bad_input_options_are_one_line_naming_the_fix(given: dict, message: str) -> None:
    with pytest.raises(EdgeportError, match=message):
        _options(**given)


def test_input_options_are_accepted_without_quantize(run_cli, tmp_path: Path) -> None:
    """They were refused without --quantize; an unknown input is refused before the conversion."""
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", "tests/fixtures/tiny_models.py:SequenceHead", "--input-shape", "1,5,16", "-o", out,
        "--input-range", "0,1", "--input-value", "rate=16000",
    )  # fmt: skip
    assert code == 1 and "Traceback" not in err and not out.exists()
    assert "--input-value rate=... names no input of the model. Name one of its inputs: x" in err


# ---- against the model's inputs ------------------------------------------------------------------


def test_a_fixed_value_must_fit_the_input() -> None:
    image = TensorSpec("image", [1, 3, 8, 8])
    for specs, values, message in (
        ([AUDIO, SR], {"rate": [1]}, r"--input-value rate=\.\.\. names no input of the model\. Name one of"),
        (
            [AUDIO, SR],
            {"sr": [8000, 16000]},
            r"sr=8000,16000 has 2 values, but input 'sr' \(shape \[\]\) takes one",
        ),
        ([image], {"image": [1, 2]}, r"takes one number or 3 \(one per channel\)"),
        ([AUDIO, SR], {"sr": [16000.5]}, r"--input-value sr=16000\.5: input 'sr' is int64\. Give an integer"),
    ):
        with pytest.raises(EdgeportError, match=message):
            resolve_input_stats(specs, {}, {}, None, None, values, SPELL)
    stats = resolve_input_stats([image], {}, {}, None, None, {"image": [1, 2, 3]}, SPELL)
    value = stats["image"].fixed_value(image)
    assert value.shape == (1, 3, 8, 8) and value.dtype == np.float32 and list(value[0, :, 0, 0]) == [1, 2, 3]


def test_a_range_for_every_input_applies_to_float_inputs_else_to_integer_ones() -> None:
    stats = _resolve([AUDIO, IDS], _options(input_range="-1,1"))
    assert set(stats) == {"audio"} and (stats["audio"].low, stats["audio"].high) == (-1.0, 1.0)
    stats = _resolve([IDS], _options(input_range="0,999"))
    assert (stats["ids"].low, stats["ids"].high) == (0.0, 999.0)
    stats = _resolve([AUDIO, IDS], _options(input_range=["-1,1", "ids=0,11"]))
    assert (stats["ids"].low, stats["ids"].high) == (0.0, 11.0)
    with pytest.raises(EdgeportError, match=r"^--input-range ids=0\.2,0\.8 holds no integer"):
        _resolve([IDS], _options(input_range="ids=0.2,0.8"))
    with pytest.raises(EdgeportError, match=r"^--mean describes float inputs, and the model has none"):
        _resolve([IDS], _options(mean="0.5"))
    with pytest.raises(
        EdgeportError, match=r"^--mean has 2 values, input 'audio' has 512 channels. Give one value or 512"
    ):
        _resolve([AUDIO], _options(mean="0.5,1"))


# ---- verification and calibration draw from them ------------------------------------------------


def test_verification_samples_hold_the_fixed_value_and_cover_integer_ranges() -> None:
    specs = [AUDIO, IDS, SR]
    stats = _resolve(specs, _options(input_range=["-1,1", "ids=0,999"], input_values=["sr=16000"]))
    assert stats["sr"].source == FIXED
    samples = verification_samples(specs, 3, 0, stats)
    assert len(samples) == 9  # normal, with the statistics, uniform over the ranges
    assert all(s["sr"].shape == () and s["sr"].dtype == np.int64 and int(s["sr"]) == 16000 for s in samples)
    ids = np.stack([s["ids"] for s in samples[3:]])
    assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() <= 999 and ids.max() > 500
    audio = np.stack([s["audio"] for s in samples])
    assert audio.min() >= -1 and audio.max() <= 1
    assert verification_sample_kinds(specs, 3, stats) == [
        "3 standard-normal",
        "3 normal with the inputs' statistics (audio: user, ids: user)",
        "3 uniform over the inputs' ranges (audio: [-1, 1], ids: [0, 999])",
        "every sample with sr = 16000",
    ]


def test_a_fixed_value_alone_adds_no_sample_group() -> None:
    stats = _resolve([AUDIO, SR], _options(input_values=["sr=8000"]))
    samples = verification_samples([AUDIO, SR], 3, 0, stats)
    assert len(samples) == 3 and all(int(s["sr"]) == 8000 for s in samples)


@pytest.mark.parametrize("method", ["input-stats", "auto"])
def test_calibration_uses_the_fixed_value(method: str) -> None:
    specs = [TensorSpec("x", [1, 4]), TensorSpec("sr", [])]
    stats = _resolve(specs, _options(input_values=["sr=16000"]))
    cal = make_calibration(method, specs, stats, count=8, held_out=4, seed=0)
    assert all(float(s["sr"]) == 16000.0 for s in cal.samples + cal.held_out)
    assert len({float(s["x"][0, 0]) for s in cal.samples}) == 8  # the other input is still drawn


# ---- end to end ------------------------------------------------------------------------------------

LOG_RATE_SOURCE = '''
import torch
from torch import nn


class LogRate(nn.Module):
    """Features scaled by log(sample rate / 8000): NaN for a negative rate, as N(0, 1) draws it."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(16, 8)

    def forward(self, x, sr):
        return self.fc(x) * torch.log(sr / 8000.0)
'''


def test_a_model_that_needs_its_sample_rate_is_verified_with_it(tmp_path: Path, run_cli) -> None:
    (tmp_path / "rate.py").write_text(LOG_RATE_SOURCE)
    args = ["convert", f"{tmp_path / 'rate.py'}:LogRate", "--input-shape", "1,16", "--input-shape", "scalar"]
    code, _, err = run_cli(*args, "-o", tmp_path / "nan")
    assert code == 1 and "gives NaN or inf" in err and not (tmp_path / "nan").exists()
    out = tmp_path / "out"
    code, _, err = run_cli(*args, "-o", out, "--input-value", "sr=16000", "--input-range", "0,1")
    assert code == 0, err
    verification = json.loads((out / "edgeport.json").read_text())["verification"]
    assert verification["passed"] and verification["num_samples"] == 9
    assert verification["inputs"] == [
        "3 standard-normal",
        "3 normal with the inputs' statistics (x: user)",
        "3 uniform over the inputs' ranges (x: [0, 1])",
        "every sample with sr = 16000",
    ]


TAGGER_SOURCE = '''
import torch
from torch import nn


class Tagger(nn.Module):
    """Token ids into a 1000-row embedding, and a float feature vector."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(1000, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids, bias):
        return self.fc(self.emb(ids).mean(1) + bias)
'''


def test_token_ids_are_verified_over_their_whole_range(tmp_path: Path, run_cli) -> None:
    (tmp_path / "tagger.py").write_text(TAGGER_SOURCE)
    out = tmp_path / "out"
    code, _, err = run_cli(
        "convert", f"{tmp_path / 'tagger.py'}:Tagger", "--input-shape", "1,5", "--input-shape", "1,8",
        "-o", out, "--input-range", "ids=0,999", "--input-range", "-1,1",
    )  # fmt: skip
    assert code == 0, err
    verification = json.loads((out / "edgeport.json").read_text())["verification"]
    assert verification["passed"] and verification["inputs"][1:] == [
        "3 normal with the inputs' statistics (ids: user, bias: user)",
        "3 uniform over the inputs' ranges (ids: [0, 999], bias: [-1, 1])",
    ]


def test_index_values_cover_the_inclusive_range_and_default_to_the_index_range() -> None:
    from edgeport.tensors import DEFAULT_INDEX_RANGE, TensorSpec, index_values

    spec = TensorSpec("ids", [4000], "int64")
    drawn = index_values(np.random.default_rng(0), spec, 3, 5)
    assert drawn.dtype == np.int64 and set(drawn.tolist()) == {3, 4, 5}
    default = index_values(np.random.default_rng(0), spec)
    assert set(default.tolist()) == set(range(DEFAULT_INDEX_RANGE[0], DEFAULT_INDEX_RANGE[1] + 1))
