"""What `convert` is asked to do (ConvertOptions) and what its stages hand each other (ConvertState)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx
from pydantic import Field, ValidationInfo, field_validator

from edgeport.converters.onnx_to_tflite import KerasResult
from edgeport.converters.sources import LoadedSource
from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.options import Options, cli, spell_of
from edgeport.pipeline.passes import PassReport
from edgeport.quant.modes import QuantOptions, QuantResult
from edgeport.tensors import Sample, TensorSpec


class StageObserver(Protocol):
    """Told when each stage (or a step inside one) starts and when a stage ends; the CLI shows them."""

    def started(self, stage: str) -> None: ...

    def finished(self, stage: str, seconds: float) -> None: ...


class Unobserved:
    def started(self, stage: str) -> None:
        pass

    def finished(self, stage: str, seconds: float) -> None:
        pass


# A rank-0 input (e.g. a sample rate) has no sizes to write: any of these spells it.
SCALAR_SHAPES = ("scalar", "()", "[]", "")


def parse_shape(text: str, what: str = "--input-shape") -> list[int]:
    if text.strip().lower() in SCALAR_SHAPES:
        return []
    try:
        dims = [int(d) for d in re.split(r"[,x]", text.strip())]
    except ValueError:
        dims = []
    if not dims or any(d <= 0 for d in dims):
        raise EdgeportError(
            f"{what} {text!r} is not a shape", "write it as comma-separated sizes, e.g. 1,3,224,224"
        )
    return dims


class ConvertOptions(Options):
    """What `convert` is asked to do; its CLI flags are made from these fields (edgeport/cli/convert.py)."""

    source: str = Field(json_schema_extra=cli(cli=False))  # the SOURCE argument
    outdir: Path = Field(json_schema_extra=cli(cli=False))  # -o OUTDIR
    input_shapes: list[list[int]] = Field(
        default_factory=list,
        description="Shape of one model input, e.g. 1,3,224,224, or 'scalar' for a rank-0 input (a sample "
        "rate); once per input in forward() order.",
        json_schema_extra=cli("--input-shape", text=True, multiple=True),
    )
    input_names: list[str] = Field(
        default_factory=list,
        description="Name of one model input (same order).",
        json_schema_extra=cli("--input-name"),
    )
    weights: Path | None = Field(None, description="state_dict file for a file.py:callable SOURCE.")
    opset: int = Field(17, description="ONNX opset for the PyTorch export.")
    keep_nchw: bool = Field(False, description="Keep PyTorch's channels-first layout instead of NHWC.")
    trust_pickle: bool = Field(
        False, description="Allow loading a pickled whole-model file (runs arbitrary code from the file)."
    )
    fold_bn: bool = Field(  # False is skip_passes=["fold_batch_norms"]
        True, description="Leave batch-norm layers unfolded (= --skip-pass fold_batch_norms)."
    )
    skip_passes: list[str] = Field(  # edgeport/pipeline/*_passes.py
        default_factory=list,
        description="Do not run this PyTorch or ONNX pass (repeatable; names from --list-passes).",
        json_schema_extra=cli("--skip-pass", metavar="NAME"),
    )
    force: bool = Field(False, description="Replace a non-empty output directory.")
    debug: bool = Field(False, json_schema_extra=cli(cli=False))  # --debug, read by the CLI group
    # --quantize: also write model_<mode>.tflite (quant/modes.py)
    quantize: QuantOptions | None = Field(None, json_schema_extra=cli(cli=False))

    @field_validator("input_shapes", mode="before")
    @classmethod
    def _shapes_from_text(cls, shapes: Any, info: ValidationInfo) -> Any:
        what = spell_of(info, cls)("input_shapes")
        return [parse_shape(s, what) if isinstance(s, str) else s for s in shapes]

    def skipped(self) -> list[str]:
        return [*self.skip_passes, *([] if self.fold_bn else ["fold_batch_norms"])]


@dataclass
class ConvertState:
    """Everything one conversion knows, filled in stage by stage (stages.py says which fills what)."""

    options: ConvertOptions
    stage_dir: Path = Path()  # the staging directory that replaces OUTDIR when every stage passed
    manifest: Manifest = field(default_factory=Manifest)
    # load
    source: LoadedSource | None = None
    # The model as loaded (a torch module, or the ONNX source): the verification reference and the
    # distillation input. The PyTorch passes work on a copy, so nothing changes it.
    reference: Any = None
    module: Any = None  # the torch module the ONNX export reads (the passes' copy, else the reference)
    # export
    exported: onnx.ModelProto | None = None  # fixed input shapes, before any ONNX pass
    # ONNX passes
    model: onnx.ModelProto | None = None  # after the ONNX passes: what model.onnx holds
    pass_reports: list[PassReport] = field(default_factory=list)
    skipped_passes: list[str] = field(default_factory=list)
    onnx2tf_options: dict[str, Any] = field(default_factory=dict)
    # TFLite
    image_inputs: list[str] = field(default_factory=list)  # inputs onnx2tf turns channels-last
    keras: KerasResult | None = None
    keras_model: Any = None  # keras.model, wrapped back to NCHW outputs with --keep-nchw
    in_specs: list[TensorSpec] = field(default_factory=list)
    out_specs: list[TensorSpec] = field(default_factory=list)
    tflite_paths: dict[str, Path] = field(default_factory=dict)  # precision -> file in stage_dir
    # reference: the verification inputs and the source model's outputs on them
    samples: list[Sample] = field(default_factory=list)
    input_stats: dict[str, Any] = field(default_factory=dict)  # name -> quant.input_stats.InputStats
    reference_name: str = ""  # "pytorch" or "onnx (source)"
    reference_outputs: list[Sample] = field(default_factory=list)
    # verify
    tflite_names: dict[str, dict[str, str]] = field(default_factory=dict)  # precision -> source -> tflite
    # quantize
    quantized: QuantResult | None = None
    # seconds per stage, in the order they ran
    timings: dict[str, float] = field(default_factory=dict)
    observer: StageObserver = field(default_factory=Unobserved)
    running: str = ""  # the stage that runs now

    def step(self, text: str) -> None:
        """Say what the running stage does now (a long stage shows its steps)."""
        self.observer.started(f"{self.running}: {text}")

    @property
    def onnx_path(self) -> Path:
        return self.stage_dir / "model.onnx"

    # What the quantize stage reads (quant.modes.FloatModel).
    @property
    def keras_input_names(self) -> list[str]:
        assert self.keras is not None
        return self.keras.input_names

    @property
    def float_tflite(self) -> bytes:
        return self.tflite_paths["float32"].read_bytes()

    @property
    def distill_source(self) -> Any:
        # An ONNX source as loaded, BatchNormalization nodes unfolded: distillation reads them.
        return self.reference
