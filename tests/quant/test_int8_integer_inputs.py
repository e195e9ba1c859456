"""int8 without data for a model whose input is integer token ids (an embedding): calibration draws
integers from the input's stated range and feeds them as integers; the ids stay integer in the int8 model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgeport.errors import EdgeportError
from edgeport.quant.calibration import make_calibration
from edgeport.quant.input_stats import from_user
from edgeport.quant.int8 import _keras_feed
from edgeport.tensors import DEFAULT_INDEX_RANGE, TensorSpec

VOCAB, SEQ, DIM, CLASSES = 32, 16, 8, 4
IDS = TensorSpec("ids", [1, SEQ], dtype="int32")
# Measured on seeds 0, 1, 2 of `token_model` with ids=0,31: 44.6, 40.5, 40.4 dB (held-out ids drawn from
# the same range). The bound leaves 15 dB for other machines and library versions.
MIN_SQNR_DB = 25.0


def token_model(dtype: int, seed: int) -> onnx.ModelProto:
    """ids [1, SEQ] -> Gather (embedding) -> Conv1d -> ReLU -> mean over time -> Gemm -> logits."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["e"], axis=0),
        helper.make_node("Transpose", ["e"], ["et"], perm=[0, 2, 1]),
        helper.make_node("Conv", ["et", "cw", "cb"], ["c"], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["m", "fw", "fb"], ["logits"]),
    ]
    inits = [
        init("table", (VOCAB, DIM), 1.0),
        init("cw", (DIM, DIM, 3), 1 / np.sqrt(DIM * 3)),
        init("cb", (DIM,), 0.1),
        init("fw", (DIM, CLASSES), 1 / np.sqrt(DIM)),
        init("fb", (CLASSES,), 0.1),
    ]
    graph = helper.make_graph(
        nodes,
        "tokens",
        [helper.make_tensor_value_info("ids", dtype, [1, SEQ])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


# ---- the sample maker ----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["auto", "input-stats", "gaussian"])
def test_integer_input_samples_are_integers_over_the_stated_range(method: str) -> None:
    stats = {"ids": from_user(None, None, (3.0, 20.0))}
    cal = make_calibration(method, [IDS], stats, count=64, held_out=16, seed=0)
    for sample in [*cal.samples, *cal.held_out]:
        assert sample["ids"].dtype == np.int32 and sample["ids"].shape == (1, SEQ)
    ids = np.concatenate([s["ids"] for s in cal.samples])
    # Uniform over 3..20: 1024 draws reach both ends (seeded: deterministic).
    assert ids.min() == 3 and ids.max() == 20
    assert not any("assumed" in n for n in cal.notes)


def test_integer_input_without_a_range_assumes_the_default_and_says_so() -> None:
    cal = make_calibration("auto", [IDS], {}, count=8, held_out=4, seed=0)
    ids = np.concatenate([s["ids"] for s in [*cal.samples, *cal.held_out]])
    low, high = DEFAULT_INDEX_RANGE
    assert ids.dtype == np.int32 and ids.min() >= low and ids.max() <= high
    assert any("'ids' has no stated range" in n and "--input-range ids=lo,hi" in n for n in cal.notes)
    assert not any("N(0, 1)" in n for n in cal.notes)  # no float input was drawn from noise


def test_float_input_beside_ids_keeps_its_noise() -> None:
    bias = TensorSpec("bias", [1, 8])
    cal = make_calibration("auto", [IDS, bias], {}, count=4, held_out=2, seed=0)
    assert cal.samples[0]["bias"].dtype == np.float32 and cal.samples[0]["ids"].dtype == np.int32
    assert np.unique(np.concatenate([s["bias"] for s in cal.samples])).size > 8


class _EmbedBn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.bn = nn.Embedding(VOCAB, DIM), nn.BatchNorm1d(DIM)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bn(self.emb(ids).transpose(1, 2))


def test_batchnorm_model_with_ids_is_not_distilled() -> None:
    """Distillation optimises float inputs: auto falls back to drawing ids, an explicit ask is refused."""
    module = _EmbedBn().eval()
    cal = make_calibration("auto", [IDS], {}, module=module, count=4, held_out=2, seed=0)
    assert cal.method != "distill" and cal.samples[0]["ids"].dtype == np.int32
    with pytest.raises(EdgeportError, match="'ids' is an integer input"):
        make_calibration("distill", [IDS], {}, module=module, count=4, held_out=2, seed=0)


def test_keras_feed_keeps_integers_integer() -> None:
    image = TensorSpec("x", [1, 3, 4, 4], channels_last=True)
    sample = {"ids": np.array([[1.0, 2.0, 2.9999999]], np.float32), "x": np.zeros((1, 3, 4, 4), np.float64)}
    ids, x = _keras_feed(sample, [TensorSpec("ids", [1, 3], dtype="int64"), image])
    assert ids.dtype == np.int64 and ids.tolist() == [[1, 2, 3]]  # rounded, not truncated
    assert x.dtype == np.float32 and x.shape == (1, 4, 4, 3)
    (as_keras,) = _keras_feed({"ids": np.array([[5]], np.int64)}, [IDS], [np.int32])
    assert as_keras.dtype == np.int32


# ---- end to end ----------------------------------------------------------------------------------


def _int8_section(out: Path) -> tuple[dict, dict]:
    manifest = json.loads((out / "edgeport.json").read_text())
    artifact = next(a for a in manifest["artifacts"] if a["path"] == "model_int8.tflite")
    return artifact, manifest["sections"]["quantization"]


def test_int32_token_model_quantizes_data_free(tmp_path: Path, run_cli) -> None:
    onnx.save(token_model(TensorProto.INT32, 0), tmp_path / "tokens.onnx")
    out = tmp_path / "out"
    code, stdout, err = run_cli(
        "convert", tmp_path / "tokens.onnx", "-o", out, "--quantize", "int8",
        "--input-range", f"ids=0,{VOCAB - 1}",
    )  # fmt: skip
    assert code == 0, err
    artifact, section = _int8_section(out)
    # The ids stay int32 (--io int8 applies to float inputs and outputs); the logits are int8.
    assert [(i["source_name"], i["dtype"]) for i in artifact["inputs"]] == [("ids", "int32")]
    assert [o["dtype"] for o in artifact["outputs"]] == ["int8"]
    assert section["calibration"]["data_free"] and section["calibration"]["method"] == "input-stats"
    # Run in TFLite Micro against LiteRT's reference kernels by the conversion itself.
    assert section["tflm_vs_litert"]["samples"] > 0 and section["tflm_vs_litert"]["max_diff_steps"] == 0
    (output,) = section["fidelity"]["outputs"]
    assert output["sqnr_db"] > MIN_SQNR_DB, stdout


def test_int64_ids_are_refused_for_tflite_micro_in_one_line(tmp_path: Path, run_cli) -> None:
    """TFLite Micro's GATHER takes int32 positions only: int64 ids get one line, before calibration."""
    onnx.save(token_model(TensorProto.INT64, 0), tmp_path / "tokens.onnx")
    code, _, err = run_cli(
        "convert", tmp_path / "tokens.onnx", "-o", tmp_path / "out", "--quantize", "int8", "-q",
        "--skip-pass", "index_inputs_int32",  # which would make these ids int32
    )  # fmt: skip
    assert code == 1
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert "GATHER" in line and "INT64" in line
