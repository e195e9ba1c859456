"""`edgeport package --target android`: every variant of a small zoo CNN (the KWS DS-CNN) and of a
two-input, two-output model loads and runs in LiteRT and matches float32 within its tolerance, carries
the metadata and the labels, and keeps the source's signature; a .tflite gives only the derivable
variants; bad input is one line, exit 1, nothing written.

Tolerances, measured here independently of the packager's own check (LiteRT, 8 seeded N(0, 1) samples):
float16 max relative error 1e-2 (issue 13); int8 with float or int8 I/O and dynamic-range SQNR >= 20 dB,
w4a8 >= 15 dB (measured 25-60 dB on these models; at 20 dB the error's amplitude is a tenth of the signal's).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.targets.android import metadata as md
from edgeport.targets.android.delegates import GPU_NOTE

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
KWS_CLASSES = 12
FLOAT16_MAX_REL = 1e-2
MIN_SQNR_DB = {"int8": 20.0, "int8_float_io": 20.0, "dynamic": 20.0, "w4a8": 15.0}
NO_DYNAMIC = "float32,float16,int8_float_io,int8,w4a8"


def _convert(out: Path, name: str, shapes: list[list[int]], **quant) -> Path:
    from edgeport.pipeline import ConvertOptions, convert_model
    from edgeport.quant.modes import QuantOptions

    options = ConvertOptions(
        source=f"{ZOO}:{name}",
        outdir=out,
        input_shapes=shapes,
        quantize=QuantOptions(**quant) if quant else None,
    )
    convert_model(options)
    return out


@pytest.fixture(scope="module")
def kws_convert(tmp_path_factory) -> Path:
    # With --quantize dynamic, so the package takes dynamic from the conversion (no child conversion).
    return _convert(
        tmp_path_factory.mktemp("kws") / "convert", "ds_cnn_kws", [[1, 1, 49, 10]], mode="dynamic"
    )


@pytest.fixture(scope="module")
def mio_convert(tmp_path_factory) -> Path:
    return _convert(tmp_path_factory.mktemp("mio") / "convert", "multi_io", [[1, 3, 16, 16], [1, 6]])


@pytest.fixture(scope="module")
def labels_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("labels") / "kws_labels.txt"
    path.write_text("".join(f"word{i}\n" for i in range(KWS_CLASSES)))
    return path


@pytest.fixture(scope="module")
def kws_package(kws_convert, labels_file, tmp_path_factory) -> Path:
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    out = tmp_path_factory.mktemp("kws_pkg") / "android"
    options = AndroidOptions(
        labels=labels_file,
        mean=[0.5],
        std=[2.0],
        input_range=(-1.0, 1.0),
        model_name="kws",
        author="edgeport tests",
        license="MIT",
        model_version="2",
    )
    package(kws_convert, out, options)
    return out


def _section(outdir: Path) -> dict:
    return json.loads((outdir / "edgeport.json").read_text())["sections"]["android"]


def _run_all(model: Path, samples: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """Outputs by signature key, in float (int8 I/O quantized and dequantized with the tensor's params)."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(model))
    runner = interp.get_signature_runner("serving_default")
    ins, outs = runner.get_input_details(), runner.get_output_details()
    results = []
    for sample in samples:
        feed = {}
        for key, value in sample.items():
            scale, zero = ins[key]["quantization"]
            dtype = ins[key]["dtype"]
            feed[key] = (
                np.clip(np.round(value / scale) + zero, -128, 127).astype(dtype)
                if scale
                else value.astype(dtype)
            )
        raw = runner(**feed)
        results.append(
            {
                k: (v.astype(np.float32) - outs[k]["quantization"][1]) * outs[k]["quantization"][0]
                if outs[k]["quantization"][0]
                else v.astype(np.float32)
                for k, v in raw.items()
            }
        )
    return results


def _samples(model: Path, count: int = 8) -> list[dict[str, np.ndarray]]:
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_path=str(model)).get_signature_runner("serving_default").get_input_details()
    rng = np.random.default_rng(0)
    return [
        {k: rng.standard_normal(d["shape"]).astype(np.float32) for k, d in details.items()}
        for _ in range(count)
    ]


