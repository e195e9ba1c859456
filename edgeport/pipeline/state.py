"""What `convert` is asked to do (ConvertOptions) and what its stages hand each other (ConvertState)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx
from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgeport.converters.onnx_to_tflite import KerasResult
from edgeport.converters.sources import LoadedSource
from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.options import Options, Spell, cli, parse_floats, spell_of
from edgeport.pipeline.passes import PassReport
from edgeport.quant.input_stats import EVERY_INPUT
from edgeport.quant.modes import QuantOptions, QuantResult
from edgeport.quant.prune.options import PruneOptions
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


def parse_named(text: str, what: str, example: str, required: bool) -> tuple[str, str]:
    """`NAME=VALUE` -> (NAME, VALUE); without a name (when not `required`) -> (EVERY_INPUT, text)."""
    name, sep, value = text.rpartition("=")
    name = name.strip()
    if sep and name:
        return name, value
    if required or sep:
        raise EdgeportError(f"{what} {text!r} names no input", f"write it as {what} {example}")
    return EVERY_INPUT, text


def _named_texts(value: Any) -> list[str] | None:
    """The flag's texts (one string, or several from a repeated flag), None when not text."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _by_name(
    texts: list[str], what: str, example: str, required: bool, count: int | None
) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {}
    for text in texts:
        name, value = parse_named(text, what, example, required)
        if name in found:
            where = "every input" if name == EVERY_INPUT else f"input {name!r}"
            raise EdgeportError(f"{what} is given twice for {where}", "give it once per input")
        found[name] = parse_floats(value, what, count)
    return found


def check_input_ranges(ranges: dict[str, tuple[float, float]], what: str) -> None:
    for name, (low, high) in ranges.items():
        if not low < high:
            where = "" if name == EVERY_INPUT else f"{name}="
            raise EdgeportError(f"{what} {where}{low:g},{high:g} is empty", "give it as lo,hi with lo < hi")


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
    weights: Path | None = Field(
        None,
        description="state_dict file for a file.py:callable SOURCE; FILE:KEY takes the state dict under "
        "KEY (a/b when nested) of a checkpoint holding several.",
        json_schema_extra=cli(metavar="FILE[:KEY]"),
    )
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
        description="Do not run this pass (repeatable; names from --list-passes).",
        json_schema_extra=cli("--skip-pass", metavar="NAME"),
    )
    # What the inputs' values look like: verification draws its inputs from it, and int8 calibration
    # (quant/input_stats.py). Keyed by input name; EVERY_INPUT for `--input-range lo,hi`.
    input_range: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Range of the raw input values, lo,hi (e.g. 0,255): every float input (every "
        "integer input, e.g. token ids, when there is no float one); NAME=lo,hi for one input. Verification "
        "and int8 calibration draw inputs from it.",
        json_schema_extra=cli(text=True, multiple=True, metavar="[NAME=]LO,HI"),
    )
    mean: list[float] | None = Field(
        None,
        description="Mean of the raw float inputs, one value or one per channel.",
        json_schema_extra=cli(text=True),
    )
    std: list[float] | None = Field(
        None,
        description="Standard deviation of the raw float inputs, one value or one per channel.",
        json_schema_extra=cli(text=True),
    )
    input_values: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Fixed value of one input, one number or one per channel (e.g. a sample rate: "
        "sr=16000), used for the export, verification and calibration; repeatable.",
        json_schema_extra=cli("--input-value", text=True, multiple=True, metavar="NAME=VALUE"),
    )
    force: bool = Field(False, description="Replace a non-empty output directory.")
    debug: bool = Field(False, json_schema_extra=cli(cli=False))  # --debug, read by the CLI group
    # --quantize: also write model_<mode>.tflite (quant/modes.py)
    quantize: QuantOptions | None = Field(None, json_schema_extra=cli(cli=False))
    # --prune: structured pruning before the export (quant/prune/)
    prune: PruneOptions | None = Field(None, json_schema_extra=cli(cli=False))

    @field_validator("input_shapes", mode="before")
    @classmethod
    def _shapes_from_text(cls, shapes: Any, info: ValidationInfo) -> Any:
        what = spell_of(info, cls)("input_shapes")
        return [parse_shape(s, what) if isinstance(s, str) else s for s in shapes]

    @field_validator("input_range", mode="before")
    @classmethod
    def _ranges_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        what = spell_of(info, cls)("input_range")
        texts = _named_texts(value)
        if texts is not None:
            return _by_name(texts, what, "NAME=lo,hi, e.g. ids=0,999", required=False, count=2)
        if value is None:
            return {}
        # A Python caller's (lo, hi): every input, as `--input-range lo,hi`.
        return {EVERY_INPUT: value} if isinstance(value, list | tuple) else value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _floats_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        if not isinstance(value, str):
            return value
        return parse_floats(value, spell_of(info, cls)(str(info.field_name)))

    @field_validator("input_values", mode="before")
    @classmethod
    def _values_from_text(cls, value: Any, info: ValidationInfo) -> Any:
        texts = _named_texts(value)
        if texts is None:
            return value
        what = spell_of(info, cls)("input_values")
        return _by_name(texts, what, "NAME=VALUE, e.g. sr=16000", required=True, count=None)

    @model_validator(mode="after")
    def _combinations(self, info: ValidationInfo) -> ConvertOptions:
        check_input_options(self, spell_of(info, type(self)))
        return self

    def skipped(self) -> list[str]:
        return [*self.skip_passes, *([] if self.fold_bn else ["fold_batch_norms"])]


def check_input_options(opts: ConvertOptions, spell: Spell) -> None:
    """What the input options can be refused for without the model (quant/input_stats.py checks them
    against its inputs)."""
    check_input_ranges(opts.input_range, spell("input_range"))
    if opts.std is not None and any(s <= 0 for s in opts.std):
        raise EdgeportError(
            f"{spell('std')} must be positive", "give the input's standard deviation per channel"
        )
    fixed = sorted(set(opts.input_values) & set(opts.input_range))
    if fixed:
        raise EdgeportError(
            f"input {fixed[0]!r} has both {spell('input_values')} and {spell('input_range')}",
            "a fixed value has no range: drop one of them",
        )
    if opts.input_values and opts.quantize is not None and opts.quantize.method == "gaussian":
        raise EdgeportError(
            f"{spell('method')} gaussian draws every input from N(0, 1), ignoring {spell('input_values')}",
            f"use {spell('method')} auto, input-stats, distill or data",
        )


@dataclass
class ConvertState:
    """Everything one conversion knows, filled in stage by stage (stages.py says which fills what)."""

    options: ConvertOptions
    stage_dir: Path = Path()  # the staging directory that replaces OUTDIR when every stage passed
    manifest: Manifest = field(default_factory=Manifest)
    # load
    source: LoadedSource | None = None
    # The model as loaded (a torch module, or the ONNX source): the verification reference and the
    # distillation input. The PyTorch passes work on a copy, so nothing changes it (pruning, which
    # changes the function on purpose, replaces it with the pruned module: pipeline/torch_passes.py).
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
