"""`edgeport convert` as a Python API: load -> ONNX -> passes -> TFLite -> verify -> manifest.

Everything is written to a staging directory that replaces OUTDIR only when every stage passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from edgeport.converters import onnx_prepare
from edgeport.converters.localize import first_diverging_node
from edgeport.converters.onnx_to_tflite import KerasResult, keras_to_tflite, onnx_to_keras, wrap_keep_nchw
from edgeport.converters.sources import LoadedSource, load_source
from edgeport.converters.torch_to_onnx import export_onnx
from edgeport.converters.verify import (
    TfliteRunner,
    check_weights,
    compare,
    run_onnx,
    run_torch,
    verification_failure,
)
from edgeport.errors import EdgeportError
from edgeport.manifest import (
    Artifact,
    Manifest,
    StageError,
    TensorInfo,
    Verification,
    sha256_of,
    tool_versions,
)
from edgeport.outdir import staged_outdir
from edgeport.quant.modes import QuantOptions, describe_section
from edgeport.quiet import silenced
from edgeport.tensors import Sample, TensorSpec, random_inputs
from edgeport.tflite_file import read_tflite

FLOAT32_TOLERANCE = 1e-4  # issue #2: float32 .tflite must match the reference to this relative error
VERIFY_SAMPLES = 3
VERIFY_SEED = 0
TOOLS = ("torch", "onnx", "onnxruntime", "onnxsim", "onnx2tf", "tensorflow", "ai-edge-litert", "numpy")


@dataclass
class ConvertOptions:
    source: str
    outdir: Path
    input_shapes: list[list[int]] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    weights: Path | None = None
    opset: int = 17
    keep_nchw: bool = False
    trust_pickle: bool = False
    force: bool = False
    fold_bn: bool = True
    debug: bool = False
    quantize: QuantOptions | None = None  # --quantize: also write model_<mode>.tflite (quant/modes.py)


@dataclass
class ConvertResult:
    outdir: Path
    manifest: Manifest
    seconds: float

    def summary(self) -> str:
        ver = self.manifest.verification
        worst: dict[str, float] = {}
        for err in ver.errors if ver else []:
            worst[err.stage] = max(worst.get(err.stage, 0.0), err.max_rel_error)
        checks = ", ".join(f"{stage} {rel:.1e}" for stage, rel in worst.items())
        tfl = self.manifest.artifact("model_float32.tflite")
        ops = sum(tfl.op_counts.values())
        folds = [p for p in self.manifest.passes if p["name"] == "fold_batch_norms"]
        bns = f", {folds[0]['folded']}/{folds[0]['found']} BN folded" if folds and folds[0]["found"] else ""
        line = (
            f"converted in {self.seconds:.1f}s -> {self.outdir}: {ops} ops{bns}, "
            f"layout {self.manifest.layout}; "
            f"max rel. error vs {ver.reference if ver else '?'}: {checks}"
        )
        quant = self.manifest.sections.get("quantization")
        line = f"{line}; {describe_section(quant)}" if quant else line
        return "\n".join(
            [line] + [f"warning: {w}" for p in self.manifest.passes for w in p.get("warnings", [])]
        )


def _reference_inputs(source: LoadedSource, opts: ConvertOptions) -> list[list[int]]:
    shapes = opts.input_shapes or source.example_shapes
    if source.is_torch and not shapes:
        raise EdgeportError(
            "a PyTorch model needs its input shapes",
            "pass --input-shape once per forward() argument, e.g. --input-shape 1,3,224,224",
        )
    if source.is_torch and source.forward_arg_names and len(shapes) != len(source.forward_arg_names):
        raise EdgeportError(
            f"forward() takes {len(source.forward_arg_names)} input(s) "
            f"({', '.join(source.forward_arg_names)}) but {len(shapes)} --input-shape given",
            "give one --input-shape per forward() argument, in order",
        )
    return shapes


def _input_names(source: LoadedSource, count: int, opts: ConvertOptions) -> list[str]:
    if opts.input_names:
        if len(opts.input_names) != count:
            raise EdgeportError(
                f"{len(opts.input_names)} --input-name given for {count} input(s)", "give one per input"
            )
        return list(opts.input_names)
    if len(source.forward_arg_names) == count:
        return list(source.forward_arg_names)
    return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]


def _source_infos(specs: list[TensorSpec], keep_nchw: bool) -> list[TensorInfo]:
    """I/O as the source model sees it (ONNX: channels-first)."""
    layouts = {3: "NCW", 4: "NCHW"}
    return [
        TensorInfo(
            name=s.name,
            shape=list(s.shape),
            dtype=s.dtype,
            layout=layouts.get(len(s.shape), "other") if s.channels_last or keep_nchw else "other",
        )
        for s in specs
    ]


def _tflite_infos(
    path: Path, specs: list[TensorSpec], runner_names: dict[str, str], keep_nchw: bool
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """I/O of a .tflite in its own tensor order, with names, shapes, quantization read from the file."""
    model = read_tflite(path)
    by_tensor = {runner_names[s.name]: s for s in specs}
    result = []
    for infos in (model.inputs, model.outputs):
        out = []
        for info in infos:
            spec = by_tensor.get(info.name)
            rank = len(info.shape)
            if spec is None:
                layout = "other"
            elif spec.channels_last:
                layout = {3: "NWC", 4: "NHWC"}.get(rank, "other")
            else:
                layout = {3: "NCW", 4: "NCHW"}.get(rank, "other") if keep_nchw else "other"
            out.append(info.model_copy(update={"layout": layout, "source_name": spec.name if spec else None}))
        result.append(out)
    return result[0], result[1]


def _artifact(
    path: Path, root: Path, kind: str, precision: str, inputs: list[TensorInfo], outputs: list[TensorInfo]
) -> Artifact:
    art = Artifact(
        path=str(path.relative_to(root)),
        kind=kind,
        precision=precision,
        sha256=sha256_of(path),
        size_bytes=path.stat().st_size,
        inputs=inputs,
        outputs=outputs,
    )
    if kind == "tflite":
        art.op_counts = read_tflite(path).op_counts
    else:
        model = onnx.load(str(path), load_external_data=False)
        counts: dict[str, int] = {}
        for node in model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        art.op_counts = dict(sorted(counts.items()))
    return art


def convert_model(opts: ConvertOptions) -> ConvertResult:
    """Convert and verify; raises EdgeportError (nothing written) on any failure."""
    started = time.perf_counter()
    outdir = Path(opts.outdir)
    source = load_source(opts.source, opts.weights, opts.trust_pickle)
    with staged_outdir(outdir, opts.force) as stage, silenced(not opts.debug):
        manifest = Manifest(command="convert", tools=tool_versions(*TOOLS))
        manifest.set_source(source.path, source.kind, opts.source)
        onnx_path = stage / "model.onnx"

        # 1. Reference model and ONNX export.
        if source.is_torch:
            import torch

            shapes = _reference_inputs(source, opts)
            names = _input_names(source, len(shapes), opts)
            (sample,) = random_inputs(
                [TensorSpec(n, sh) for n, sh in zip(names, shapes, strict=True)], 1, VERIFY_SEED
            )
            # BNs stay nodes at export: fold_batch_norms is the one place they are folded (the
            # exporter would fuse only Conv+BN, and silently), so the manifest accounts for each.
            model = export_onnx(
                source.module,
                [torch.from_numpy(sample[n]) for n in names],
                onnx_path,
                names,
                opts.opset,
                fold_constants=False,
            )
            model = onnx_prepare.fix_input_shapes(model, shapes)
        else:
            model = onnx_prepare.fix_input_shapes(source.onnx_model, opts.input_shapes)
            if opts.input_names:
                current = list(onnx_prepare.input_shapes_of(model))
                model = onnx_prepare.rename_io(
                    model, dict(zip(current, _input_names(source, len(current), opts), strict=True))
                )

        # 2. ONNX passes: fold batch norms, simplify, converter rewrites.
        check_weights(model)  # NaN weights give NaN outputs everywhere, which nothing can verify
        # The input's statistics are read before folding, while a normalisation or first BN is visible.
        input_stats = _infer_input_stats(model) if opts.quantize else {}
        if opts.fold_bn:
            model = _fold_batch_norms(model, manifest)
        model, simplified = onnx_prepare.simplify(model, fuse_bn=False)
        manifest.passes.append({"name": "onnxsim", "applied": simplified})
        model, onnx2tf_options = _rewrite_for_onnx2tf(model, manifest)
        if not opts.fold_bn:
            onnx2tf_options["not_use_onnxsim"] = True  # its onnxsim run would fuse Conv+BN again
        onnx.save(model, str(onnx_path))

        # 3. TFLite through onnx2tf.
        image_inputs = onnx_prepare.channels_first_inputs(model)
        workdir = stage / ".work"
        workdir.mkdir()
        keras = onnx_to_keras(onnx_path, workdir, image_inputs, opts.keep_nchw, onnx2tf_options, opts.debug)
        keras_model = wrap_keep_nchw(keras) if opts.keep_nchw else keras.model
        tflite_paths = {}
        for precision in ("float32", "float16"):
            path = stage / f"model_{precision}.tflite"
            path.write_bytes(keras_to_tflite(keras_model, precision))
            tflite_paths[precision] = path
        _remove_tree(workdir)

        # 4. Verification on the same random inputs.
        in_specs, out_specs = _io_specs(model, keras, opts.keep_nchw)
        samples = random_inputs(in_specs, VERIFY_SAMPLES, VERIFY_SEED)
        manifest.verification, tflite_names = _verify(
            source, onnx_path, tflite_paths, in_specs, out_specs, samples
        )
        failed = [e for e in manifest.verification.errors if _diverges(e)]
        if failed:
            first = failed[0]
            where = ""
            if first.stage == "tflite_float32" and first.problem is None:
                node = first_diverging_node(
                    model, samples, in_specs, image_inputs, onnx2tf_options, FLOAT32_TOLERANCE, first.output
                )
                where = f", first diverging ONNX node {node}" if node else ""
            notes = [w for p in manifest.passes for w in p.get("warnings", [])]
            raise verification_failure(
                first, manifest.verification.reference, FLOAT32_TOLERANCE, where, notes
            )

        # 4b. Quantized model, verified in LiteRT and TFLite Micro (quant/modes.py).
        if opts.quantize is not None:
            from edgeport.quant.modes import quantize_stage

            quantized = quantize_stage(
                opts.quantize,
                keras_model,
                keras.input_names,
                in_specs,
                out_specs,
                tflite_paths["float32"].read_bytes(),
                stage,
                # An ONNX source as loaded, BatchNormalization nodes unfolded: distillation reads them.
                module=source.module if source.is_torch else source.onnx_model,
                inferred_stats=input_stats,
            )
            manifest.sections["quantization"] = quantized.section
            tflite_paths[quantized.precision] = quantized.path
            tflite_names[quantized.precision] = quantized.tensor_names

        # 5. Manifest.
        manifest.layout = _model_layout(in_specs, opts.keep_nchw)
        onnx_in = _source_infos(in_specs, opts.keep_nchw)
        onnx_out = _source_infos(out_specs, opts.keep_nchw)
        manifest.artifacts.append(_artifact(onnx_path, stage, "onnx", "float32", onnx_in, onnx_out))
        for precision, path in tflite_paths.items():
            ins, outs = _tflite_infos(path, in_specs + out_specs, tflite_names[precision], opts.keep_nchw)
            manifest.artifacts.append(_artifact(path, stage, "tflite", precision, ins, outs))
        manifest.write(stage)
    return ConvertResult(outdir=outdir, manifest=manifest, seconds=time.perf_counter() - started)


def _diverges(error: StageError) -> bool:
    """ONNX and float32 TFLite must match the reference; float16 is reported, not enforced."""
    enforced = error.stage in ("onnx", "tflite_float32") and not error.max_rel_error < FLOAT32_TOLERANCE
    return enforced or error.problem is not None  # NaN/inf or a shape mismatch fails any stage


def _io_specs(
    model: onnx.ModelProto, keras: KerasResult, keep_nchw: bool
) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Inputs and outputs in the source layout, marked where the .tflite holds them channels-last."""
    elem_types = {i.name: i.type.tensor_type.elem_type for i in model.graph.input}
    in_specs = [
        TensorSpec(
            name,
            [int(d) for d in dims],
            _np_dtype(elem_types[name]),
            channels_last=keras.input_channels_last.get(name, False),
        )
        for name, dims in onnx_prepare.input_shapes_of(model).items()
    ]
    out_specs = [
        TensorSpec(
            o.name,
            [d.dim_value for d in o.type.tensor_type.shape.dim],
            _np_dtype(o.type.tensor_type.elem_type),
            channels_last=keras.output_channels_last.get(o.name, False) and not keep_nchw,
        )
        for o in model.graph.output
    ]
    return in_specs, out_specs