def _check_variants(outdir: Path, expected: set[str]) -> dict[str, dict[str, float]]:
    section = _section(outdir)
    assert {v["name"] for v in section["variants"]} == expected
    reference = outdir / "model_float32.tflite"
    samples = _samples(reference)
    ref = _run_all(reference, samples)
    measured = {}
    for name in expected - {"float32"}:
        got = _run_all(outdir / f"model_{name}.tflite", samples)
        for key in ref[0]:
            r = np.stack([x[key] for x in ref])
            g = np.stack([x[key] for x in got])
            rel = float(np.max(np.abs(r - g)) / np.max(np.abs(r)))
            sqnr = float(10 * np.log10(np.sum(r**2) / max(np.sum((r - g) ** 2), 1e-30)))
            measured[f"{name}:{key}"] = sqnr
            if name == "float16":
                assert rel <= FLOAT16_MAX_REL, (name, key, rel)
            else:
                assert sqnr >= MIN_SQNR_DB[name], (name, key, sqnr)
    return measured


def test_kws_every_variant_runs_and_matches_float(kws_package):
    _check_variants(kws_package, {"float32", "float16", "dynamic", "int8_float_io", "int8", "w4a8"})
    section = _section(kws_package)
    by_name = {v["name"]: v for v in section["variants"]}
    assert section["skipped"] == []
    assert by_name["int8"]["input_types"] == ["int8"] and by_name["int8_float_io"]["input_types"] == [
        "float32"
    ]
    assert by_name["dynamic"]["made_by"] == "written by `edgeport convert`"
    for variant in section["variants"]:
        assert variant["check"]["passed"]
        path = kws_package / variant["file"]
        assert variant["size_bytes"] == path.stat().st_size
        assert sum(variant["op_counts"].values()) == variant["ops"] > 0
    # What the accelerators take, measured: XNNPACK takes every float32 node of this CNN; full int8 is
    # integer-only (NPU-ready), float is not.
    assert by_name["float32"]["delegates"]["xnnpack_nodes"] == by_name["float32"]["delegates"]["nodes"]
    for variant in section["variants"]:
        report = variant["delegates"]
        assert 0 <= report["xnnpack_nodes"] <= report["nodes"] == variant["ops"]
        assert report["integer_only"] == (variant["name"] in ("int8", "int8_float_io", "w4a8"))
    # The GPU delegate by TensorFlow's static rules (test_android_gpu_*.py): float variants taken whole.
    for name in ("float32", "float16"):
        gpu = by_name[name]["delegates"]["gpu"]
        assert (gpu["fallbacks"], gpu["partitions"], gpu["taken_nodes"]) == ([], 1, by_name[name]["ops"])
    assert GPU_NOTE in section["notes"] and "GPU delegate" in (kws_package / "README.md").read_text()
    # `edgeport bench OUTDIR:VARIANT` (the README's latency command) finds each variant.
    from edgeport.bench.models import resolve_model

    for name in by_name:
        assert resolve_model(f"{kws_package}:{name}").tflite == kws_package / f"model_{name}.tflite"
    # Smaller files for fewer weight bits.
    assert by_name["w4a8"]["size_bytes"] < by_name["int8"]["size_bytes"] < by_name["float32"]["size_bytes"]


def test_kws_metadata_labels_and_signature(kws_package, labels_file):
    from ai_edge_litert.interpreter import Interpreter

    section = _section(kws_package)
    sidecar = md.ModelMetadata.model_validate_json((kws_package / "metadata.json").read_text())
    assert md.ModelMetadata.model_validate(section["metadata"]) == sidecar
    assert (sidecar.name, sidecar.author, sidecar.license, sidecar.version) == (
        "kws",
        "edgeport tests",
        "MIT",
        "2",
    )
    (image,) = sidecar.inputs
    assert image.name == "x" and image.image is not None and image.image.color_space == "GRAYSCALE"
    assert (image.image.width, image.image.height) == (10, 49)  # the .tflite holds it as [1, 49, 10, 1]
    assert image.dimension_names == ["batch", "height", "width", "channels"]
    assert image.normalization == md.Normalization(mean=[0.5], std=[2.0])
    # The stated raw range as the model sees it, (x - 0.5) / 2.
    assert (image.value_min, image.value_max) == ([-0.75], [0.25])
    (scores,) = sidecar.outputs
    assert [f.name for f in scores.associated_files] == ["labels.txt"]
    labels = labels_file.read_bytes()
    assert (kws_package / "labels.txt").read_bytes() == labels
    for variant in section["variants"]:
        data = (kws_package / variant["file"]).read_bytes()
        assert md.read_metadata(data) == sidecar
        assert md.associated_files(data) == {"labels.txt": labels}
        signatures = Interpreter(model_path=str(kws_package / variant["file"])).get_signature_list()
        assert signatures == {"serving_default": {"inputs": ["x"], "outputs": ["output"]}}
    assert section["signature"] == {"key": "serving_default", "inputs": ["x"], "outputs": ["output"]}
    # The typed section reads back as written.
    from edgeport.manifest import Manifest
    from edgeport.targets.android.section import AndroidSection

    typed = AndroidSection.of(Manifest.read(kws_package), str(kws_package))
    assert typed.metadata == sidecar and typed.labels_files == {"output": "labels.txt"}
    assert [v.name for v in typed.variants] == [v["name"] for v in section["variants"]]
    assert typed.model_dump(mode="json") == section


