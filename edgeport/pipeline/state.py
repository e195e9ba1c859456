"""What `convert` is asked to do (ConvertOptions) and what its stages hand each other (ConvertState)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import onnx

from edgeport.converters.onnx_to_tflite import KerasResult
from edgeport.converters.sources import LoadedSource
from edgeport.manifest import Manifest
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
    fold_bn: bool = True  # False is skip_passes=["fold_batch_norms"] (--no-fold-bn)
    skip_passes: list[str] = field(default_factory=list)  # --skip-pass NAME (edgeport/pipeline/*_passes.py)
    debug: bool = False
    quantize: QuantOptions | None = None  # --quantize: also write model_<mode>.tflite (quant/modes.py)

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
