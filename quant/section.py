"""The `quantization` section of edgeport.json as typed fields: written by the quantize stage
(quant/modes.py), read back by the convert summary, the bench and any report as attributes.

The JSON keys are the ones the section always had. Parts whose content belongs to the module that
measures it (the range report of quant/int8.py, the int4 and clustering reports, the calibration
method's own detail) stay open dictionaries; everything a reader picks out by name is a field.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from edgeport.manifest import Record, Section


class OutputSqnr(Record):
    name: str
    sqnr_db: float | None  # None: no error at all (infinite SQNR, which JSON cannot write)


class LayerSqnr(Record):
    """One of the worst internal tensors: TensorFlow's name, and the user's layer where it is known
    (converters/layer_names.py)."""

    OPTIONAL = ("source_name", "module")

    source_name: str | None = None  # the ONNX node in model.onnx
    module: str | None = None  # the PyTorch module, for a PyTorch source
    tflite_name: str
    sqnr_db: float | None


class Fidelity(Record):
    """The quantized model against the float32 one on held-out inputs (quant/fidelity.py)."""

    reference: str
    inputs: str  # how the held-out inputs were drawn
    samples: int
    outputs: list[OutputSqnr]
    layers_compared: int
    worst_layers: list[LayerSqnr]

    def worst_output_db(self) -> float | None:
        """The lowest finite output SQNR, None when every output is exact."""
        finite = [o.sqnr_db for o in self.outputs if o.sqnr_db is not None]
        return min(finite) if finite else None


class RuntimeAgreement(Record):
    """TFLite Micro against LiteRT on the same raw inputs (quant/tflm_check.py)."""

    OPTIONAL = ("kernels",)

    kernels: str | None = None  # which LiteRT kernels, when not the optimized ones
    samples: int
    max_diff_steps: int | None  # None: no integer output to count steps on
    max_abs_diff: float
    exact_fraction: float


class KeptFloat(Record):
    """An op TFLite Micro has no int8 kernel for, kept float32 (quant/tflm_ops.py)."""

    op: str
    node: str
    reason: str


class Calibration(Record):
    """How the int8 activation ranges were calibrated (quant/calibration.py)."""

    OPTIONAL = ("cost",)

    method: str  # data, distill, input-stats or gaussian
    data_free: bool
    samples: int
    input_stats: dict[str, dict[str, Any]]  # input -> quant/input_stats.py's InputStats.to_dict()
    # The method's own report (distillation steps and losses, the data file's name and hash, ...),
    # written inline after input_stats.
    detail: dict[str, Any] = Field(default_factory=dict)
    cost: dict[str, int] | None = None  # what distillation was allowed to cost (quant/cost.py)
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _gather_detail(cls, data: Any) -> Any:
        """Keys that are not fields are the method's detail (as written, and as the stage builds it)."""
        if not isinstance(data, dict) or "detail" in data:
            return data
        fields = {k: v for k, v in data.items() if k in cls.model_fields}
        return {**fields, "detail": {k: v for k, v in data.items() if k not in cls.model_fields}}

    def arranged(self, data: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key == "detail":
                out.update((k, v) for k, v in value.items() if k not in out)
            else:
                out[key] = value
        return out


class QuantSection(Section):
    """What `--quantize MODE` did and measured. Which parts a run has depends on the mode: dynamic
    and float16 have no calibration and no TFLite Micro check; int4 only for w4a8, clustering only
    for clustered int8."""

    NAME = "quantization"
    WRITTEN_BY = "edgeport convert --quantize MODE"
    OPTIONAL = (
        "int4",
        "clustering",
        "activation_ranges",
        "calibration",
        "tensor_types",
        "kept_float",
        "tflm_vs_litert",
        "litert_optimized_vs_tflm",
        "seconds",
    )

    mode: str
    io: str  # the model's input/output type: int8 or float
    weights: str  # how the weights are stored, in words
    int4: dict[str, Any] | None = None  # w4a8: quant/int4.py's or quant/mixed.py's report
    clustering: dict[str, Any] | None = None  # clustered int8: quant/cluster.py's report and sizes
    activations: str
    activation_ranges: dict[str, Any] | None = None  # quant/int8.py's range report
    calibration: Calibration | None = None
    tensor_types: dict[str, int] | None = None  # type -> tensors of the main subgraph
    kept_float: list[KeptFloat] | None = None
    tflm_vs_litert: RuntimeAgreement | None = None  # must be bit-exact
    litert_optimized_vs_tflm: RuntimeAgreement | None = None  # measured, noted for Android users
    fidelity: Fidelity
    seconds: float | None = None  # wall-clock; moved to the manifest's `run` block when written

    def describe(self) -> str:
        """One summary-line fragment: mode, calibration method, worst output SQNR, notes."""
        cal = self.calibration
        parts = [f"calibration {cal.method}"] if cal and cal.method else []
        if parts and cal and str(cal.detail.get("via", "")).startswith("ONNX"):
            parts[0] += " on the ONNX graph"
        worst = self.fidelity.worst_output_db()
        if worst is not None:
            parts.append(f"SQNR vs float {worst:.1f} dB")
        text = self.mode + (f" ({', '.join(parts)})" if parts else "")
        return text + "".join(f"; note: {note}" for note in (cal.notes if cal else []))