def test_independent_reader_on_a_packaged_variant(kws_package, labels_file):
    metadata = pytest.importorskip("tensorflow_lite_support.metadata.python.metadata")
    shown = metadata.MetadataDisplayer.with_model_file(str(kws_package / "model_int8.tflite"))
    doc = json.loads(shown.get_metadata_json())
    tensor = doc["subgraph_metadata"][0]["input_tensor_metadata"][0]
    assert tensor["name"] == "x"
    assert tensor["process_units"][0]["options"] == {"mean": [0.5], "std": [2.0]}
    assert shown.get_associated_file_buffer("labels.txt") == labels_file.read_bytes()


def test_multi_input_model_variants_and_metadata_order(mio_convert, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    out = tmp_path / "android"
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\nd\ne\n")
    # --mean/--std describe the source's first input (image), though the .tflite lists meta first.
    options = AndroidOptions(variants=NO_DYNAMIC.split(","), labels=labels, mean=[1.0, 2.0, 3.0], std=[4.0])
    package(mio_convert, out, options)
    _check_variants(out, set(NO_DYNAMIC.split(",")))
    for name in NO_DYNAMIC.split(","):
        path = out / f"model_{name}.tflite"
        meta = md.read_metadata(path.read_bytes())
        interp = Interpreter(model_path=str(path))
        runner = interp.get_signature_runner("serving_default")
        index_to_key = {d["index"]: k for k, d in runner.get_input_details().items()}
        # The schema's tensor metadata follow SubGraph.inputs position by position.
        assert [t.name for t in meta.inputs] == [index_to_key[d["index"]] for d in interp.get_input_details()]
        by_name = {t.name: t for t in meta.inputs + meta.outputs}
        assert by_name["image"].image == md.ImageProperties(color_space="RGB", width=16, height=16)
        assert by_name["meta"].image is None and by_name["meta"].dimension_names == []
        assert by_name["image"].normalization == md.Normalization(mean=[1.0, 2.0, 3.0], std=[4.0])
        assert by_name["meta"].normalization is None
        # The labels name the [batch, classes] output, not the feature map.
        assert [f.name for f in by_name["output_0"].associated_files] == ["labels.txt"]
        assert by_name["output_1"].associated_files == []
        assert interp.get_signature_list()["serving_default"] == {
            "inputs": ["image", "meta"],
            "outputs": ["output_0", "output_1"],
        }


def test_dynamic_from_a_child_conversion(mio_convert, tmp_path):
    """A convert output without a dynamic model: made by `edgeport convert model.onnx --quantize dynamic`."""
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    out = tmp_path / "android"
    package(mio_convert, out, AndroidOptions(variants=["float32", "dynamic"]))
    (_, dynamic) = _section(out)["variants"]
    assert dynamic["made_by"] == "`edgeport convert --quantize dynamic`"
    _check_variants(out, {"float32", "dynamic"})


def test_tflite_input_gives_the_derivable_variants(kws_convert, tmp_path, run_cli):
    model = kws_convert / "model_float32.tflite"
    code, out, err = run_cli(
        "package", model, "--target", "android", "-o", tmp_path / "a", "--skip-unavailable"
    )
    assert code == 0, err
    section = _section(tmp_path / "a")
    assert section["source_kind"] == "tflite"
    assert {s["name"] for s in section["skipped"]} == {"float16", "dynamic"}
    assert all("edgeport convert" in s["reason"] for s in section["skipped"])
    _check_variants(tmp_path / "a", {"float32", "int8_float_io", "int8", "w4a8"})
    assert "float16" in (tmp_path / "a" / "README.md").read_text().split("Not built:")[1]
    # Without --skip-unavailable the first missing variant fails the package, naming the flag.
    code, out, err = run_cli("package", model, "--target", "android", "-o", tmp_path / "b")
    assert code == 1 and "variant float16 cannot be made" in err and "--skip-unavailable" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_tflite_without_signature_gets_one(kws_convert, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions
    from edgeport.tflite_file import edit_tflite, serialize_tflite

    raw = edit_tflite((kws_convert / "model_float32.tflite").read_bytes())
    raw.signatureDefs = []
    model = tmp_path / "bare.tflite"
    model.write_bytes(serialize_tflite(raw))
    package(model, tmp_path / "a", AndroidOptions(variants=["float32", "int8"]))
    for name in ("float32", "int8"):
        signatures = Interpreter(model_path=str(tmp_path / "a" / f"model_{name}.tflite")).get_signature_list()
        assert signatures == {"serving_default": {"inputs": ["x"], "outputs": ["PartitionedCall"]}}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", "LABELS3"], "has 3 labels but output 'output' has 12 classes"),
        (["--mean", "1,2,3", "--std", "1"], "--mean has 3 values but input 'x' has 1 channels"),
        (["--mean", "1"], "--mean given without --std"),
        (["--variants", "float32,int9"], "names no known variant ('int9')"),
        (["--input-range", "5,1"], "is empty"),
        (["--labels", "MISSING"], "does not exist"),
    ],
)
def test_bad_options_are_one_line_and_write_nothing(kws_convert, tmp_path, run_cli, extra, message):
    labels = tmp_path / "three.txt"
    labels.write_text("a\nb\nc\n")
    extra = [
        str(labels) if e == "LABELS3" else str(tmp_path / "nope.txt") if e == "MISSING" else e for e in extra
    ]
    code, out, err = run_cli("package", kws_convert, "--target", "android", "-o", tmp_path / "out", *extra)
    assert code == 1, err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_directory_from_another_tool_or_damaged_manifest(tmp_path, run_cli, kws_convert):
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.tflite").write_bytes(b"not a model")
    code, _, err = run_cli("package", other, "--target", "android", "-o", tmp_path / "out")
    assert code == 1 and "is not an `edgeport convert` output (no edgeport.json)" in err
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "edgeport.json").write_text((kws_convert / "edgeport.json").read_text()[:200])
    code, _, err = run_cli("package", damaged, "--target", "android", "-o", tmp_path / "out")
    assert code == 1 and "is not a valid edgeport manifest" in err
    # A manifest whose files are gone.
    (damaged / "edgeport.json").write_text((kws_convert / "edgeport.json").read_text())
    code, _, err = run_cli("package", damaged, "--target", "android", "-o", tmp_path / "out")
    assert code == 1 and "lists no float32 .tflite and ONNX model that exist" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_packaging_into_the_model_directory_is_refused(kws_convert, run_cli):
    before = sorted(p.name for p in kws_convert.iterdir())
    for model in (kws_convert, kws_convert / "model_float32.tflite"):
        code, _, err = run_cli("package", model, "--target", "android", "-o", kws_convert, "--force")
        assert code == 1 and "holds the model being packaged" in err
    assert sorted(p.name for p in kws_convert.iterdir()) == before


