"""`edgeport package --target android` as a Python API.

Order matters: the options are checked against the model (labels count, mean/std channels) before any
variant is made, every variant is made and verified before the first file is written, and the files
are written into a staging directory that replaces OUTDIR only at the end (edgeport/packaging.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.options import flag_name
from edgeport.outdir import check_outdir
from edgeport.packaging import artifact, write_package
from edgeport.quant.calibration import check_calibration
from edgeport.quant.input_stats import from_user
from edgeport.runtimes.litert import interpreter, match_signature
from edgeport.targets.android import bundle, describe, latency, metadata, readme
from edgeport.targets.android.delegates import GPU_NOTE, delegate_report
from edgeport.targets.android.section import AndroidSection, Signature, SkippedVariant, VariantEntry
from edgeport.targets.android.signature import SIGNATURE_KEY
from edgeport.targets.android.target import VARIANT_NAMES, AndroidOptions
from edgeport.targets.android.variants import PURPOSE, FloatSource, MadeVariant, load_source, make_variants
from edgeport.tflite_file import parse_tflite

METADATA_FILE = "metadata.json"
# What the package writes at the top of OUTDIR (and the labels files of the outputs given some); anything
# else there is kept when updating in place.
GENERATED = (
    *(f"model_{name}.tflite" for name in VARIANT_NAMES),
    describe.LABELS_FILE,
    METADATA_FILE,
    "README.md",
    bundle.BUNDLE_DIR,
)


@dataclass
class AndroidPackage:
    outdir: Path
    model: Path
    variants: list[VariantEntry]
    skipped: list[SkippedVariant]
    manifest: Manifest

    def summary(self) -> str:
        made = ", ".join(
            f"{v.name} {v.size_bytes / 1024:.0f} KB{latency.summary(v.latency)}" for v in self.variants
        )
        line = f"packaged {self.model.name} for Android -> {self.outdir}: {made}"
        if any(v.latency is not None for v in self.variants):
            line += " (ms: host LiteRT median, this machine)"
        if self.skipped:
            line += "; skipped " + ", ".join(f"{s.name} ({s.reason})" for s in self.skipped)
        return line


def _signature(model: bytes) -> tuple[list[str], list[str], list[str], list[str]]:
    """(input keys, output keys) of the serving_default signature, then the same keys in the subgraph's
    input/output order (what the metadata's tensor lists follow)."""
    interp = interpreter(model)
    signatures = interp.get_signature_list()
    if SIGNATURE_KEY not in signatures:
        raise EdgeportError(
            f"the model has no {SIGNATURE_KEY} signature (it has {sorted(signatures) or 'none'})",
            "convert it with `edgeport convert`, which writes one named after the source's tensors",
        )
    runner = interp.get_signature_runner(SIGNATURE_KEY)
    ins, outs = runner.get_input_details(), runner.get_output_details()
    by_index_in = {d["index"]: k for k, d in ins.items()}
    by_index_out = {d["index"]: k for k, d in outs.items()}
    order_in = [by_index_in[d["index"]] for d in interp.get_input_details()]
    order_out = [by_index_out[d["index"]] for d in interp.get_output_details()]
    return list(ins), list(outs), order_in, order_out


def _first_input(
    meta: metadata.ModelMetadata, keys: dict[str, str], source: FloatSource
) -> metadata.TensorMetadata:
    """The metadata of the source's first input (the one --mean/--std/--input-range describe)."""
    key = keys[source.in_specs[0].name]
    return next(t for t in meta.inputs if t.name == key)


def _normalisation_from_model(
    options: AndroidOptions, source: FloatSource
) -> tuple[AndroidOptions, list[str]]:
    """Without --mean/--std, a model that normalises its first input itself ((x - mean) / std found in
    its graph by quant/input_stats.py) gets mean 0, std 1 in its metadata: feed it raw values."""
    first = source.in_specs[0]
    inferred = source.stats.get(first.name)
    if options.mean is not None or options.std is not None or inferred is None:
        return options, []
    if inferred.source != "normalization":
        return options, []
    note = (
        f"input {first.name} is normalised inside the model ({' -> '.join(inferred.detail.get('ops', []))} "
        "found in its graph): its metadata normalisation is mean 0, std 1, i.e. feed raw values"
    )
    return options.model_copy(update={"mean": [0.0], "std": [1.0]}), [note]


def _missing_normalisation(meta: metadata.ModelMetadata) -> list[str]:
    """A note for image inputs (float, describe.is_image) without normalisation: the TFLite Task
    Library's image APIs refuse a float model whose image input has none."""
    return [
        f"image input {t.name} has no normalisation in its metadata (TFLite Task Library image APIs need "
        "one for a float model): pass --mean/--std, e.g. 127.5/127.5 for inputs in [-1, 1] from 0..255 "
        "pixels"
        for t in meta.inputs
        if t.image is not None and t.normalization is None
    ]


def _spell() -> dict[str, str]:
    return {name: flag_name(name, info) for name, info in AndroidOptions.model_fields.items()}


def _default_name(source: FloatSource) -> str:
    if source.manifest is not None:
        return str(source.manifest.source.callable or Path(source.manifest.source.file or "model").stem)
    return source.path.stem


def package(
    model: Path | str, outdir: Path | str, options: AndroidOptions, force: bool = False, command: str = ""
) -> AndroidPackage:
    """Package a convert output directory (or a float .tflite) as Android model variants with metadata."""
    outdir, model = Path(outdir), Path(model)
    spell = _spell()
    if model.resolve() == outdir.resolve() or outdir.resolve() in model.resolve().parents:
        # The variants are named like a conversion's files (model_float32.tflite, ...): packaging in
        # place would replace the very files the variants are made from.
        raise EdgeportError(
            f"{outdir} holds the model being packaged ({model})", "package into another directory with -o"
        )
    check_outdir(outdir, force)
    source = load_source(model)
    if options.calibration is not None:
        check_calibration(options.calibration, source.in_specs)
    options, found = _normalisation_from_model(options, source)
    keys_in, keys_out, _, _ = _signature(source.float32)
    keys = {**match_signature(source.in_specs, keys_in), **match_signature(source.out_specs, keys_out)}
    labels = describe.parse_labels(options.labels, source.out_specs, keys, spell["labels"])
    # output signature key -> its labels file
    label_files = describe.label_files([keys[s.name] for s in source.out_specs if s.name in labels])
    meta = describe.build_metadata(
        options,
        source.in_specs,
        source.out_specs,
        keys,
        _default_name(source),
        source.keep_nchw,
        {name: label_files[keys[name]] for name in labels},
        spell,
    )
    wrapped = None
    if options.bundle:  # a tensor the Kotlin wrapper cannot pass fails here, before any variant is made
        wrapped = (
            bundle.wrapper_tensors(source.in_specs, keys, meta.inputs, source.keep_nchw),
            bundle.wrapper_tensors(source.out_specs, keys, meta.outputs, source.keep_nchw),
        )
    first = _first_input(meta, keys, source)
    stated = from_user(None, None, (min(first.value_min), max(first.value_max))) if first.value_min else None
    if stated is not None:  # the range the first input takes: calibrate and verify on it
        source.stats[source.in_specs[0].name] = stated
    made, missing, notes = make_variants(source, options.variants, options.calibration)
    if missing and not options.skip_unavailable:
        name, why = next(iter(missing.items()))
        raise EdgeportError(
            f"variant {name} cannot be made: {why}",
            f"pass {spell['skip_unavailable']} to package the others, or leave it out of {spell['variants']}",
        )
    if not made:
        name, why = next(iter(missing.items()))
        raise EdgeportError(f"no variant could be made ({name}: {why})", f"check {spell['variants']}")
    files = {label_files[keys[name]]: "\n".join(lines).encode() + b"\n" for name, lines in labels.items()}
    with write_package(
        outdir,
        force=force,
        owned=(*GENERATED, *files),
        model_path=model,
        source=source.manifest,
        command=command,
        tools=("tensorflow", "ai-edge-litert", "flatbuffers", "numpy"),
    ) as staging:
        stage, manifest = staging.root, staging.manifest
        entries = [_write_variant(v, meta, files, stage, manifest) for v in made]
        timings = latency.measure({e.name: stage / e.file for e in entries}) if options.latency else None
        for entry in entries:
            entry.latency = timings.variants[entry.name] if timings else None
        (stage / METADATA_FILE).write_text(json.dumps(meta.model_dump(mode="json"), indent=2) + "\n")
        manifest.artifacts.append(artifact(stage / METADATA_FILE, stage, "other"))
        for name, content in sorted(files.items()):
            (stage / name).write_bytes(content)
            manifest.artifacts.append(artifact(stage / name, stage, "other"))
        skipped = [SkippedVariant(name=n, reason=r) for n, r in missing.items()]
        section = AndroidSection(
            model=model.name,
            source_kind="convert output" if source.from_convert else "tflite",
            variants=entries,
            skipped=skipped,
            signature=Signature(key=SIGNATURE_KEY, inputs=keys_in, outputs=keys_out),
            metadata=meta,
            metadata_file=METADATA_FILE,
            labels_files=label_files,
            bundle=bundle.BUNDLE_DIR if wrapped is not None else None,
            notes=[*found, *_missing_normalisation(meta), *notes, GPU_NOTE],
        )
        (stage / "README.md").write_text(readme.render(section, timings))
        manifest.artifacts.append(artifact(stage / "README.md", stage, "other"))
        if wrapped is not None:
            spec = bundle.wrapper_spec(section, *wrapped)
            for path in bundle.write_bundle(stage / bundle.BUNDLE_DIR, stage, section, spec):
                manifest.artifacts.append(artifact(path, stage, "other"))
        section.record(manifest)
        shown = ["README.md", f"{bundle.BUNDLE_DIR}/README.md"]
        latency.record(manifest, AndroidSection.NAME, timings, shown)
    return AndroidPackage(outdir, model, entries, skipped, manifest)


def _write_variant(
    variant: MadeVariant,
    meta: metadata.ModelMetadata,
    files: dict[str, bytes],
    stage: Path,
    manifest: Manifest,
) -> VariantEntry:
    """The variant with its metadata (tensors in its own order) and files, written and listed."""
    keys_in, keys_out, order_in, order_out = _signature(variant.data)
    if sorted(keys_in) != sorted(t.name for t in meta.inputs) or sorted(keys_out) != sorted(
        t.name for t in meta.outputs
    ):
        raise EdgeportError(
            f"variant {variant.name} has signature {keys_in} -> {keys_out}, not float32's",
            "report this model: every variant should keep the float model's signature",
        )
    data = metadata.embed(variant.data, describe.for_model(meta, order_in, order_out), files)
    path = stage / f"model_{variant.name}.tflite"
    path.write_bytes(data)
    parsed = parse_tflite(data, path)
    art = artifact(path, stage, "tflite", parsed)
    art.precision = variant.name
    manifest.artifacts.append(art)
    assert variant.check is not None
    return VariantEntry(
        name=variant.name,
        file=path.name,
        purpose=PURPOSE[variant.name],
        made_by=variant.how,
        size_bytes=len(data),
        ops=len(parsed.ops),
        op_counts=parsed.op_counts,
        input_types=[t.dtype for t in parsed.inputs],
        output_types=[t.dtype for t in parsed.outputs],
        check=variant.check,
        delegates=delegate_report(data),
    )
