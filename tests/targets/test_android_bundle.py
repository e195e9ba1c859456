"""OUTDIR/android/, the Android library module of `edgeport package --target android`: its tree and
manifest entries, the variant picked for each accelerator from the package's measurements, per-output
labels, --no-bundle, and the generated Kotlin: compiled by kotlinc against stand-ins of the LiteRT and
Android classes it calls (tests/fixtures/android_stubs, LiteRT 1.4.0's signatures), and run on the JVM
against them to check what it feeds and returns.

kotlinc (Debian's `kotlin` package, a JVM) takes 10-30 s to start and compile, so every wrapper and the
test program are compiled in one invocation. Without kotlinc, javac or java those tests skip, except under
CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest, sha256_of
from edgeport.targets.android import bundle, bundle_kotlin, describe
from edgeport.targets.android import metadata as md
from edgeport.targets.android.bundle_kotlin import WrapperSpec, WrapperTensor
from edgeport.tensors import TensorSpec
from tests.targets.test_android_package import _convert

STUBS = Path(__file__).resolve().parents[1] / "fixtures" / "android_stubs"
KWS_CLASSES = 12
TWO_VARIANTS = ["float32", "int8"]


@pytest.fixture(scope="module")
def kws_convert(tmp_path_factory) -> Path:
    return _convert(tmp_path_factory.mktemp("kws") / "convert", "ds_cnn_kws", [[1, 1, 49, 10]])


@pytest.fixture(scope="module")
def kws_bundle(kws_convert, tmp_path_factory) -> Path:
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    labels = tmp_path_factory.mktemp("labels") / "words.txt"
    labels.write_text("".join(f"word{i}\n" for i in range(KWS_CLASSES)))
    out = tmp_path_factory.mktemp("kws_bundle") / "pkg"
    # Without the host latency, so every file of the bundle is listed with its hash (with it, the READMEs'
    # hashes are in the run block: tests/targets/test_android_latency.py).
    options = AndroidOptions(variants=TWO_VARIANTS, labels=labels, mean=[0.5], std=[2.0], latency=False)
    package(kws_convert, out, options)
    return out


def _section(outdir: Path) -> dict:
    return json.loads((outdir / "edgeport.json").read_text())["sections"]["android"]


# --- the bundle of a packaged model --------------------------------------------------------------------


def test_bundle_tree_assets_and_manifest(kws_bundle):
    root = kws_bundle / "android"
    section = _section(kws_bundle)
    assert section["bundle"] == "android" and section["labels_files"] == {"output": "labels.txt"}
    kotlin = "src/main/java/edgeport/ds_cnn_kws/DsCnnKwsModel.kt"
    expected = {
        "README.md",
        "build.gradle.kts",
        "src/main/AndroidManifest.xml",
        kotlin,
        "src/main/assets/model_float32.tflite",
        "src/main/assets/model_int8.tflite",
        "src/main/assets/labels.txt",
    }
    assert {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} == expected
    # The assets are the package's own files, byte for byte.
    for name in ("model_float32.tflite", "model_int8.tflite", "labels.txt"):
        assert (root / "src/main/assets" / name).read_bytes() == (kws_bundle / name).read_bytes()
    # The manifest lists every file of the bundle with its hash.
    listed = {a.path: a for a in Manifest.read(kws_bundle).artifacts}
    for relative in expected:
        art = listed[f"android/{relative}"]
        assert art.kind == "other" and art.sha256 == sha256_of(root / relative)
    # The normalisation constants are the metadata's; the pinned LiteRT is a real release line.
    source = (root / kotlin).read_text()
    assert "Normalization(floatArrayOf(0.5f), floatArrayOf(2.0f), 1)" in source
    assert 'readLabels(context, "labels.txt")' in source and "fun outputTop(k: Int)" in source
    gradle = (root / "build.gradle.kts").read_text()
    assert 'implementation("com.google.ai.edge.litert:litert:1.4.0")' in gradle
    assert 'namespace = "edgeport.ds_cnn_kws"' in gradle
    assert "android/README.md" in (kws_bundle / "README.md").read_text()


def test_bundle_readme_ships_by_the_measurements(kws_bundle):
    section = _section(kws_bundle)
    by_name = {v["name"]: v for v in section["variants"]}
    text = (kws_bundle / "android" / "README.md").read_text()
    # NNAPI gets the integer-only variant; the GPU and the CPU float32 (no float16 or int8_float_io here)
    # when the measurements say each takes it whole.
    assert by_name["int8"]["delegates"]["integer_only"]
    assert "| `Accelerator.NNAPI` | `model_int8.tflite` |" in text
    f32, i8 = by_name["float32"]["delegates"], by_name["int8"]["delegates"]
    if f32["gpu"]["taken_nodes"] == f32["nodes"]:
        assert "| `Accelerator.GPU` | `model_float32.tflite` |" in text
    if f32["xnnpack_nodes"] == f32["nodes"]:
        assert "| `Accelerator.CPU` | `model_float32.tflite` |" in text
    assert f"{f32['gpu']['taken_nodes']} of {f32['nodes']}" in text and f"{i8['xnnpack_nodes']} of" in text
    assert f"{by_name['int8']['size_bytes'] / 1024:.1f} KB" in text
    assert "val model = DsCnnKwsModel(context, DsCnnKwsModel.Accelerator.CPU)" in text


def test_no_bundle_and_force_over_a_bundle(kws_convert, kws_bundle, tmp_path, run_cli):
    out = tmp_path / "pkg"
    shutil.copytree(kws_bundle, out)
    code, _, err = run_cli(
        "package",
        kws_convert,
        "--target",
        "android",
        "-o",
        out,
        "--force",
        "--no-bundle",
        "--variants",
        "float32",
    )
    assert code == 0, err
    assert not (out / "android").exists()
    assert not [a for a in Manifest.read(out).artifacts if a.path.startswith("android/")]
    assert _section(out)["bundle"] is None and "android/" not in (out / "README.md").read_text()


def test_a_failing_bundle_leaves_nothing(kws_convert, tmp_path, monkeypatch):
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    def broken(*_args):
        raise EdgeportError("the bundle failed", "test")

    monkeypatch.setattr(bundle, "write_bundle", broken)
    with pytest.raises(EdgeportError, match="the bundle failed"):
        package(kws_convert / "model_float32.tflite", tmp_path / "out", AndroidOptions(variants=["float32"]))
    assert not (tmp_path / "out").exists()


def test_labels_per_output(tmp_path, run_cli):
    mio = _convert(tmp_path / "mio", "multi_io", [[1, 3, 16, 16], [1, 6]])
    five, three = tmp_path / "five.txt", tmp_path / "three.txt"
    five.write_text("a\nb\nc\nd\ne\n")
    three.write_text("red\ngreen\nblue\n")
    out = tmp_path / "pkg"
    code, _, err = run_cli(
        "package", mio, "--target", "android", "-o", out, "--variants", "float32",
        "--labels", five, "--labels", f"output_1={three}",
    )  # fmt: skip
    assert code == 0, err
    files = {"output_0": "labels_output_0.txt", "output_1": "labels_output_1.txt"}
    assert _section(out)["labels_files"] == files
    data = (out / "model_float32.tflite").read_bytes()
    meta = md.read_metadata(data)
    assert {t.name: [f.name for f in t.associated_files] for t in meta.outputs} == {
        k: [v] for k, v in files.items()
    }
    assert md.associated_files(data) == {
        files["output_0"]: five.read_bytes(),
        files["output_1"]: three.read_bytes(),
    }
    kotlin = next((out / "android").rglob("*.kt")).read_text()
    # One label per class of the [1, 5] output: a top-k; the [1, 8, 8, 3] map gets its labels only.
    assert "fun output0Top(k: Int)" in kotlin and "output1Top" not in kotlin
    assert "val output1Labels: List<String>" in kotlin


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (["nope=THREE"], "names output 'nope', which the model does not have (outputs: scores, seg)"),
        (["seg=FIVE"], "has 5 labels but output 'seg' has 3 classes"),
        (["FIVE", "scores=FIVE"], "gives output 'scores' two labels files"),
        (["scores=MISSING"], "does not exist"),
    ],
)
def test_bad_labels_are_one_line(tmp_path, labels, message):
    (tmp_path / "FIVE").write_text("a\nb\nc\nd\ne\n")
    (tmp_path / "THREE").write_text("r\ng\nb\n")
    values = [v.replace(k, str(tmp_path / k)) for v in labels for k in ("FIVE", "THREE", "MISSING") if k in v]
    outputs = [TensorSpec("scores", [1, 5]), TensorSpec("seg", [1, 3, 8, 8], channels_last=True)]
    with pytest.raises(EdgeportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        describe.parse_labels(values, outputs, {"scores": "scores", "seg": "seg"}, "--labels")


def test_labels_file_names_and_a_path_with_an_equals_sign(tmp_path):
    assert describe.label_files(["scores"]) == {"scores": "labels.txt"}
    assert describe.label_files(["a/b", "a:b", "c"]) == {
        "a/b": "labels_a_b.txt",
        "a:b": "labels_a_b_2.txt",
        "c": "labels_c.txt",
    }
    odd = tmp_path / "x=y.txt"  # not an output name: the file itself, for the classifier output
    odd.write_text("a\nb\n")
    found = describe.parse_labels([str(odd)], [TensorSpec("out", [1, 2])], {"out": "out"}, "--labels")
    assert found == {"out": ["a", "b"]}


# --- the variant for each accelerator ----------------------------------------------------------------


def _entry(name: str, xnnpack: int = 10, gpu: int = 10, integer_only: bool = False):
    """A variant's measurements as ship_for reads them (10 nodes)."""
    taken = SimpleNamespace(taken_nodes=gpu)
    delegates = SimpleNamespace(nodes=10, xnnpack_nodes=xnnpack, gpu=taken, integer_only=integer_only)
    return SimpleNamespace(name=name, file=f"model_{name}.tflite", delegates=delegates)


