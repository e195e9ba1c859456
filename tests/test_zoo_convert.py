"""Every zoo model through `edgeport convert` (the Python API): converted, verified, and re-checked here.

The manifest's verification is not taken on trust: each test runs PyTorch and the float32 .tflite
itself, on inputs drawn with a different seed than the pipeline's, and recomputes the relative error.
A model that does not convert must fail with a clear EdgeportError (never an internal error); those
known today are listed in KNOWN_FAILURES with the message they give.

CI converts the models marked `fast` (a few minutes on 2 cores); `EDGEPORT_ZOO=all` converts them all
(as bench/convert_zoo.py does, with plain onnx2tf beside).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model
from tests.zoo import ENTRIES, ZooEntry, ZooModel, resnet20_shared

TOLERANCE = 1e-4
SEED = 123  # not the pipeline's verification seed
CHANNELS_LAST = ("NHWC", "NWC")


def run_litert(path: Path, artifact: dict, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Feed source-layout arrays to the .tflite by the tensor names the manifest lists; source-layout
    outputs back."""
    # Its own interpreter, not edgeport.runtimes: this cross-checks the manifest's names and the
    # pipeline's verification, which run through the runtimes.
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


# Zoo id -> a part of the one-line EdgeportError each gives today (the fix to try is in the line).
KNOWN_FAILURES: dict[str, str] = {
    # PyTorch's exporter has no ONNX for these (opset 17):
    "resample/up_nearest_exact": "Exporting the operator 'aten::_upsample_nearest_exact2d'",
    "tensorops/adaptive_avg_uneven": "output size that are not factor of input size",
}

RUN_ALL = os.environ.get("EDGEPORT_ZOO", "") == "all"


def zoo_params() -> list:
    slow = pytest.mark.skipif(not RUN_ALL, reason="not in the fast zoo subset: EDGEPORT_ZOO=all runs it")
    return [pytest.param(e, id=e.id, marks=() if e.model.fast else slow) for e in ENTRIES]


@pytest.mark.parametrize("entry", zoo_params())
def test_zoo_model_converts_within_tolerance(entry: ZooEntry, tmp_path: Path) -> None:
    outdir = tmp_path / entry.model.name
    if entry.id in KNOWN_FAILURES:
        with pytest.raises(EdgeportError, match=re.escape(KNOWN_FAILURES[entry.id])):
            convert(entry.model, entry.source, outdir)
        assert not outdir.exists()  # nothing half-written
        return
    manifest, outdir = convert(entry.model, entry.source, outdir)
    check(entry.model, manifest, outdir)


def test_known_failures_name_zoo_models() -> None:
    assert set(KNOWN_FAILURES) <= {e.id for e in ENTRIES}


def test_every_family_file_is_gathered_and_loads_by_path() -> None:
    from edgeport.converters.sources import load_source
    from tests.zoo import family_files

    files = family_files()
    assert files[0].name == "models.py"
    assert {e.file for e in ENTRIES} == set(files)
    assert len({e.id for e in ENTRIES}) == len(ENTRIES)
    # As `edgeport convert tests/zoo/<family>.py:<name>` does: the file imported by path, not as
    # part of the tests package.
    for file in files:
        entry = next(e for e in ENTRIES if e.file == file)
        loaded = load_source(entry.source)
        assert type(loaded.module).__name__ == type(entry.model.build()).__name__


def test_pretrained_resnet20_converts_within_tolerance(tmp_path: Path) -> None:
    model = resnet20_shared()  # skips when ../shared is absent
    from tests.conftest import shared_path

    source = f"{shared_path('models', 'resnet_cifar.py')}:resnet20"
    manifest, outdir = convert(model, source, tmp_path / "resnet20")
    check(model, manifest, outdir)
    applied = next(p for p in manifest["passes"] if p["name"] == "onnx2tf_rewrites")["applied"]
    assert "strided_shortcut_to_conv" in applied


@pytest.mark.skipif(not RUN_ALL, reason="int8 end to end takes minutes: EDGEPORT_ZOO=all runs it")
def test_resnet_basic_quantizes_to_int8_that_runs(tmp_path: Path) -> None:
    """LiteRT aborted preparing this model's int8 form (max-pool padding at float32 lowest; fixed by
    quant/int8.py: bound_max_pool_padding, tested quickly in tests/quant/test_max_pool_padding.py)."""
    from edgeport.quant.modes import QuantOptions

    entry = next(e for e in ENTRIES if e.id == "core/resnet_basic")
    outdir = tmp_path / "resnet_basic"
    convert_model(
        ConvertOptions(
            source=entry.source,
            outdir=outdir,
            input_shapes=entry.model.input_shapes,
            quantize=QuantOptions(mode="int8"),
        )
    )
    section = json.loads((outdir / MANIFEST_NAME).read_text())["sections"]["quantization"]
    # Not a bound on quality: a broken pool (a step of 1e36) gives SQNR near 0 dB.
    assert min(o["sqnr_db"] for o in section["fidelity"]["outputs"]) > 15