def _verify(
    source: LoadedSource,
    onnx_path: Path,
    tflite_paths: dict[str, Path],
    in_specs: list[TensorSpec],
    out_specs: list[TensorSpec],
    samples: list[Sample],
) -> tuple[Verification, dict[str, dict[str, str]]]:
    """Every stage against the reference on the same samples; also each .tflite's tensor names."""
    if source.is_torch:
        reference = run_torch(source.module, samples, [s.name for s in in_specs], [s.name for s in out_specs])
        ref_name = "pytorch"
    else:
        reference = run_onnx(onnx.load(str(onnx_path)).SerializeToString(), samples)
        ref_name = "onnx (source)"
    errors = compare("onnx", reference, run_onnx(onnx_path.read_bytes(), samples)) if source.is_torch else []
    tflite_names: dict[str, dict[str, str]] = {}
    for precision, path in tflite_paths.items():
        try:
            runner = TfliteRunner(path.read_bytes(), in_specs, out_specs)
            outputs = [runner.run(s) for s in samples]
        except (RuntimeError, ValueError) as exc:
            raise EdgeportError(
                f"the converted {path.name} does not run in LiteRT ({str(exc).splitlines()[0][:160]})",
                "rerun with --debug and report the model; --keep-nchw sometimes avoids a layout bug",
            ) from exc
        tflite_names[precision] = runner.tensor_names()
        errors += compare(f"tflite_{precision}", reference, outputs)
    passed = not any(_diverges(e) for e in errors)
    verification = Verification(
        reference=ref_name,
        num_samples=len(samples),
        seed=VERIFY_SEED,
        tolerance_rel=FLOAT32_TOLERANCE,
        passed=passed,
        errors=errors,
    )
    return verification, tflite_names


