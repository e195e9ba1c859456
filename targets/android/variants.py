"""The model variants an Android package ships, each made from the float model and verified against it.

From an `edgeport convert` output directory: float32 and float16 are the converter's verified files;
a quantized model the conversion already made (`--quantize int8|dynamic|w4a8`) is taken as it is; full
int8 (float or int8 I/O) is calibrated here on the float32 .tflite with TensorFlow's calibrator (the
first half of the TFLite converter's own int8 conversion, on the same float model) and quantized by
quant/int8.py's `quantize_calibrated` (the second half); w4a8 is quant/int4.py's rewrite of that int8
model; dynamic-range int8 needs the TFLite converter on the float Keras model, which only a conversion
has, so it comes from `edgeport convert DIR/model.onnx --quantize dynamic` run as a child process (the
pipeline owns the ONNX -> Keras step; a target does not import it).

From a single .tflite only what the float .tflite gives is derivable: float32, int8 (both I/O types)
and w4a8; float16 and dynamic are listed as unavailable with the reason.

Every variant runs in LiteRT on the same inputs as float32: max relative error and SQNR per output,
top-1 agreement for classifier outputs. float16 must be within FLOAT16_MAX_REL; the integer variants
must reach MIN_SQNR_DB (below it the model is broken, not merely less accurate).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Manifest, TensorInfo
from edgeport.packaging import read_manifest
from edgeport.quant.calibration import CLIP_SIGMAS, gaussian_samples, make_calibration
from edgeport.quant.fidelity import sqnr_db
from edgeport.quant.input_stats import InputStats, infer_input_stats
from edgeport.quant.section import QuantSection
from edgeport.runtimes.litert import LiteRTRunner, check_allocates, interpreter, match_signature
from edgeport.targets.android.signature import with_signature
from edgeport.targets.android.target import VARIANT_NAMES
from edgeport.tempdirs import tempdir
from edgeport.tensors import Sample, TensorSpec, random_inputs, to_channels_last
from edgeport.tflite_file import verify_tflite

VARIANTS = VARIANT_NAMES
# What each variant is for, in the package README and manifest.
PURPOSE: dict[str, str] = {
    "float32": "reference accuracy; CPU and GPU delegate (slowest, largest)",
    "float16": "GPU delegate (half the size of float32; the GPU computes in fp16)",
    "dynamic": "CPU (XNNPACK): int8 weights, float activations; no calibration",
    "int8_float_io": "CPU (XNNPACK) and NNAPI: full integer inside, float32 inputs and outputs",
    "int8": "NPU / DSP (NNAPI, Hexagon, Edge TPU): full integer including inputs and outputs",
    "w4a8": "smallest file: 4-bit packed weights, int8 activations, int8 I/O (CPU)",
}
FLOAT16_MAX_REL = 1e-2  # issue 13: float16 within 1e-2 relative of float32
MIN_SQNR_DB = 10.0  # an integer variant below this is broken (error energy a tenth of the signal's)
VERIFY_SAMPLES = 16
VERIFY_SEED = 1  # not the calibration seed: verification inputs are not calibration inputs
CALIBRATION_SAMPLES = 64
CALIBRATION_SEED = 0
CHILD_TIMEOUT_S = 1800


class Unavailable(Exception):
    """A variant that cannot be made from this input; the message says why."""


@dataclass
class FloatSource:
    """What the variants are made from."""

    path: Path  # the convert output directory or the .tflite
    float32: bytes
    in_specs: list[TensorSpec]  # source names, layout and order (a bare .tflite: its signature's)
    out_specs: list[TensorSpec]
    stats: dict[str, InputStats]  # what the inputs look like, for calibration and verification
    manifest: Manifest | None = None  # the convert output's
    existing: dict[str, bytes] = field(default_factory=dict)  # variants the convert output holds
    onnx: Path | None = None
    keep_nchw: bool = False

    @property
    def from_convert(self) -> bool:
        return self.manifest is not None


class OutputCheck(BaseModel):
    name: str
    max_rel_error: float
    sqnr_db: float | None  # None: identical to float32 (infinite SQNR)
    top1_agreement: float | None = None  # classifier outputs only


class VariantCheck(BaseModel):
    reference: str = "float32"
    samples: int
    inputs: str
    criterion: str
    passed: bool
    outputs: list[OutputCheck]


@dataclass
class MadeVariant:
    name: str
    data: bytes
    how: str  # where it came from, for the manifest
    check: VariantCheck | None = None


# --- the input -------------------------------------------------------------------------------------


def _spec(info: TensorInfo, source: TensorInfo | None) -> TensorSpec:
    """A tensor as LiteRTRunner addresses it: source name and layout where the convert output knows
    them, channels-last when the .tflite moved the channels."""
    if source is None:
        return TensorSpec(info.name, list(info.shape), info.dtype)
    # By the layouts the manifest records, not by comparing shapes: [1, 4, 4, 4] is the same either way.
    moved = source.layout in ("NCHW", "NCW") and info.layout in ("NHWC", "NWC")
    return TensorSpec(source.name, list(source.shape), source.dtype, channels_last=moved)


def _stats_from(manifest: Manifest, onnx_path: Path) -> dict[str, InputStats]:
    """The input statistics the conversion calibrated with, else those the ONNX graph shows."""
    quant = QuantSection.find(manifest)
    if quant is not None and quant.calibration is not None and quant.calibration.input_stats:
        found = {}
        for name, st in quant.calibration.input_stats.items():
            low, high = st.get("range", (None, None))
            found[name] = InputStats(
                mean=np.asarray(st["mean"], np.float32),
                std=np.asarray(st["std"], np.float32),
                source=str(st.get("source", "manifest")),
                low=low,
                high=high,
            )
        return found
    import onnx

    return infer_input_stats(onnx.load(str(onnx_path)))


def _existing(manifest: Manifest, directory: Path) -> dict[str, bytes]:
    """Variants the conversion wrote, by variant name (an int8 model by the I/O type it was made with)."""
    quant = QuantSection.find(manifest)
    found = {}
    for art in manifest.artifacts:
        if art.kind != "tflite" or not (directory / art.path).is_file():
            continue
        name = art.precision
        if name == "int8" and quant is not None and quant.io == "float":
            name = "int8_float_io"
        if name in VARIANTS:
            found[name] = (directory / art.path).read_bytes()
    return found


def load_source(model: Path) -> FloatSource:
    """The float model and what is known about its inputs, from a convert output or a .tflite."""
    model = Path(model)
    fix = "give a .tflite file or an `edgeport convert` output directory"
    if model.is_dir():
        manifest = read_manifest(model, "an `edgeport convert` output", fix)
        arts = manifest.artifacts
        tflite = next((a for a in arts if a.kind == "tflite" and a.precision == "float32"), None)
        onnx_art = next((a for a in manifest.artifacts if a.kind == "onnx"), None)
        if tflite is None or onnx_art is None or not (model / tflite.path).is_file():
            raise EdgeportError(
                f"{model}/{MANIFEST_NAME} lists no float32 .tflite and ONNX model that exist",
                "run `edgeport convert` into that directory again",
            )
        float32 = (model / tflite.path).read_bytes()
        verify_tflite(float32, model / tflite.path)
        sources = {t.name: t for t in onnx_art.inputs + onnx_art.outputs}
        specs = [
            _spec(info, sources.get(info.source_name or info.name)) for info in tflite.inputs + tflite.outputs
        ]
        # In the source's order (forward()'s arguments, the ONNX outputs): "the first input" of the
        # options is the source's first, whatever order the .tflite lists them in.
        order = {t.name: i for i, t in enumerate(onnx_art.inputs + onnx_art.outputs)}
        in_specs = sorted(specs[: len(tflite.inputs)], key=lambda s: order.get(s.name, len(order)))
        out_specs = sorted(specs[len(tflite.inputs) :], key=lambda s: order.get(s.name, len(order)))
        onnx_path = model / onnx_art.path
        return FloatSource(
            path=model,
            float32=float32,
            in_specs=in_specs,
            out_specs=out_specs,
            stats=_stats_from(manifest, onnx_path) if onnx_path.is_file() else {},
            manifest=manifest,
            existing=_existing(manifest, model),
            onnx=onnx_path if onnx_path.is_file() else None,
            keep_nchw=manifest.layout == "NCHW",
        )
    if not model.is_file():
        raise EdgeportError(f"model file {model} does not exist", "check the path")
    parsed = verify_tflite(model.read_bytes(), model)
    float32 = with_signature(model.read_bytes())
    not_float = [t for t in parsed.inputs + parsed.outputs if t.dtype != "float32"]
    if not_float:
        raise EdgeportError(
            f"{model} is not a float model ({not_float[0].name} is {not_float[0].dtype}): the variants are "
            "made from the float32 model",
            "give the float32 .tflite (or the `edgeport convert` output directory)",
        )
    in_specs, out_specs = _signature_specs(float32)
    return FloatSource(path=model, float32=float32, in_specs=in_specs, out_specs=out_specs, stats={})


def _signature_specs(model: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """A bare .tflite's tensors by signature name, in its own layout."""
    interp = interpreter(model)
    interp.allocate_tensors()
    signature = interp.get_signature_runner()

    def specs(details: dict[str, dict[str, Any]]) -> list[TensorSpec]:
        return [
            TensorSpec(name, [int(d) for d in detail["shape"]], np.dtype(detail["dtype"]).name)
            for name, detail in details.items()
        ]

    return specs(signature.get_input_details()), specs(signature.get_output_details())


