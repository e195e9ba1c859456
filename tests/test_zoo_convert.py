"""Every zoo model through `edgeport convert` (the Python API): converted, verified, and re-checked here.

The manifest's verification is not taken on trust: each test runs PyTorch and the float32 .tflite
itself, on inputs drawn with a different seed than the pipeline's, and recomputes the relative error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from tests.zoo import ZOO, ZooModel, resnet20_shared

ZOO_FILE = Path(__file__).resolve().parent / "zoo" / "models.py"
TOLERANCE = 1e-4
SEED = 123  # not the pipeline's verification seed
CHANNELS_LAST = ("NHWC", "NWC")


def run_litert(path: Path, artifact: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed source-layout arrays to the .tflite by the tensor names the manifest lists; source-layout
    outputs back."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(
        model_path=str(path),
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    by_name = {d["name"]: d["index"] for d in interpreter.get_input_details()}
    for info in artifact["inputs"]:
        value = feeds[info["source_name"]]
        if info["layout"] in CHANNELS_LAST:
            value = np.moveaxis(value, 1, -1)
        interpreter.set_tensor(by_name[info["name"]], np.ascontiguousarray(value, dtype=np.float32))
    interpreter.invoke()
    outs = {d["name"]: d["index"] for d in interpreter.get_output_details()}
    result = {}
    for info in artifact["outputs"]:
        value = interpreter.get_tensor(outs[info["name"]])
        result[info["source_name"]] = np.moveaxis(value, -1, 1) if info["layout"] in CHANNELS_LAST else value
    return result


def convert(model: ZooModel, source: str, outdir: Path) -> tuple[dict, Path]:
    convert_model(ConvertOptions(source=source, outdir=outdir, input_shapes=model.input_shapes))
    return json.loads((outdir / MANIFEST_NAME).read_text()), outdir


def check(model: ZooModel, manifest: dict, outdir: Path) -> None:
    ver = manifest["verification"]
    assert ver["passed"]
    recorded = [e for e in ver["errors"] if e["stage"] == "tflite_float32"]
    assert recorded and all(e["max_rel_error"] < TOLERANCE for e in recorded)

    (artifact,) = [a for a in manifest["artifacts"] if a["path"] == "model_float32.tflite"]
    inputs = model.example_inputs(SEED)
    # The ONNX model lists inputs and outputs in forward()'s order, under the names the .tflite
    # tensors carry as source_name.
    onnx_art = next(a for a in manifest["artifacts"] if a["kind"] == "onnx")
    names = [info["name"] for info in onnx_art["inputs"]]
    assert sorted(names) == sorted(info["source_name"] for info in artifact["inputs"])
    feeds = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
    with torch.no_grad():
        expected = model.build()(*inputs)
    expected = expected if isinstance(expected, tuple) else (expected,)
    got = run_litert(outdir / "model_float32.tflite", artifact, feeds)
    out_names = [info["name"] for info in onnx_art["outputs"]]
    for name, ref in zip(out_names, expected, strict=True):
        ref = ref.numpy()
        assert got[name].shape == ref.shape, name
        rel = float(np.abs(got[name] - ref).max() / np.abs(ref).max())
        assert rel < TOLERANCE, f"{model.name}:{name} rel. error {rel:.2e}"

    if model.transpose_free:
        assert "TRANSPOSE" not in artifact["op_counts"], artifact["op_counts"]
    assert not any(op.startswith("CUSTOM") for op in artifact["op_counts"])


@pytest.mark.parametrize("model", ZOO, ids=[m.name for m in ZOO])
def test_zoo_model_converts_within_tolerance(model: ZooModel, tmp_path: Path) -> None:
    manifest, outdir = convert(model, f"{ZOO_FILE}:{model.name}", tmp_path / model.name)
    check(model, manifest, outdir)


def test_pretrained_resnet20_converts_within_tolerance(tmp_path: Path) -> None:
    model = resnet20_shared()  # skips when ../shared is absent
    from tests.conftest import shared_path

    source = f"{shared_path('models', 'resnet_cifar.py')}:resnet20"
    manifest, outdir = convert(model, source, tmp_path / "resnet20")
    check(model, manifest, outdir)
    applied = next(p for p in manifest["passes"] if p["name"] == "onnx2tf_rewrites")["applied"]
    assert "strided_shortcut_to_conv" in applied