def _model_layout(in_specs: list[TensorSpec], keep_nchw: bool) -> str:
    if any(s.channels_last for s in in_specs):
        return "NHWC"
    if keep_nchw and any(len(s.shape) == 4 for s in in_specs):
        return "NCHW"
    return "other"


def _np_dtype(elem_type: int) -> str:
    return str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)))


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _infer_input_stats(model: onnx.ModelProto) -> dict:
    from edgeport.quant.input_stats import infer_input_stats

    return infer_input_stats(model)


def _fold_batch_norms(model: onnx.ModelProto, manifest: Manifest) -> onnx.ModelProto:
    try:
        from edgeport.quant.bn_fold import fold_batch_norms
    except ImportError:  # BN folding lands with the quant/ package
        return model
    model, report = fold_batch_norms(model)
    manifest.passes.append({"name": "fold_batch_norms", **report.to_dict()})
    return model


def _rewrite_for_onnx2tf(model: onnx.ModelProto, manifest: Manifest) -> tuple[onnx.ModelProto, dict]:
    try:
        from edgeport.converters.rewrites import prepare_for_onnx2tf
    except ImportError:  # the rewrite set lands with the model zoo
        return model, {}
    prepared = prepare_for_onnx2tf(model)
    manifest.passes.append(
        {"name": "onnx2tf_rewrites", "applied": prepared.applied, "onnx2tf_options": prepared.onnx2tf_options}
    )
    return prepared.model, prepared.onnx2tf_options
