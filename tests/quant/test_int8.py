"""`--quantize int8` end to end on small CNNs trained here: full-integer, TFLM == LiteRT, fidelity.

SQNR threshold: an int8 tensor quantized over its full range has ~48 dB SQNR; two conv layers,
a mean and a dense layer each add error, and data-free ranges are wider than a real-data min/max,
so the logits of this network land around 25-35 dB. 20 dB (error RMS 10 % of the logits' RMS) is
the floor below which argmax decisions start to flip on this task; the naive calibration of the
raw-pixel model (input clipped to a N(0, 1) range) is far below it, which the test also asserts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.fidelity import sqnr_db
from edgeport.quant.modes import QuantOptions
from edgeport.runtimes.litert import LiteRTRunner
from edgeport.runtimes.tflm import run_tflm
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import read_tflite
from tests.quant import int8_models as M
from tests.quant import no_kernel_models

MODELS = Path(M.__file__)
SHAPE = "1,3,12,12"
MIN_SQNR_DB = 20.0
# dynamic: one int8 weight tensor and per-inference activation scaling, no calibrated range to
# get wrong: each int8 rounding is ~48 dB below its tensor, two of them in series ~45 dB.
DYNAMIC_MIN_SQNR_DB = 35.0
MAX_ACCURACY_DROP = 0.03  # 500 test samples: 3 points is ~2 standard errors of one accuracy


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """State dicts of the trained CNN, for the normalised-input and the raw-pixel variants."""
    root = tmp_path_factory.mktemp("trained")
    net = M.train(M.SmallCnn(), steps=100)
    paths = {"cnn": root / "cnn.pt", "raw": root / "raw.pt"}
    torch.save(net.state_dict(), paths["cnn"])
    torch.save(M.RawPixels(net).state_dict(), paths["raw"])
    return paths


def convert(
    out: Path, cls: str, weights: Path | None, shape: str = SHAPE, **quant: object
) -> tuple[Path, dict]:
    convert_model(
        ConvertOptions(
            source=f"{MODELS}:{cls}",
            outdir=out,
            input_shapes=[[int(d) for d in shape.split(",")]],
            weights=weights,
            quantize=QuantOptions(**quant),
        )
    )
    return out, json.loads((out / MANIFEST_NAME).read_text())


def float_and_int8(out: Path, x: np.ndarray, output: str = "output") -> tuple[np.ndarray, np.ndarray]:
    specs_in = [TensorSpec("x", [1, *M.SHAPE], channels_last=True)]
    specs_out = [TensorSpec(output, [1, M.CLASSES])]
    fl = LiteRTRunner((out / "model_float32.tflite").read_bytes(), specs_in, specs_out)
    q = LiteRTRunner((out / "model_int8.tflite").read_bytes(), specs_in, specs_out)
    ref = np.concatenate([fl.run({"x": s[None]})[output] for s in x])
    got = np.concatenate([q.run({"x": s[None]})[output] for s in x])
    return ref, got


@pytest.fixture(scope="module")
def cnn_int8(trained: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    return convert(tmp_path_factory.mktemp("cnn") / "out", "SmallCnn", trained["cnn"])


def test_int8_model_is_full_integer_with_int8_io(cnn_int8: tuple[Path, dict]) -> None:
    out, manifest = cnn_int8
    model = read_tflite(out / "model_int8.tflite")
    types = {t.type for t in model.raw.subgraphs[0].tensors}
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    assert types <= {schema.TensorType.INT8, schema.TensorType.INT32}
    assert [i.dtype for i in model.inputs + model.outputs] == ["int8", "int8"]
    assert not model.custom_ops and "QUANTIZE" not in model.ops and "DEQUANTIZE" not in model.ops
    # Per-channel weights: the first conv's int8 filter has one scale per output channel.
    per_channel = [
        t
        for t in model.raw.subgraphs[0].tensors
        if t.type == schema.TensorType.INT8
        and t.quantization.scale is not None
        and len(t.quantization.scale) == 16
    ]
    assert per_channel
    art = {a["path"]: a for a in manifest["artifacts"]}["model_int8.tflite"]
    assert art["precision"] == "int8" and art["inputs"][0]["quantization"]["scale"][0] > 0
    section = manifest["sections"]["quantization"]
    assert section["mode"] == "int8" and section["io"] == "int8"
    assert section["calibration"]["method"] == "distill" and section["calibration"]["data_free"]
    assert section["calibration"]["loss_end"] < section["calibration"]["loss_start"]


def test_tflm_is_bit_exact_with_litert_reference_kernels(cnn_int8: tuple[Path, dict]) -> None:
    """TFLM == LiteRT's reference kernels bit for bit; its optimized kernels within one step here."""
    out, manifest = cnn_int8
    model = (out / "model_int8.tflite").read_bytes()
    specs = ([TensorSpec("x", [1, *M.SHAPE], channels_last=True)], [TensorSpec("output", [1, 4])])
    runner = LiteRTRunner(model, *specs)
    reference = LiteRTRunner(model, *specs, kernels="reference")
    # 200 samples: the dense head's double rounding ties happen in ~1 of 1000 outputs.
    x, _ = M.make_task(200, seed=7)
    raw = [runner.quantize_inputs({"x": s[None]}) for s in x]
    tflm = run_tflm(model, raw).raw_outputs
    for r, t in zip(raw, tflm, strict=True):
        assert t[0].dtype == np.int8
        np.testing.assert_array_equal(reference.run_raw(r)[0], t[0])
        assert np.max(np.abs(runner.run_raw(r)[0].astype(int) - t[0].astype(int))) <= 1
    section = manifest["sections"]["quantization"]
    assert section["tflm_vs_litert"]["max_diff_steps"] == 0
    assert section["tflm_vs_litert"]["exact_fraction"] == 1.0
    assert section["litert_optimized_vs_tflm"]["max_diff_steps"] <= 1