def test_ship_for_follows_the_measurements():
    every = [
        _entry("float32"),
        _entry("float16"),
        _entry("int8_float_io", integer_only=True),
        _entry("int8", integer_only=True),
    ]
    picks = {a: e.name for a, (e, _) in bundle.ship_for(every).items()}
    assert picks == {"CPU": "int8_float_io", "GPU": "float16", "NNAPI": "int8"}
    # XNNPACK leaves a node of the int8 variant to LiteRT's kernels: the CPU gets float32 instead.
    split = [_entry("float32"), _entry("int8_float_io", xnnpack=9, integer_only=True)]
    cpu, why = bundle.ship_for(split)["CPU"]
    assert cpu.name == "float32" and why == "XNNPACK takes all 10 nodes"
    # The GPU delegate's rules leave nodes of float16 to the CPU and take all of float32.
    gpu, why = bundle.ship_for([_entry("float32"), _entry("float16", gpu=8)])["GPU"]
    assert gpu.name == "float32" and why == "float32 weights; the GPU delegate takes all 10 nodes"
    # Neither taken whole: the preferred one, saying how much each accelerator takes of it.
    picks = bundle.ship_for([_entry("float32", xnnpack=7, gpu=6), _entry("dynamic", xnnpack=3, gpu=2)])
    assert picks["CPU"][0].name == "dynamic" and "it takes 3 of 10 nodes" in picks["CPU"][1]
    assert picks["GPU"][0].name == "float32" and "it takes 6 of 10 nodes" in picks["GPU"][1]
    # Nothing integer-only (a float tensor left inside): NNAPI gets float32; no float variant: the GPU int8.
    assert bundle.ship_for([_entry("float32"), _entry("int8")])["NNAPI"][0].name == "float32"
    assert bundle.ship_for([_entry("int8", integer_only=True)])["GPU"][0].name == "int8"