# --- making the variants ---------------------------------------------------------------------------


def with_index_inputs(samples: list[Sample], specs: Sequence[TensorSpec], seed: int) -> list[Sample]:
    """`samples` with every integer input (token ids, indices) drawn as small non-negative integers,
    as `random_inputs` draws them: Gaussian noise cast to int would index with negative numbers."""
    indices = [s for s in specs if np.dtype(s.dtype).kind in "iu"]
    if not indices:
        return samples
    drawn = random_inputs(indices, len(samples), seed)
    return [{**sample, **ints} for sample, ints in zip(samples, drawn, strict=True)]


def verification_samples(source: FloatSource) -> list[Sample]:
    """The inputs every variant and float32 are compared on: Gaussian with the input statistics when
    known (clipped to mean +- 3 std and to a stated range), else N(0, 1)."""
    drawn = gaussian_samples(source.in_specs, VERIFY_SAMPLES, VERIFY_SEED, source.stats or None, CLIP_SIGMAS)
    return with_index_inputs(drawn, source.in_specs, VERIFY_SEED)


def _feed(sample: Sample, specs: Sequence[TensorSpec], keys: dict[str, str]) -> dict[str, np.ndarray]:
    """One sample by signature input name, in the .tflite's layout."""
    feed = {}
    for spec in specs:
        value = np.asarray(sample[spec.name], spec.dtype)
        feed[keys[spec.name]] = np.ascontiguousarray(to_channels_last(value) if spec.channels_last else value)
    return feed


