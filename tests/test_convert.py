"""`edgeport convert` end to end: sources, layouts, manifest, verification, bad input."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeport.manifest import MANIFEST_NAME, sha256_of
from edgeport.tensors import to_channels_first, to_channels_last
from edgeport.tflite_file import read_tflite

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = f"{ROOT / 'examples' / 'kws_dscnn.py'}:build"
TINY = ROOT / "tests" / "fixtures" / "tiny_models.py"
KWS_SHAPE = "1,1,49,10"
TWO_IN_TWO_OUT = ("convert", f"{TINY}:TwoInTwoOut", "--input-shape", "1,3,16,16", "--input-shape", "1,4")


def load_example() -> torch.nn.Module:
    import importlib.util

    spec = importlib.util.spec_from_file_location("kws_example", ROOT / "examples" / "kws_dscnn.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()


def run_tflite(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # As a user runs the .tflite (default interpreter, signature keys), independent of edgeport.runtimes.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=str(path)).get_signature_runner()
    return runner(**feeds)


@pytest.fixture(scope="module")
def kws_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgeport.cli import main

    out = tmp_path_factory.mktemp("kws") / "out"
    assert main(["convert", EXAMPLE, "--input-shape", KWS_SHAPE, "-o", str(out)]) == 0
    return out


def test_convert_writes_every_artifact_with_true_hashes(kws_out: Path) -> None:
    manifest = json.loads((kws_out / MANIFEST_NAME).read_text())
    paths = {a["path"]: a for a in manifest["artifacts"]}
    assert set(paths) == {"model.onnx", "model_float32.tflite", "model_float16.tflite"}
    assert sorted(p.name for p in kws_out.iterdir()) == sorted([*paths, MANIFEST_NAME])
    for rel, art in paths.items():
        assert art["sha256"] == sha256_of(kws_out / rel)
        assert art["size_bytes"] == (kws_out / rel).stat().st_size
    assert paths["model.onnx"]["kind"] == "onnx"
    assert paths["model_float16.tflite"]["precision"] == "float16"
    assert {"onnx2tf", "tensorflow", "torch"} <= set(manifest["tools"])


def test_convert_is_channels_last_without_transposes(kws_out: Path) -> None:
    manifest = json.loads((kws_out / MANIFEST_NAME).read_text())
    assert manifest["layout"] == "NHWC"
    tflite = next(a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite")
    (inp,) = tflite["inputs"]
    assert inp["shape"] == [1, 49, 10, 1] and inp["layout"] == "NHWC" and inp["source_name"] == "mfcc"
    ops = read_tflite(kws_out / "model_float32.tflite").op_counts
    assert "TRANSPOSE" not in ops
    assert tflite["op_counts"] == ops


def test_convert_float32_matches_pytorch_independently(kws_out: Path) -> None:
    model = load_example()
    x = np.random.default_rng(123).standard_normal((1, 1, 49, 10)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    (got,) = run_tflite(kws_out / "model_float32.tflite", {"mfcc": to_channels_last(x)}).values()
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-4
    manifest = json.loads((kws_out / MANIFEST_NAME).read_text())
    ver = manifest["verification"]
    assert ver["passed"] and ver["reference"] == "pytorch"
    stages = {e["stage"] for e in ver["errors"]}
    assert stages == {"onnx", "tflite_float32", "tflite_float16"}
    assert all(e["max_rel_error"] < 1e-4 for e in ver["errors"] if e["stage"] != "tflite_float16")


def test_keep_nchw_keeps_pytorch_layout(tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli(
        "convert", EXAMPLE, "--input-shape", KWS_SHAPE, "-o", tmp_path / "o", "--keep-nchw"
    )
    assert code == 0, out
    manifest = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text())
    assert manifest["layout"] == "NCHW"
    tflite = read_tflite(tmp_path / "o" / "model_float32.tflite")
    assert tflite.inputs[0].shape == [1, 1, 49, 10]


def test_sources_torchscript_pt2_onnx_and_weights(tmp_path: Path, run_cli) -> None:
    model = load_example()
    x = torch.randn(1, 1, 49, 10)
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "m.pt")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "m.pt2")
    torch.onnx.export(model, (x,), tmp_path / "m.onnx", dynamo=False, input_names=["mfcc"])
    torch.save(model.state_dict(), tmp_path / "w.pt")
    for name, extra in [("m.pt", ["--input-shape", KWS_SHAPE]), ("m.pt2", []), ("m.onnx", [])]:
        code, out, err = run_cli("convert", tmp_path / name, *extra, "-o", tmp_path / f"out_{name}")
        assert code == 0, err
        manifest = json.loads((tmp_path / f"out_{name}" / MANIFEST_NAME).read_text())
        assert manifest["verification"]["passed"]
    ref = json.loads((tmp_path / "out_m.onnx" / MANIFEST_NAME).read_text())["verification"]["reference"]
    assert ref == "onnx (source)"
    code, _, err = run_cli(
        "convert",
        f"{ROOT / 'examples' / 'kws_dscnn.py'}:DSCNN",
        "--weights",
        tmp_path / "w.pt",
        "--input-shape",
        KWS_SHAPE,
        "-o",
        tmp_path / "out_w",
    )
    assert code == 0, err


def test_sequence_input_keeps_shape_and_two_inputs_map_by_name(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(
        "convert", f"{TINY}:SequenceHead", "--input-shape", "1,20,16", "-o", tmp_path / "s"
    )
    assert code == 0, err
    seq = read_tflite(tmp_path / "s" / "model_float32.tflite")
    assert seq.inputs[0].shape == [1, 20, 16] and "TRANSPOSE" not in seq.op_counts
    code, _, err = run_cli(*TWO_IN_TWO_OUT, "-o", tmp_path / "t")
    assert code == 0, err
    manifest = json.loads((tmp_path / "t" / MANIFEST_NAME).read_text())
    tfl = next(a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite")
    by_source = {t["source_name"]: t for t in tfl["inputs"] + tfl["outputs"]}
    assert by_source["img"]["shape"] == [1, 16, 16, 3] and by_source["img"]["layout"] == "NHWC"
    assert by_source["vec"]["layout"] == "other" and by_source["output_1"]["shape"] == [1, 8]
    # Independent check: outputs by name, feature map back to NCHW.
    from tests.fixtures.tiny_models import TwoInTwoOut

    img, vec = np.random.default_rng(5).standard_normal((1, 3, 16, 16)), np.ones((1, 4))
    with torch.no_grad():
        ref0, ref1 = TwoInTwoOut()(
            torch.tensor(img, dtype=torch.float32), torch.tensor(vec, dtype=torch.float32)
        )
    got = run_tflite(
        tmp_path / "t" / "model_float32.tflite",
        {"img": to_channels_last(img).astype(np.float32), "vec": vec.astype(np.float32)},
    )
    np.testing.assert_allclose(to_channels_first(got["output_0"]), ref0.numpy(), atol=1e-5)
    np.testing.assert_allclose(got["output_1"], ref1.numpy(), atol=1e-5)


def test_conversion_never_touches_the_network(tmp_path: Path, run_cli, monkeypatch) -> None:
    def no_network(*_args, **_kwargs):
        raise OSError("network access attempted during conversion")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    # A 4-D float image input with a small batch is exactly what makes onnx2tf fetch sample data.
    code, _, err = run_cli(*TWO_IN_TWO_OUT, "-o", tmp_path / "o")
    assert code == 0, err


def test_offline_guard_refuses_requests() -> None:
    import requests

    from edgeport.converters.onnx_to_tflite import offline_onnx2tf

    with offline_onnx2tf():
        import onnx2tf.onnx2tf as main

        assert main.download_test_image_data().shape == (20, 128, 128, 3)
        with pytest.raises(RuntimeError, match="offline"):
            requests.get("https://example.invalid/sample.npy")


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err and err.strip().count("\n") == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.onnx"], "does not exist"),
        ([str(TINY)], "without a callable"),
        ([f"{TINY}:nope", "--input-shape", "1,4"], "no callable named 'nope'"),
        ([f"{TINY}:not_a_model"], "not a torch.nn.Module"),
        ([EXAMPLE, "--input-shape", "1,49,10"], "Check --input-shape"),
        ([EXAMPLE], "needs its input shapes"),
        ([EXAMPLE, "--input-shape", "1,x,3"], "is not a shape"),
        ([f"{TINY}:TwoInTwoOut", "--input-shape", "1,3,16,16"], "2 input(s)"),
        ([f"{TINY}:Determinant", "--input-shape", "2,9"], "MatrixDeterminant, which TFLite has no builtin"),
    ],
)
def test_bad_input_is_one_line_exit_1_nothing_written(tmp_path: Path, run_cli, args, message) -> None:
    out = tmp_path / "out"
    code, _, err = run_cli("convert", *args, "-o", out)
    assert code == 1
    assert message in err
    _no_traceback(err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_corrupt_onnx_and_pickles_are_refused(tmp_path: Path, run_cli) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    code, _, err = run_cli("convert", bad, "-o", tmp_path / "o1")
    assert code == 1 and "not a valid ONNX model" in err
    _no_traceback(err)
    from tests.fixtures.tiny_models import SequenceHead

    torch.save(SequenceHead(), tmp_path / "whole.pt")
    code, _, err = run_cli(
        "convert", tmp_path / "whole.pt", "--input-shape", "1,20,16", "-o", tmp_path / "o2"
    )
    assert code == 1 and "arbitrary code" in err and "--trust-pickle" in err
    code, _, err = run_cli(
        "convert", tmp_path / "whole.pt", "--trust-pickle", "--input-shape", "1,20,16", "-o", tmp_path / "o3"
    )
    assert code == 0, err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_onnx_with_wrong_rank_and_non_empty_outdir(tmp_path: Path, run_cli) -> None:
    from tests.fixtures.tiny_models import SequenceHead

    torch.onnx.export(SequenceHead(), (torch.randn(1, 20, 16),), tmp_path / "s.onnx", dynamo=False)
    assert onnx.load(tmp_path / "s.onnx").graph.input
    code, _, err = run_cli("convert", tmp_path / "s.onnx", "--input-shape", "1,16", "-o", tmp_path / "o")
    assert code == 1 and "rank" in err
    keep = tmp_path / "full"
    keep.mkdir()
    (keep / "precious.txt").write_text("x")
    code, _, err = run_cli("convert", tmp_path / "s.onnx", "-o", keep)
    assert code == 1 and "--force" in err
    assert [p.name for p in keep.iterdir()] == ["precious.txt"]


def test_no_fold_bn_keeps_batch_norms_in_onnx(kws_out: Path, tmp_path: Path, run_cli) -> None:
    folded = json.loads((kws_out / MANIFEST_NAME).read_text())
    assert "BatchNormalization" not in folded["artifacts"][0]["op_counts"]
    assert any(p["name"] == "fold_batch_norms" for p in folded["passes"])
    code, out, err = run_cli(
        "convert", EXAMPLE, "--input-shape", KWS_SHAPE, "-o", tmp_path / "o", "--no-fold-bn", "-q"
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "o" / MANIFEST_NAME).read_text())
    assert manifest["artifacts"][0]["op_counts"]["BatchNormalization"] == 9
    # --no-fold-bn is --skip-pass fold_batch_norms: recorded as skipped, and onnx2tf's own onnxsim
    # (which would fuse Conv+BN behind the user's back) is turned off.
    assert [p for p in manifest["passes"] if p["name"] == "fold_batch_norms"] == [
        {"name": "fold_batch_norms", "skipped": True}
    ]
    rewrites = next(p for p in manifest["passes"] if p["name"] == "onnx2tf_rewrites")
    assert rewrites["onnx2tf_options"]["not_use_onnxsim"] is True
    assert manifest["verification"]["passed"]
    # stdout carries the summary only (stage progress goes to stderr), and says where the time went.
    assert out.startswith("converted in ") and out.count("\n") == 1 and "most time: " in out