# --- Kotlin names and literals -----------------------------------------------------------------------


def test_kotlin_names_and_literals():
    assert bundle_kotlin.class_name("ds_cnn_kws") == "DsCnnKwsModel"
    assert bundle_kotlin.class_name("my-model") == "MyModel" and bundle_kotlin.class_name("3d") == "M3dModel"
    assert bundle_kotlin.package_name("ds-cnn KWS") == "edgeport.ds_cnn_kws"
    assert bundle_kotlin.package_name("in") == "edgeport.min"
    names = bundle_kotlin.identifiers(["output_0", "PartitionedCall:0", "in", "output-0", "results", "0x"])
    assert names == {
        "output_0": "output0",
        "PartitionedCall:0": "partitionedCall0",
        "in": "inTensor",
        "output-0": "output0Tensor",
        "results": "resultsTensor",
        "0x": "t0x",
    }
    assert bundle_kotlin.kotlin_string('a "b" $c \\d\n') == '"a \\"b\\" \\$c \\\\d\\u000a"'
    assert bundle_kotlin.kotlin_floats([0.5, 127.5, 1e-5]) == "floatArrayOf(0.5f, 127.5f, 1e-05f)"
    with pytest.raises(ValueError, match="placeholders without a value"):
        bundle_kotlin.fill("{{A}} {{B}}", {"A": "x"})
    # Values are not scanned for placeholders: a model named {{CLASS}} is just a name.
    assert bundle_kotlin.fill("{{A}}", {"A": "{{B}}"}) == "{{B}}"