@dataclass
class _Int8Maker:
    """Full-integer models from one calibration of the float32 .tflite (shared by the int8 variants)."""

    source: FloatSource
    calibration: Path | None
    _calibrated: bytes | None = None
    notes: list[str] = field(default_factory=list)
    method: str = ""

    def calibrated(self) -> bytes:
        if self._calibrated is None:
            from tensorflow.lite.python.optimize import calibrator

            src = self.source
            cal = make_calibration(
                "auto",
                src.in_specs,
                src.stats,
                data=self.calibration,
                count=CALIBRATION_SAMPLES,
                seed=CALIBRATION_SEED,
                clip_sigmas=CLIP_SIGMAS,
            )
            self.notes, self.method = cal.notes, cal.method
            keys = match_signature(src.in_specs, list(_signature_inputs(src.float32)))

            def representative() -> Iterator[dict[str, np.ndarray]]:
                for sample in with_index_inputs(cal.samples, src.in_specs, CALIBRATION_SEED):
                    yield _feed(sample, src.in_specs, keys)

            try:
                self._calibrated = bytes(calibrator.Calibrator(src.float32).calibrate(representative))
            except Exception as exc:  # noqa: BLE001 - TensorFlow's calibrator raises many kinds
                raise Unavailable(f"TensorFlow's calibrator failed on the float model ({exc})") from exc
        return self._calibrated

    def quantize(self, io: str) -> bytes:
        from tensorflow.lite.python import conversion_metadata_schema_py_generated as conversion
        from tensorflow.lite.python.lite import TFLiteConverterBase

        from edgeport.quant.int8 import quantize_calibrated

        # The converter's default int8 settings, and the conversion metadata a full-integer conversion sets.
        converter = TFLiteConverterBase()
        converter._metadata.options.modelOptimizationModes = [
            conversion.ModelOptimizationMode.PTQ_FULL_INTEGER
        ]
        calibrated = self.calibrated()
        try:
            model = quantize_calibrated(converter, calibrated, io)
        except Exception as exc:  # noqa: BLE001 - the MLIR quantizer raises many kinds
            raise Unavailable(f"the TFLite quantizer could not make it full-integer ({exc})") from exc
        check_allocates(model, f"the {io} I/O int8 model")
        return model


