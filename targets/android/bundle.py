"""OUTDIR/android/: the package as a small Android library module an app includes.

    android/
      README.md                      which variant to ship for which accelerator, and how to use it
      build.gradle.kts               the module, with LiteRT pinned (bundle_templates.LITERT_VERSION)
      src/main/AndroidManifest.xml
      src/main/assets/               every variant's .tflite and the labels files, as in OUTDIR
      src/main/java/<package>/<Class>.kt   the wrapper (bundle_kotlin.py)

Which variant goes with which accelerator is decided here from the package's own measurements
(`ship_for`), for the wrapper's defaults, this README and the package's top-level README alike.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from edgeport import __version__
from edgeport.targets.android import bundle_kotlin, describe, latency
from edgeport.targets.android.bundle_kotlin import ACCELERATORS, WrapperSpec, WrapperTensor
from edgeport.targets.android.bundle_templates import ANDROID_MANIFEST, LITERT_VERSION
from edgeport.targets.android.metadata import TensorMetadata
from edgeport.targets.android.section import AndroidSection, VariantEntry
from edgeport.tensors import TensorSpec

BUNDLE_DIR = "android"
ASSETS = "src/main/assets"

# Preference among the variants for each accelerator, before the measurements have their say.
_CPU_ORDER = ("int8_float_io", "dynamic", "float32", "int8", "float16", "w4a8")
_GPU_ORDER = ("float16", "float32", "dynamic", "int8_float_io", "int8", "w4a8")
_NNAPI_INTEGER = ("int8", "int8_float_io")
_NNAPI_FLOAT = ("float32", "float16", "dynamic", "w4a8")


def _pick(
    made: Mapping[str, VariantEntry], order: Sequence[str], whole: Callable[[VariantEntry], bool]
) -> tuple[VariantEntry, bool]:
    """The first variant in `order` the accelerator takes whole (True), else the first made (False)."""
    wholly = [made[n] for n in order if n in made and whole(made[n])]
    if wholly:
        return wholly[0], True
    return next((made[n] for n in order if n in made), next(iter(made.values()))), False


def _why(entry: VariantEntry, whole: bool, taken: int | None, what: str) -> str:
    if whole:
        return f"{what} takes all {entry.delegates.nodes} nodes"
    return f"no variant runs wholly on {what}; it takes {taken} of {entry.delegates.nodes} nodes of this one"


def ship_for(variants: Sequence[VariantEntry]) -> dict[str, tuple[VariantEntry, str]]:
    """Accelerator (CPU, GPU, NNAPI) -> the variant to ship for it and why, from what was measured.

    CPU: the first of int8 with float I/O, dynamic, float32 (least arithmetic first) that XNNPACK takes
    whole, else the first made. GPU: float16 (the delegate computes in fp16 anyway), then float32, the
    first the GPU delegate takes whole by its rules (delegates.py), else the first made. NNAPI: an
    integer-only variant (NPUs and DSPs take nothing else), else float32."""
    # Not by host latency: the pick sets the wrapper's defaults, which must not change between two packages
    # of the same model, and an x86 host's timings do not rank variants as a phone's CPU does.
    made = {v.name: v for v in variants}
    cpu, whole = _pick(made, _CPU_ORDER, lambda v: v.delegates.xnnpack_nodes == v.delegates.nodes)
    cpu_why = _why(cpu, whole, cpu.delegates.xnnpack_nodes, "XNNPACK")
    gpu, whole = _pick(made, _GPU_ORDER, lambda v: v.delegates.gpu.taken_nodes == v.delegates.nodes)
    weights = {"float16": "float16 weights, half float32's size", "float32": "float32 weights"}
    gpu_why = f"{weights.get(gpu.name, 'quantized weights')}; " + _why(
        gpu, whole, gpu.delegates.gpu.taken_nodes, "the GPU delegate"
    )
    integer = {n: v for n, v in made.items() if n in _NNAPI_INTEGER and v.delegates.integer_only}
    if integer:
        nnapi = _pick(integer, _NNAPI_INTEGER, lambda v: True)[0]
        nnapi_why = "integer-only (no float tensor inside), what NPUs and DSPs behind NNAPI run"
    else:
        nnapi = _pick(made, _NNAPI_FLOAT, lambda v: True)[0]
        nnapi_why = "no integer-only variant: NNAPI runs it on the device's GPU or CPU drivers, if at all"
    return {"CPU": (cpu, cpu_why), "GPU": (gpu, gpu_why), "NNAPI": (nnapi, nnapi_why)}


def wrapper_tensors(
    specs: Sequence[TensorSpec],
    keys: Mapping[str, str],
    described: Sequence[TensorMetadata],
    keep_nchw: bool,
) -> tuple[WrapperTensor, ...]:
    """The wrapper's view of the source's inputs or outputs (in the source's order): signature key,
    shape and type in the .tflite, normalisation and labels from the metadata."""
    by_key = {t.name: t for t in described}
    found = []
    for spec in specs:
        key = keys[spec.name]
        meta = by_key[key]
        shape = tuple(describe.model_shape(spec))
        norm = meta.normalization
        stride = 1
        if norm is not None and describe.channel_axis(spec, keep_nchw) == 1:
            stride = int(math.prod(shape[2:]))
        labels = next((f.name for f in meta.associated_files if f.type == "TENSOR_AXIS_LABELS"), None)
        tensor = WrapperTensor(
            key=key,
            shape=shape,
            dtype=spec.dtype,
            mean=tuple(norm.mean) if norm else (),
            std=tuple(norm.std) if norm else (),
            stride=stride,
            labels=labels,
            label_count=shape[-1] if labels and shape else 0,
        )
        bundle_kotlin.kotlin_array(tensor)  # a type the wrapper cannot pass fails now, not after the variants
        found.append(tensor)
    return tuple(found)


def wrapper_spec(
    section: AndroidSection, inputs: Sequence[WrapperTensor], outputs: Sequence[WrapperTensor]
) -> WrapperSpec:
    """The wrapper of this package: its variants, and `ship_for`'s pick as each accelerator's default."""
    return WrapperSpec(
        name=section.metadata.name,
        source=section.model,
        variants=tuple(v.name for v in section.variants),
        picks={a: entry.name for a, (entry, _) in ship_for(section.variants).items()},
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        signature=section.signature.key,
    )


def fidelity(entry: VariantEntry) -> str:
    """The variant against float32, worst output: max relative error, SQNR, top-1 agreement."""
    if entry.name == "float32":
        return "the reference"
    outs = entry.check.outputs
    parts = [f"max rel. error {max(o.max_rel_error for o in outs):.2g}"]
    sqnr = [o.sqnr_db for o in outs if o.sqnr_db is not None]
    if sqnr:
        parts.append(f"SQNR {min(sqnr):.1f} dB")
    top1 = [o.top1_agreement for o in outs if o.top1_agreement is not None]
    if top1:
        parts.append(f"top-1 agreement {min(top1):.1%}")
    return ", ".join(parts)


def render_readme(section: AndroidSection, spec: WrapperSpec) -> str:
    """android/README.md: the variant to ship for each accelerator, from the package's measurements."""
    cls, package = bundle_kotlin.class_name(spec.name), bundle_kotlin.package_name(spec.name)
    picks = ship_for(section.variants)
    check = section.variants[0].check
    timed = any(v.latency is not None for v in section.variants)
    lines = [
        f"# {section.metadata.name}: Android library module",
        "",
        f"Generated by edgeport {__version__} from {section.model}; do not edit (run `edgeport package` "
        "again). The model variants and labels are in `src/main/assets/`, the wrapper class "
        f"`{package}.{cls}` is in `{bundle_kotlin.wrapper_path(spec)}`, and `build.gradle.kts` pins LiteRT "
        f"{LITERT_VERSION}.",
        "",
        "## Which variant for which accelerator",
        "",
        "Measured by `edgeport package` on this model: fidelity against float32 in LiteRT on "
        f"{check.samples} {check.inputs} (worst output), XNNPACK nodes as LiteRT's CPU delegate took "
        "them on the packaging host, GPU delegate nodes by TensorFlow's rules for it (the package's README "
        f"lists the nodes left to the CPU). `{cls}(context, accelerator)` loads the variant of its row; pass "
        "`variant =` for another.",
        "",
        "| accelerator | ship | size | vs float32 | XNNPACK nodes | GPU delegate nodes | integer-only "
        "| why |" + (f" {latency.COLUMN} (not the phone) |" if timed else ""),
        "|---|---|---|---|---|---|---|---|" + ("---|" if timed else ""),
    ]
    for accelerator in ACCELERATORS:
        entry, why = picks[accelerator]
        d = entry.delegates
        xnnpack = f"{d.xnnpack_nodes} of {d.nodes}" if d.xnnpack_nodes is not None else "not measured"
        lines.append(
            f"| `Accelerator.{accelerator}` | `{entry.file}` | {entry.size_bytes / 1024:.1f} KB | "
            f"{fidelity(entry)} | {xnnpack} | {d.gpu.taken_nodes} of {d.nodes} | "
            f"{'yes' if d.integer_only else 'no'} | {why} |"
            + (f" {latency.cell(entry.latency)} |" if timed else "")
        )
    shipped = {entry.name for entry, _ in picks.values()}
    others = [v for v in section.variants if v.name not in shipped]
    if others:
        lines += ["", "Also in assets/ (`variant = " + cls + ".Variant.NAME`):", ""]
        lines += [f"- `{v.file}` ({v.size_bytes / 1024:.1f} KB, {fidelity(v)}): {v.purpose}" for v in others]
    labels = section.labels_files
    shapes = ", ".join(f"{x.key} {list(x.shape)}" for x in spec.inputs)
    module = package.split(".")[-1]
    lines += [
        "",
        "## Use",
        "",
        f"Copy this folder into the app's project (say as `{module}/`), add "
        f'`include(":{package.split(".")[-1]}")` to `settings.gradle.kts` and '
        f'`implementation(project(":{package.split(".")[-1]}"))` to the app\'s dependencies; the root '
        "build declares the `com.android.library` and `org.jetbrains.kotlin.android` plugins. To ship "
        "fewer files, package again with `--variants` naming only those.",
        "",
        "```kotlin",
        bundle_kotlin.usage(spec),
        "```",
        "",
        f"`run` takes each input's raw values flat in the model's layout ({shapes}): "
        "the normalisation in the metadata is applied by the wrapper, and int8 inputs and outputs are "
        "quantized with the tensor's own scale and zero point, so every variant takes and returns the same "
        "floats."
        + (f" Labels: {', '.join(f'{k} from `{f}`' for k, f in labels.items())}." if labels else ""),
        "",
    ]
    return "\n".join(lines)


def write_bundle(root: Path, stage: Path, section: AndroidSection, spec: WrapperSpec) -> list[Path]:
    """The module under `root`, its assets copied from the package's own files in `stage`; the files
    written, sorted."""
    files = {
        "build.gradle.kts": bundle_kotlin.render_gradle(spec),
        "src/main/AndroidManifest.xml": ANDROID_MANIFEST,
        bundle_kotlin.wrapper_path(spec): bundle_kotlin.render_wrapper(spec),
        "README.md": render_readme(section, spec),
    }
    written = []
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    assets = root / ASSETS
    assets.mkdir(parents=True, exist_ok=True)
    for name in [v.file for v in section.variants] + sorted(set(section.labels_files.values())):
        shutil.copyfile(stage / name, assets / name)
        written.append(assets / name)
    return sorted(written)