def test_int8_accuracy_and_sqnr_close_to_float(cnn_int8: tuple[Path, dict]) -> None:
    out, manifest = cnn_int8
    x, y = M.make_task(500, seed=99)
    ref, got = float_and_int8(out, x)
    assert M.accuracy(ref, y) > 0.7  # the task was learned
    assert M.accuracy(got, y) >= M.accuracy(ref, y) - MAX_ACCURACY_DROP
    assert sqnr_db([ref], [got]) > MIN_SQNR_DB
    fid = manifest["sections"]["quantization"]["fidelity"]
    assert fid["outputs"][0]["sqnr_db"] > MIN_SQNR_DB
    assert fid["layers_compared"] >= 3 and len(fid["worst_layers"]) >= 3
    worst = [e["sqnr_db"] for e in fid["worst_layers"]]
    assert worst == sorted(worst)
    # Named after the user's layers (ONNX nodes, PyTorch modules), TensorFlow's name beside them.
    nodes = {n.name for n in onnx.load(str(out / "model.onnx")).graph.node}
    assert all(e["source_name"] in nodes and e["tflite_name"] for e in fid["worst_layers"])
    modules = {e["module"] for e in fid["worst_layers"] if "module" in e}
    assert modules and modules <= {name for name, _ in M.SmallCnn().named_modules()}


def test_raw_pixel_input_is_not_calibrated_as_normal_noise(trained: dict[str, Path], tmp_path: Path) -> None:
    """(x - 128) / 40 inside the model: the input range comes from that normalisation."""
    x, y = M.make_task(300, seed=5)
    raw = M.to_raw(x)
    out, manifest = convert(tmp_path / "auto", "RawPixels", trained["raw"], io="float")
    stats = manifest["sections"]["quantization"]["calibration"]["input_stats"]["x"]
    assert stats["source"] == "normalization"
    assert stats["mean"] == pytest.approx([128.0]) and stats["std"] == pytest.approx([40.0])
    model = read_tflite(out / "model_int8.tflite")
    assert [i.dtype for i in model.inputs + model.outputs] == ["float32", "float32"]
    ref, good = float_and_int8(out, raw)
    assert sqnr_db([ref], [good]) > MIN_SQNR_DB
    assert M.accuracy(good, y) >= M.accuracy(ref, y) - MAX_ACCURACY_DROP

    out, manifest = convert(tmp_path / "naive", "RawPixels", trained["raw"], io="float", method="gaussian")
    assert manifest["sections"]["quantization"]["calibration"]["method"] == "gaussian"
    ref, naive = float_and_int8(out, raw)
    assert sqnr_db([ref], [naive]) < MIN_SQNR_DB - 10