def test_a_tensor_the_wrapper_cannot_pass_is_refused():
    with pytest.raises(EdgeportError, match="cannot pass bool tensor 'mask'.*--no-bundle"):
        bundle_kotlin.kotlin_array(WrapperTensor("mask", (1, 4), "bool"))


# --- compiled with kotlinc, and run against the stand-ins -----------------------------------------------


def _tools() -> dict[str, str]:
    """kotlinc, javac and java; without them the test skips (fails under CI=true, which installs them)."""
    found = {t: shutil.which(t) for t in ("kotlinc", "javac", "java")}
    missing = [t for t, path in found.items() if path is None]
    if missing:
        why = f"{', '.join(missing)} not installed (apt-get install kotlin default-jdk-headless)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why}: CI must compile the generated Kotlin")
        pytest.skip(why)
    return {t: str(path) for t, path in found.items()}


def _specs() -> list[WrapperSpec]:
    """A float32-only package, an int8-I/O one, and a multi-input, multi-output one with labels on two
    outputs, integer inputs and outputs, NCHW normalisation and names that are Kotlin keywords."""
    image = WrapperTensor("image", (1, 32, 32, 3), "float32", (127.5,), (127.5,))
    scores = WrapperTensor("scores", (1, 10), "float32", labels="labels.txt", label_count=10)
    one = {"CPU": "float32", "GPU": "float32", "NNAPI": "float32"}
    return [
        WrapperSpec("float only", "a.tflite", ("float32",), one, (image,), (scores,)),
        WrapperSpec("int8 io", "b.tflite", ("int8",), dict.fromkeys(one, "int8"), (image,), (scores,)),
        WrapperSpec(
            "multi",
            "convert/",
            ("float32", "float16", "int8_float_io", "int8", "w4a8"),
            {"CPU": "int8_float_io", "GPU": "float16", "NNAPI": "int8"},
            (
                WrapperTensor("pixels", (1, 3, 8, 8), "float32", (1.0, 2.0, 3.0), (4.0,), stride=64),
                WrapperTensor("in", (1, 6), "float32"),
                WrapperTensor("ids", (1, 4), "int32"),
                WrapperTensor("positions", (1, 4), "int64"),
            ),
            (
                WrapperTensor("logits", (1, 5), "float32", labels="labels_logits.txt", label_count=5),
                WrapperTensor("seg", (1, 8, 8, 3), "float32", labels="labels_seg.txt", label_count=3),
                WrapperTensor("count", (1,), "int32"),
                WrapperTensor("when", (1, 2), "int64"),
            ),
        ),
    ]


