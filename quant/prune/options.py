"""What `--prune RATIO` and its companion options ask for; convert's flags are made from these fields."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgeport.errors import EdgeportError
from edgeport.options import Options, Spell, cli, refuse_without, spell_of, validate_options
from edgeport.quant.prune.criteria import CRITERIA

TARGETS = ("flops", "params", "latency")
WEIGHINGS = ("macs", "host")
RECOVERIES = ("distill", "none")
# Channel counts are kept at multiples of 8: CMSIS-NN's int8 convolutions (arm_convolve_s8 and its
# DSP/MVE paths) work on 4 output channels at a time and read input channels 4 bytes per SIMD load,
# and XNNPACK's int8 GEMM packs output channels in tiles of 8 (x86 and Arm NEON "c8"/"x8" kernels) or
# 16 (Arm dot-product): a width between two multiples runs the tail in scalar code or pads the tile,
# so it costs nearly the time of the next multiple. 8 serves both; 16 suits big Arm64 cores best.
DEFAULT_ROUND = 8
DEFAULT_MIN_WIDTH = 8
# Recovery budget, seconds on 2 cores: the synthetic pool and the distillation steps, both fixed before
# any runs (quant/prune/recover.py). 15 minutes: the ceiling for ResNet-56, whose 512 inputs at
# SYNTHETIC_STEPS take about 500 s of it.
DEFAULT_BUDGET = 900.0
# BatchNorm-statistics distillation steps per synthetic input (quant/calibration.py's distill_samples).
# Pruning asks more of its inputs than int8 calibration, which needs only their ranges (DISTILL_STEPS,
# 50): the cut is chosen and recovered on them, and inputs closer to the BatchNorm statistics recover
# more than 50-step ones; at 100 a budget buys twice the inputs 200 did, and ResNet-56 recovered as
# well on the mean and more evenly over seeds (bench/results/prune_history.md,
# "Better synthetic images").
SYNTHETIC_STEPS = 100


class PruneOptions(Options):
    """What `--prune` asks for. API-only fields have no flag."""

    ratio: float = Field(
        description="Structured pruning: remove this fraction of the model's FLOPs (or parameters, or "
        "measured latency: --prune-target), 0 < RATIO < 1, without data (edgeport.quant.prune).",
        json_schema_extra=cli("--prune", metavar="RATIO"),
    )
    target: Literal[TARGETS] = Field(  # type: ignore[valid-type]
        "flops",
        description="What RATIO removes: flops (Conv/Linear/attention multiply-accumulates), params, or "
        "latency (the float model's LiteRT latency on this host, one thread: the FLOPs ratio is searched "
        "with a few real conversions and measurements).",
        json_schema_extra=cli("--prune-target", needs="RATIO"),
    )
    weigh: Literal[WEIGHINGS] | None = Field(  # type: ignore[valid-type]
        None,
        description="What each allocation step's saving is weighed in: macs (the same model on every "
        "machine), or host (this host's per-layer float LiteRT times, one thread: steps to the widths and "
        "blocks its kernels run faster at, so the model is faster for the same MACs, but timings decide "
        "between near-equal steps and two runs may differ). Default: host for a latency target, else macs.",
        json_schema_extra=cli("--prune-weigh", needs="RATIO"),
    )
    criterion: Literal[CRITERIA] = Field(  # type: ignore[valid-type]
        "l1",
        description="Which channels go first: l1/l2 magnitude, bn-scale (BatchNorm scale), red (merge "
        "near-duplicate channels, compensating the next layer), ig (integrated gradients on synthetic "
        "inputs). Attention heads are ranked by the same criterion (bn-scale: by l2, a head has no "
        "BatchNorm).",
        json_schema_extra=cli("--prune-criterion", needs="RATIO"),
    )
    exclude: list[str] = Field(
        default_factory=list,
        description="Modules and residual blocks kept whole, NAME[,NAME]: names as the pruning section "
        "lists them (as in model.named_modules(); an ONNX source's residual block by its Add node).",
        json_schema_extra=cli(
            "--prune-exclude", text=True, multiple=True, metavar="NAME[,NAME]", needs="RATIO"
        ),
    )
    round_to: int = Field(
        DEFAULT_ROUND,
        ge=1,
        description="Keep channel counts at multiples of this (8: CMSIS-NN and XNNPACK int8 kernels).",
        json_schema_extra=cli("--prune-round", needs="RATIO"),
    )
    min_width: int = Field(
        DEFAULT_MIN_WIDTH,
        ge=1,
        description="Fewest channels any layer keeps.",
        json_schema_extra=cli("--prune-min-width", needs="RATIO"),
    )
    blocks: bool = Field(
        True,
        description="Residual blocks (y = x + f(x)) may be removed whole where that costs less accuracy "
        "per MAC than narrowing channels; --no-prune-blocks: only channels are cut.",
        json_schema_extra=cli("--prune-blocks", needs="RATIO"),
    )
    recovery: Literal[RECOVERIES] = Field(  # type: ignore[valid-type]
        "distill",
        description="distill: recover accuracy by distilling from the unpruned model on synthetic inputs "
        "made from its BatchNorm statistics (no data); none: prune only.",
        json_schema_extra=cli("--prune-recovery", needs="RATIO"),
    )
    budget: float = Field(
        DEFAULT_BUDGET,
        gt=0,
        description="Recovery time budget in seconds on a 2-core machine: making the synthetic inputs "
        "recovery trains on, then the distillation steps, both fixed from the model's size before any "
        "runs (the same work on every machine). The rest of the analysis (group checks, sensitivities) is "
        "a fixed amount of work per model, shown phase by phase.",
        json_schema_extra=cli("--prune-budget", needs="RATIO"),
    )
    finetune_data: Path | None = Field(
        None,
        description="Data-aware recovery: distill on these real inputs too (no labels; .npy, .npz or a "
        "dir, as --calibration): fewer than the synthetic pool holds train beside it, more replace it.",
        json_schema_extra=cli("--finetune-data", needs="RATIO"),
    )
    # API-only.
    # How per-group widths are chosen: measured sensitivity (quant/prune/allocate.py), or the same
    # fraction everywhere (the baseline the benchmark compares with).
    allocation: Literal["sensitivity", "uniform"] = Field("sensitivity", json_schema_extra=cli(cli=False))
    seed: int = Field(0, json_schema_extra=cli(cli=False))
    # Synthetic inputs for recovery; None: as many as the budget buys for the model (recover.pool_plan).
    samples: int | None = Field(None, ge=8, json_schema_extra=cli(cli=False))
    held_out: int = Field(32, ge=4, json_schema_extra=cli(cli=False))  # fidelity inputs, never trained on
    # Distillation steps per synthetic input; None: SYNTHETIC_STEPS, fewer where the budget cannot pay
    # for them (recover.pool_plan).
    synthetic_steps: int | None = Field(None, ge=1, json_schema_extra=cli(cli=False))
    max_steps: int | None = Field(None, json_schema_extra=cli(cli=False))  # caps the budget's steps

    @field_validator("ratio")
    @classmethod
    def _open_interval(cls, value: float, info: ValidationInfo) -> float:
        if not 0.0 < value < 1.0:
            flag = spell_of(info, cls)("ratio")
            raise EdgeportError(
                f"{flag} {value:g} is outside (0, 1)", f"give the fraction to remove, e.g. {flag} 0.3"
            )
        return value

    @property
    def weighing(self) -> str:
        """`weigh` as used: host for a latency target, macs otherwise, unless given."""
        return self.weigh or ("host" if self.target == "latency" else "macs")

    @model_validator(mode="after")
    def _host_weighs_macs(self, info: ValidationInfo) -> PruneOptions:
        if self.weigh == "host" and self.target == "params":
            spell = spell_of(info, type(self))
            raise EdgeportError(
                f"{spell('weigh')} host weighs steps that remove MACs, but {spell('target')} is params",
                f"use {spell('target')} flops (or latency) with it, or drop {spell('weigh')}",
            )
        return self

    @field_validator("exclude", mode="before")
    @classmethod
    def _names_from_text(cls, value: Any) -> Any:
        texts = [value] if isinstance(value, str) else value
        if isinstance(texts, list | tuple):
            return [n.strip() for t in texts for n in str(t).split(",") if n.strip()]
        return value


def prune_options(values: Mapping[str, Any], spell: Spell | None = None) -> PruneOptions | None:
    """PruneOptions from what the user gave, None without a ratio; a companion option given without
    --prune is refused rather than ignored."""
    if values.get("ratio") is None:
        refuse_without(PruneOptions, "ratio", values, spell)
        return None
    return validate_options(PruneOptions, values, spell)
