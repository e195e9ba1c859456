"""`edgeport package --target cortex-m` as a Python API.

Order matters: everything that can reject the input (verification, op check, the TFLM run, the fit
check, name checks) happens before the first file is written, and the files are written into a
staging directory that replaces OUTDIR only at the end.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from edgeport import __version__
from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME, Artifact, Manifest, sha256_of, tool_versions
from edgeport.outdir import check_outdir, staged_outdir
from edgeport.targets.cortex_m import arena as arena_mod
from edgeport.targets.cortex_m import compressed, model_data, op_resolver, readme, settings
from edgeport.targets.cortex_m import fit as fit_mod
from edgeport.targets.cortex_m.boards import Board, get_board
from edgeport.tflite_file import TfliteModel, verify_tflite

DEFAULT_NAME = "g_model"
DEFAULT_BOARD = "mps2-an386"  # runs under QEMU, so every package can be tried without hardware
SECTION = "cortex_m"
GENERATED = (
    "model_data.h",
    "model_data.cc",
    "model_ops.h",
    "model_settings.h",
    "test_data.h",
    "test_data.cc",
    "README.md",
    "firmware",
    MANIFEST_NAME,
)
MAX_MODEL_BYTES = 2**31 - 1  # flatbuffers' 2 GB limit; an MCU model is far below


@dataclass
class PackageResult:
    outdir: Path
    model_path: Path
    board: Board
    name: str
    model_bytes: int
    crc32: int
    ops: list[str]  # distinct ops registered in model_ops.h
    arena: arena_mod.ArenaReport
    fit: fit_mod.FitReport
    manifest: Manifest

    def summary(self) -> str:
        verdict = "fits" if self.fit.fits else "DOES NOT FIT (--no-fit-check)"
        return (
            f"packaged {self.model_path.name} for {self.board.title} -> {self.outdir}: "
            f"{self.model_bytes} bytes, {len(self.ops)} ops, kTensorArenaSize {self.arena.arena_size} "
            f"(measured {self.arena.measured_bytes}); RAM {fit_mod.kb(self.fit.ram_needed)} of "
            f"{fit_mod.kb(self.fit.largest_ram_bytes)}, flash {fit_mod.kb(self.fit.flash_needed)} of "
            f"{fit_mod.kb(self.fit.flash_available)}: {verdict}"
        )


def resolve_model(model: Path) -> tuple[Path, Manifest | None]:
    """A .tflite path, or a `convert` output directory: its integer model (w4a8 or int8) if present,
    else float32. A directory holds at most one integer model (one --quantize per convert)."""
    model = Path(model)
    if model.is_dir():
        manifest_path = model / MANIFEST_NAME
        if not manifest_path.is_file():
            raise EdgeportError(
                f"{model} is a directory without {MANIFEST_NAME}",
                "give a .tflite file or an `edgeport convert` output directory",
            )
        try:
            manifest = Manifest.read(model)
        except Exception as exc:  # noqa: BLE001 - pydantic/JSON errors all mean the same to the user
            raise EdgeportError(
                f"{manifest_path} is not a valid edgeport manifest", "re-run convert"
            ) from exc
        tflites = [a for a in manifest.artifacts if a.kind == "tflite"]
        for wanted in ("w4a8", "int8", "float32"):
            for art in tflites:
                if art.precision == wanted and (model / art.path).is_file():
                    return model / art.path, manifest
        raise EdgeportError(
            f"{model} has no w4a8, int8 or float32 .tflite listed in {MANIFEST_NAME}",
            "run `edgeport convert` (and compression) into that directory first",
        )
    if not model.is_file():
        raise EdgeportError(f"model file {model} does not exist", "check the path")
    return model, None


def _load_verified(path: Path) -> TfliteModel:
    size = path.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise EdgeportError(f"{path} is {size} bytes, beyond the flatbuffer limit", "give a .tflite model")
    data = path.read_bytes()
    compressed.refuse_legacy_compression(data, path)
    return verify_tflite(data, path)


def _artifact(path: Path, root: Path, kind: str, model: TfliteModel | None = None) -> Artifact:
    art = Artifact(path=path.relative_to(root).as_posix(), kind=kind, sha256=sha256_of(path), size_bytes=0)
    art.size_bytes = path.stat().st_size
    if model is not None:
        art.inputs, art.outputs, art.op_counts = model.inputs, model.outputs, model.op_counts
    return art


def package(
    model: Path | str,
    outdir: Path | str,
    board: str = DEFAULT_BOARD,
    name: str = DEFAULT_NAME,
    section: str | None = None,
    fit_check: bool = True,
    force: bool = False,
    command: str = "",
) -> PackageResult:
    """Package a .tflite (or a convert output directory) for TFLite Micro on a Cortex-M board."""
    outdir = Path(outdir)
    # Cheap argument checks first, so a typo costs nothing.
    model_data.check_identifier(name)
    if section is not None:
        model_data.check_section(section)
    the_board = get_board(board)
    check_outdir(outdir, force)
    model_path, source_manifest = resolve_model(Path(model))

    tfl = _load_verified(model_path)
    op_resolver.check_ops(tfl)
    regs = op_resolver.registrations(tfl)
    arena = arena_mod.measure(model_path, tfl, mve=arena_mod.has_mve(the_board.tflm_arch))
    fit = fit_mod.assess(the_board, tfl.size_bytes, arena.arena_size, len(regs))
    if fit_check:
        fit_mod.require_fit(fit, the_board, model_path.name)

    banner = f"Generated by edgeport {__version__} from {model_path.name}; do not edit."
    previous = Manifest.read(outdir) if force and (outdir / MANIFEST_NAME).is_file() else None
    with staged_outdir(outdir, force) as stage:
        if previous is not None:  # updating an edgeport directory: keep what other commands wrote there
            for entry in outdir.iterdir():
                if entry.name not in GENERATED:
                    (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, stage / entry.name)
        data = model_data.write_model_data(model_path, stage, name, section, banner)
        (stage / "model_ops.h").write_text(op_resolver.render_model_ops_h(tfl, regs, banner))
        (stage / "model_settings.h").write_text(
            settings.render_model_settings_h(arena, tfl.inputs, tfl.outputs, banner)
        )
        test_h, test_cc = settings.write_test_data(arena, stage, banner)
        from edgeport.targets.cortex_m import project  # the firmware project templates

        firmware_dir = project.write_project(stage, the_board, name, arena.inputs, arena.outputs)
        (stage / "README.md").write_text(readme.render(model_path.name, the_board, name, arena, fit, regs))

        manifest = previous or Manifest()
        if source_manifest is not None and previous is None:
            manifest.source, manifest.layout = source_manifest.source, source_manifest.layout
            manifest.verification, manifest.passes = source_manifest.verification, source_manifest.passes
        manifest.command = command or manifest.command
        manifest.source = manifest.source or {"model": str(model_path)}
        mine = {"model_data.h", "model_data.cc", "model_ops.h", "model_settings.h", "test_data.h"}
        mine |= {"test_data.cc", "README.md", "firmware"}
        manifest.artifacts = [a for a in manifest.artifacts if a.path not in mine]
        manifest.artifacts += [
            _artifact(data.header, stage, "c_header", tfl),
            _artifact(data.source, stage, "c_source", tfl),
            _artifact(stage / "model_ops.h", stage, "c_header"),
            _artifact(stage / "model_settings.h", stage, "c_header"),
            _artifact(test_h, stage, "c_header"),
            _artifact(test_cc, stage, "c_source"),
        ]
        manifest.artifacts.append(Artifact(path="firmware", kind="firmware_project", sha256="", size_bytes=0))
        manifest.sections[SECTION] = {
            "model": model_path.name,
            "model_sha256": sha256_of(model_path),
            "model_bytes": data.size_bytes,
            "crc32": f"0x{data.crc32:08x}",
            "name": name,
            "section": section or ".rodata",
            "board": the_board.name,
            "ops": [r.op for r in regs],
            "op_versions": {k: v for k, v in tfl.op_versions.items() if k in tfl.ops},
            "int8_kernels": [r.op for r in regs if r.kernel],
            "arena": {
                "measured_bytes": arena.measured_bytes,
                "recorded_bytes": arena.recorded_bytes,
                "head_bytes": arena.head_bytes,
                "tail_bytes": arena.tail_bytes,
                "categories": arena.categories,
                "alignment_margin": arena.alignment_margin,
                "cmsis_nn_scratch_estimate": arena.cmsis_nn_scratch,
                "kTensorArenaSize": arena.arena_size,
                "measured_with": "tflite_micro Python runtime on the x86-64 host: smallest arena that "
                "allocates and invokes (bisection), and the RecordingMicroAllocator total",
            },
            "fit": {**fit.as_dict(), "checked": fit_check, "estimates": ["runtime_code", "runtime_ram"]},
            "self_test": {
                "input_seed": arena_mod.TEST_INPUT_SEED,
                "int_tolerance": settings.INT_TOLERANCE,
                "float_tolerance": settings.FLOAT_TOLERANCE,
            },
            "firmware": firmware_dir.relative_to(stage).as_posix(),
        }
        decode = compressed.decode_summary(tfl)
        if decode is not None:  # LUT-compressed weights (TFLM_DECODE)
            manifest.sections[SECTION]["decode"] = decode
        manifest.tools = {**manifest.tools, **tool_versions("tflite-micro", "ai-edge-litert", "numpy")}
        manifest.write(stage)
    return PackageResult(
        outdir=outdir,
        model_path=model_path,
        board=the_board,
        name=name,
        model_bytes=data.size_bytes,
        crc32=data.crc32,
        ops=[r.op for r in regs],
        arena=arena,
        fit=fit,
        manifest=manifest,
    )