# Run by test_the_wrapper_runs: a float32 and an int8 variant of a model with an NCHW image normalised per
# channel, an int32 input, a labelled classifier output and an int32 output.
CHECKED = WrapperSpec(
    "runtime check",
    "check/",
    ("float32", "int8"),
    {"CPU": "float32", "GPU": "float32", "NNAPI": "int8"},
    (
        WrapperTensor("pixels", (1, 3, 2, 2), "float32", (1.0, 2.0, 3.0), (4.0, 0.5, 2.0), stride=4),
        WrapperTensor("ids", (1, 2), "int32"),
    ),
    (
        WrapperTensor("logits", (1, 5), "float32", labels="labels_logits.txt", label_count=5),
        WrapperTensor("count", (1,), "int32"),
    ),
)
CHECK_MAIN = """\
package edgeport.check

import android.content.Context
import android.content.res.AssetManager
import android.content.res.FakeAssets
import edgeport.runtime_check.RuntimeCheckModel
import java.io.File
import org.tensorflow.lite.FakeRuntime

// args: the assets directory, then per run an accelerator and the stand-in's tensors (FakeRuntime.load).
fun main(args: Array<String>) {
    val assets = FakeAssets.of(File(args[0]))
    val context = object : Context() {
        override fun getAssets(): AssetManager = assets
    }
    val pixels = FloatArray(12) { it * 7.5f - 20f }
    for (i in 1 until args.size step 2) {
        FakeRuntime.load(File(args[i + 1]))
        val model = RuntimeCheckModel(context, RuntimeCheckModel.Accelerator.valueOf(args[i]))
        val out = model.run(pixels, intArrayOf(7, -9))
        val loaded = String(FakeRuntime.model)
        println("run ${model.variant.asset} $loaded ${FakeRuntime.delegates} ${FakeRuntime.signatureKey}")
        for ((name, bytes) in FakeRuntime.FED) println("fed $name ${bytes.joinToString(",")}")
        println("logits ${out.logits.joinToString(",")}")
        println("top ${out.logitsTop(2).joinToString(",")}")
        println("count ${out.count.joinToString(",")}")
        model.close()
    }
}
"""