def test_no_batchnorm_no_data_falls_back_and_says_so(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(
        "convert", f"{MODELS}:NoBatchNorm", "--input-shape", "1,16", "-o", out, "--quantize", "int8"
    )
    assert code == 0, stderr
    assert "note: no BatchNorm and no calibration data" in stdout
    cal = json.loads((out / MANIFEST_NAME).read_text())["sections"]["quantization"]["calibration"]
    assert cal["method"] == "gaussian" and cal["notes"]


def test_op_without_tflm_int8_kernel_names_op_and_node(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "convert",
        f"{no_kernel_models.__file__}:SignCnn",
        "--input-shape",
        SHAPE,
        "-o",
        out,
        "--quantize",
        "int8",
    )
    assert code == 1
    assert "TFLite Micro has no kernel for op SIGN" in stderr or "op SIGN at node" in stderr
    assert "dynamic" in stderr  # --io float is not suggested: it cannot help an op inside the model
    assert not out.exists()


def test_wrong_calibration_shape_is_a_clear_error(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "cal.npy"
    np.save(bad, np.zeros((10, 28, 28), np.float32))
    out = tmp_path / "out"
    code, _, stderr = run_cli(
        "convert",
        f"{MODELS}:NoBatchNorm",
        "--input-shape",
        "1,16",
        "-o",
        out,
        "--quantize",
        "int8",
        "--calibration",
        bad,
    )
    assert code == 1
    assert "has shape (10, 28, 28) but input 'x' takes (N, 16)" in stderr
    assert not out.exists()


def test_real_calibration_data_is_used_and_recorded(trained: dict[str, Path], tmp_path: Path) -> None:
    x, _ = M.make_task(60, seed=11)
    np.savez(tmp_path / "cal.npz", images=M.to_raw(x).transpose(0, 2, 3, 1), labels=np.zeros(60))
    out, manifest = convert(tmp_path / "out", "RawPixels", trained["raw"], calibration=tmp_path / "cal.npz")
    cal = manifest["sections"]["quantization"]["calibration"]
    assert cal["method"] == "data" and not cal["data_free"] and cal["samples"] == 48
    assert manifest["sections"]["quantization"]["fidelity"]["outputs"][0]["sqnr_db"] > MIN_SQNR_DB


def test_bad_quantize_options_are_refused() -> None:
    with pytest.raises(EdgeportError, match="unknown --quantize mode"):
        QuantOptions(mode="int3")
    with pytest.raises(EdgeportError, match="Drop one of them"):
        QuantOptions(calibration=Path("x.npy"), method="distill")


def test_dynamic_has_int8_weights_float_activations_and_stays_close_to_float(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """--quantize dynamic: int8 weights of the large layers, float activations, float I/O."""
    out, manifest = convert(tmp_path / "out", "SmallCnn", trained["cnn"], mode="dynamic")
    assert not (out / "model_int8.tflite").exists()
    model = read_tflite(out / "model_dynamic.tflite")
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    graph = model.raw.subgraphs[0]
    produced = {i for op in graph.operators for i in op.outputs}
    int8 = [t for t in graph.tensors if t.type == schema.TensorType.INT8]
    # Only constant weights are int8: conv2's 32x3x3x16 filter (4608 values, per-channel scales);
    # every activation (operator output) and the model's I/O stay float32.
    assert [list(t.shape) for t in int8] == [[32, 3, 3, 16]]
    assert len(int8[0].quantization.scale) == 32
    assert all(graph.tensors[i].type == schema.TensorType.FLOAT32 for i in produced)
    assert [i.dtype for i in model.inputs + model.outputs] == ["float32", "float32"]
    arts = {a["path"]: a for a in manifest["artifacts"]}
    assert arts["model_dynamic.tflite"]["precision"] == "dynamic"
    assert arts["model_dynamic.tflite"]["size_bytes"] < arts["model_float32.tflite"]["size_bytes"]

    # It runs in LiteRT, and on the task's own samples it stays close to the float model.
    x, y = M.make_task(300, seed=21)
    specs_in = [TensorSpec("x", [1, *M.SHAPE], channels_last=True)]
    specs_out = [TensorSpec("output", [1, M.CLASSES])]
    fl = LiteRTRunner((out / "model_float32.tflite").read_bytes(), specs_in, specs_out)
    dyn = LiteRTRunner((out / "model_dynamic.tflite").read_bytes(), specs_in, specs_out)
    ref = np.concatenate([fl.run({"x": s[None]})["output"] for s in x])
    got = np.concatenate([dyn.run({"x": s[None]})["output"] for s in x])
    assert sqnr_db([ref], [got]) > DYNAMIC_MIN_SQNR_DB
    assert M.accuracy(got, y) >= M.accuracy(ref, y) - MAX_ACCURACY_DROP
    section = manifest["sections"]["quantization"]
    assert section["mode"] == "dynamic" and section["tensor_types"]["int8"] == 1
    assert section["fidelity"]["outputs"][0]["sqnr_db"] > DYNAMIC_MIN_SQNR_DB