def _signature_inputs(model: bytes) -> list[str]:
    interp = interpreter(model)
    return list(next(iter(interp.get_signature_list().values()))["inputs"])


def _converted_child(source: FloatSource, mode: str) -> bytes:
    """`edgeport convert DIR/model.onnx --quantize MODE` in a child process: the float Keras model the
    TFLite converter quantizes exists only inside a conversion."""
    from edgeport.quant.modes import MODE_FILES

    if source.onnx is None:
        raise Unavailable(
            f"{mode} needs the TFLite converter on the float model, and {source.path} is a .tflite "
            f"(package the `edgeport convert` output directory, or convert with --quantize {mode})"
        )
    with tempdir("android") as work:
        out = Path(work) / "convert"
        command = [sys.executable, "-m", "edgeport", "convert", str(source.onnx), "-o", str(out)]
        command += ["--quantize", mode, "-q"] + (["--keep-nchw"] if source.keep_nchw else [])
        done = subprocess.run(command, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
        if done.returncode != 0:
            lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
            raise Unavailable(f"`edgeport convert --quantize {mode}` failed: {lines[-1] if lines else '?'}")
        return (out / MODE_FILES[mode]).read_bytes()


def make_variants(
    source: FloatSource,
    wanted: Sequence[str],
    calibration: Path | None = None,
    step: Callable[[str], None] = lambda _text: None,
) -> tuple[list[MadeVariant], dict[str, str], list[str]]:
    """(made variants in VARIANTS order, unavailable variant -> why, calibration notes)."""
    int8 = _Int8Maker(source, calibration)
    made: dict[str, MadeVariant] = {}
    missing: dict[str, str] = {}

    def make(name: str) -> MadeVariant:
        if name in made:
            return made[name]
        if name == "float32":
            return MadeVariant(name, source.float32, "the float model as converted and verified")
        # Calibration data given: the conversion's calibrated models are made again from it.
        if name in source.existing and (name in ("float16", "dynamic") or calibration is None):
            return MadeVariant(name, source.existing[name], "written by `edgeport convert`")
        if name == "float16":
            raise Unavailable(
                "float16 weights need the TFLite converter on the float model, which a .tflite does not "
                "carry (package the `edgeport convert` output directory, which always holds it)"
            )
        if name == "dynamic":
            step("dynamic-range int8 (a child conversion)")
            child = _converted_child(source, "dynamic")
            return MadeVariant(name, child, "`edgeport convert --quantize dynamic`")
        if name in ("int8", "int8_float_io"):
            step(f"{name}: calibrating and quantizing")
            io = "int8" if name == "int8" else "float"
            return MadeVariant(name, int8.quantize(io), "TensorFlow's calibrator + quant/int8.py on float32")
        if name == "w4a8":
            from edgeport.quant.int4 import to_w4a8

            step("w4a8: 4-bit weights")
            base = make("int8").data
            w4a8, layers = to_w4a8(base, source.float32, None, "squant")
            if not layers:
                raise Unavailable("the model has no CONV_2D or FULLY_CONNECTED weights to store in 4 bits")
            return MadeVariant(name, w4a8, f"quant/int4.py on the int8 variant ({len(layers)} 4-bit layers)")
        raise ValueError(f"unknown variant {name!r}")

    samples = verification_samples(source)
    for name in VARIANTS:
        if name not in wanted:
            continue
        try:
            variant = make(name)
            variant.check = check_variant(name, source, variant.data, samples)
            if not variant.check.passed:
                raise Unavailable(f"it fails verification against float32 ({variant.check.criterion})")
        except Unavailable as why:
            missing[name] = str(why)
            continue
        made[name] = variant
    notes = []
    if int8.method:
        how = f"the int8 variants made here were calibrated by {int8.method!r} (quant/calibration.py)"
        notes = [how, *(f"int8 calibration: {n}" for n in int8.notes)]
    return [made[n] for n in VARIANTS if n in made], missing, notes


# --- verification ----------------------------------------------------------------------------------


def _is_classifier(spec: TensorSpec) -> bool:
    """[batch, classes] scores: top-1 agreement is meaningful."""
    return len(spec.shape) == 2 and spec.shape[-1] > 1 and np.dtype(spec.dtype).kind == "f"


def check_variant(name: str, source: FloatSource, model: bytes, samples: Sequence[Sample]) -> VariantCheck:
    """`model` against float32 on `samples` in LiteRT (optimized kernels, no delegate)."""
    ref = LiteRTRunner(source.float32, source.in_specs, source.out_specs)
    got = LiteRTRunner(model, source.in_specs, source.out_specs)
    refs = [ref.run(s) for s in samples]
    gots = [got.run(s) for s in samples]
    outputs = []
    for spec in source.out_specs:
        r = [x[spec.name] for x in refs]
        g = [x[spec.name] for x in gots]
        peak = max(float(np.max(np.abs(x))) for x in r)
        worst = max(float(np.max(np.abs(a - b))) for a, b in zip(r, g, strict=True))
        sqnr = sqnr_db(r, g)
        top1 = None
        if _is_classifier(spec):
            same = [np.argmax(a, -1) == np.argmax(b, -1) for a, b in zip(r, g, strict=True)]
            top1 = round(float(np.mean(np.concatenate(same))), 4)
        outputs.append(
            OutputCheck(
                name=spec.name,
                max_rel_error=float(f"{worst / peak if peak else worst:.3g}"),
                sqnr_db=round(float(sqnr), 2) if np.isfinite(sqnr) else None,
                top1_agreement=top1,
            )
        )
    if name == "float32":
        criterion, passed = "the reference itself", True
    elif name == "float16":
        criterion = f"max relative error <= {FLOAT16_MAX_REL:g}"
        passed = all(o.max_rel_error <= FLOAT16_MAX_REL for o in outputs)
    else:
        criterion = f"SQNR >= {MIN_SQNR_DB:g} dB on every output"
        passed = all(o.sqnr_db is None or o.sqnr_db >= MIN_SQNR_DB for o in outputs)
    how = "drawn from the input statistics" if source.stats else "N(0, 1)"
    return VariantCheck(
        samples=len(samples),
        inputs=f"seeded Gaussian samples {how}",
        criterion=criterion,
        passed=passed,
        outputs=outputs,
    )