@pytest.fixture(scope="module")
def kotlin_build(kws_bundle, tmp_path_factory) -> dict[str, Path]:
    """Every wrapper (the packaged KWS model's, _specs()', CHECKED's) and CHECK_MAIN compiled by one kotlinc
    run against the stand-ins, which javac compiles first: {"jar": ..., "stubs": ..., "sources": ...}."""
    tools = _tools()
    work = tmp_path_factory.mktemp("kotlin")
    stubs = work / "stubs"
    java = sorted(str(p) for p in STUBS.rglob("*.java"))
    done = subprocess.run(
        [tools["javac"], "-d", str(stubs), *java], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    sources = [next((kws_bundle / "android").rglob("*.kt"))]
    for spec in [*_specs(), CHECKED]:
        path = work / "src" / bundle_kotlin.wrapper_path(spec)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(bundle_kotlin.render_wrapper(spec))
        sources.append(path)
    (work / "Main.kt").write_text(CHECK_MAIN)
    jar = work / "app.jar"
    command = [tools["kotlinc"], "-Werror", "-cp", str(stubs), *map(str, sources), str(work / "Main.kt")]
    done = subprocess.run(
        [*command, "-include-runtime", "-d", str(jar)], capture_output=True, text=True, timeout=900
    )
    errors = [line for line in done.stderr.splitlines() if "Xverify" not in line]
    assert done.returncode == 0, "\n".join(errors)
    return {"jar": jar, "stubs": stubs, "java": Path(tools["java"]), "multi": sources[3]}


def test_generated_kotlin_compiles_against_litert(kotlin_build):
    with zipfile.ZipFile(kotlin_build["jar"]) as jar:
        classes = set(jar.namelist())
    for cls in (
        "ds_cnn_kws/DsCnnKwsModel",
        "float_only/FloatOnlyModel",
        "int8_io/Int8IoModel",
        "multi/MultiModel",
    ):
        assert f"edgeport/{cls}.class" in classes and f"edgeport/{cls}$Outputs.class" in classes
    multi = kotlin_build["multi"].read_text()
    assert "fun run(pixels: FloatArray, inTensor: FloatArray, ids: IntArray, positions: LongArray)" in multi
    assert "val whenTensor: LongArray" in multi and "Normalization(floatArrayOf(1.0f, 2.0f, 3.0f)" in multi


def _script(path: Path, int8: bool, logits: np.ndarray) -> Path:
    """The stand-in's tensors for one run (FakeRuntime.load): int8 I/O with its scale and zero point."""
    pixels = "INT8 1,3,2,2 0.05 -3" if int8 else "FLOAT32 1,3,2,2 0 0"
    scores = "INT8 1,5 0.1 2" if int8 else "FLOAT32 1,5 0 0"
    path.write_text(
        f"input pixels {pixels}\n"
        "input ids INT32 1,2 0 0\n"
        f"output logits {scores} {logits.tobytes().hex()}\n"
        f"output count INT32 1 0 0 {np.array([42], '<i4').tobytes().hex()}\n"
    )
    return path


def test_the_wrapper_runs(kotlin_build, tmp_path):
    """The generated wrapper on the JVM, LiteRT replaced by the stand-ins: it loads its accelerator's
    variant from assets, adds that accelerator's delegate, feeds the normalised (and for int8, quantized)
    values and the integers as given, and returns the outputs dequantized, with labels and top-k."""
    assets = tmp_path / "assets"
    assets.mkdir()
    (assets / "model_float32.tflite").write_bytes(b"FLOAT32-MODEL")
    (assets / "model_int8.tflite").write_bytes(b"INT8-MODEL")
    labels = ["cat", "dog", "bird", "fish", "frog"]
    (assets / "labels_logits.txt").write_text("\n".join(labels) + "\n")
    float_logits = np.array([0.1, 2.5, -1.0, 2.25, 0.0], "<f4")
    int8_logits = np.array([-128, 30, 2, 127, 5], np.int8)
    runs = [
        ("CPU", _script(tmp_path / "cpu.txt", False, float_logits)),
        ("GPU", _script(tmp_path / "gpu.txt", False, float_logits)),
        ("NNAPI", _script(tmp_path / "nnapi.txt", True, int8_logits)),
    ]
    classpath = f"{kotlin_build['jar']}{os.pathsep}{kotlin_build['stubs']}"
    args = [str(a) for run in runs for a in run]
    done = subprocess.run(
        [str(kotlin_build["java"]), "-cp", classpath, "edgeport.check.MainKt", str(assets), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    blocks = done.stdout.split("run ")[1:]
    assert len(blocks) == 3
    # What the wrapper should feed: (x - mean[c]) / std[c] in float32, channel c of NCHW element i = i // 4.
    pixels = np.arange(12, dtype=np.float32) * np.float32(7.5) - np.float32(20)
    channel = np.arange(12) // 4
    mean, std = np.array([1, 2, 3], np.float32)[channel], np.array([4, 0.5, 2], np.float32)[channel]
    normalised = (pixels - mean) / std
    # Java's Math.round: floor(x + 0.5), then the zero point, clamped to int8.
    quantized = np.clip(np.floor((normalised / np.float32(0.05)).astype(np.float64) + 0.5) - 3, -128, 127)
    dequantized = (int8_logits.astype(np.int32) - 2).astype(np.float32) * np.float32(0.1)
    for (accelerator, _), block in zip(runs, blocks, strict=True):
        head, *lines = block.strip().splitlines()
        fed, got = {}, {}
        for line in lines:
            word, rest = line.split(" ", 1)
            if word == "fed":
                name, values = rest.split(" ", 1)
                fed[name] = np.array([int(b) for b in values.split(",")], np.int8)
            else:
                got[word] = rest
        int8 = accelerator == "NNAPI"
        asset, model, delegates, key = head.split(" ", 3)
        assert asset == ("model_int8.tflite" if int8 else "model_float32.tflite")
        assert model == ("INT8-MODEL" if int8 else "FLOAT32-MODEL") and key == "serving_default"
        assert delegates == {"CPU": "[]", "GPU": "[GpuDelegate]", "NNAPI": "[NnApiDelegate]"}[accelerator]
        if int8:
            assert fed["pixels"].tolist() == quantized.astype(int).tolist()
        else:
            assert fed["pixels"].tobytes() == normalised.astype("<f4").tobytes()
        assert np.frombuffer(fed["ids"].tobytes(), "<i4").tolist() == [7, -9]
        logits = np.array([np.float32(v) for v in got["logits"].split(",")], np.float32)
        expected = dequantized if int8 else float_logits
        assert np.array_equal(logits, expected)
        top = [entry.split(": ") for entry in got["top"].split(",")]
        order = np.argsort(-expected, kind="stable")[:2]
        assert [(label, np.float32(score)) for label, score in top] == [
            (labels[i], expected[i]) for i in order
        ]
        assert got["count"] == "42"