def test_calibration_data_is_used_for_the_int8_variants(kws_convert, tmp_path):
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    data = tmp_path / "cal.npy"
    np.save(data, np.random.default_rng(3).standard_normal((12, 1, 49, 10)).astype(np.float32))
    package(kws_convert, tmp_path / "a", AndroidOptions(variants=["float32", "int8"], calibration=data))
    section = _section(tmp_path / "a")
    assert any("calibrated by 'data'" in note for note in section["notes"])
    _check_variants(tmp_path / "a", {"float32", "int8"})
    # Data that does not fit the input is refused before any variant is made.
    np.save(data, np.zeros((4, 3, 49, 10), np.float32))
    with pytest.raises(EdgeportError, match="has shape"):
        package(kws_convert, tmp_path / "b", AndroidOptions(variants=["int8"], calibration=data))
    assert not (tmp_path / "b").exists()


def test_same_input_same_package(kws_convert, tmp_path):
    """The manifest is reproducible apart from its run block, and so is every file without the host
    latency (the READMEs show it: tests/targets/test_android_latency.py)."""
    from edgeport.manifest import Manifest
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    for out in ("a", "b"):
        package(
            kws_convert / "model_float32.tflite",
            tmp_path / out,
            AndroidOptions(variants=["float32", "int8"], latency=False),
        )
    first, second = Manifest.read(tmp_path / "a"), Manifest.read(tmp_path / "b")
    assert first.reproducible() == second.reproducible()
    for name in ("model_float32.tflite", "model_int8.tflite", "metadata.json", "README.md"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
