"""The `pruning` section of edgeport.json: what `--prune` removed, how it recovered, and how close the
pruned model stays to the unpruned one (written by the PyTorch passes stage)."""

from __future__ import annotations

from pydantic import Field

from edgeport.manifest import Record, Section


class GroupWidth(Record):
    """One group of coupled channels: its root module, the modules it spans, channels kept; or the
    heads of one attention module (channels: its inner width, heads x head_dim)."""

    OPTIONAL = ("heads_before", "heads_after")

    module: str
    modules: list[str]
    channels_before: int
    channels_after: int
    merged: int = 0  # channels merged into a twin (red) rather than cut
    heads_before: int | None = None  # attention heads (quant/prune/heads.py)
    heads_after: int | None = None


class Counts(Record):
    """Counted on the PyTorch module and on the exported ONNX graph, by the same rules
    (quant/prune/count.py); the graph also holds products made without a module (q @ k)."""

    OPTIONAL = ("onnx_macs", "onnx_params")

    macs: int  # Conv/Linear/attention multiply-accumulates of one inference, on the module
    params: int
    onnx_macs: int | None = None  # the same, on the exported graph (None: it did not export)
    onnx_params: int | None = None


class LatencyTrial(Record):
    OPTIONAL = ("load_average", "macs_removed")

    flops_ratio: float  # the fraction of MACs the allocation was asked to remove
    removed: float  # the fraction of the unpruned model's latency removed, measured
    before_ms: float
    after_ms: float
    load_average: float | None = None  # the host's 1-minute load around the timing (the higher reading)
    # The fraction of MACs the allocation removed, what the search interpolates on: it can be far more
    # than flops_ratio (a residual block removed whole). None: written before it was recorded.
    macs_removed: float | None = None


class LatencySearch(Record):
    """--prune-target latency: the FLOPs ratio searched with real conversions and measurements."""

    OPTIONAL = ("cores", "retimed", "macs_removed")

    runner: str  # what measured, how
    asked: float  # the fraction of latency to remove
    removed: float  # achieved, as measured in the chosen trial
    before_ms: float
    after_ms: float
    flops_ratio: float  # the chosen trial's
    trials: list[LatencyTrial]
    cores: int | None = None  # the host's, beside each trial's load_average
    retimed: LatencyTrial | None = None  # the chosen trial's files timed once more, at the end
    macs_removed: float | None = None  # the chosen trial's (LatencyTrial.macs_removed)


class Recovery(Record):
    OPTIONAL = ("inputs", "kept")

    method: str  # distill or none
    data_free: bool
    inputs: str | None = None  # what the synthetic inputs were made from
    steps: int = 0
    budget_seconds: float = 0.0
    seconds: float = 0.0
    loss_start: float | None = None
    loss_end: float | None = None
    reconstructed_layers: int = 0  # layers re-solved by least squares before distilling (reconstruct.py)
    # The stage whose model was kept (recover.STAGES): an earlier one when a later stage lowered the
    # SQNR on the held-out synthetic inputs. None: no recovery, or written before it was recorded.
    kept: str | None = None


class PruneFidelity(Record):
    """Pruned vs unpruned on held-out synthetic inputs (never trained on)."""

    OPTIONAL = ("top1_agreement", "top1_agreement_before_recovery")

    samples: int
    sqnr_db: float | None  # worst output; None: identical
    sqnr_db_before_recovery: float | None
    top1_agreement: float | None = None  # classifier-shaped outputs only
    top1_agreement_before_recovery: float | None = None


class PruningSection(Section):
    OPTIONAL = ("latency", "weigh", "layer_shapes_timed")
    NAME = "pruning"
    WRITTEN_BY = "edgeport convert --prune RATIO"

    ratio: float
    target: str
    criterion: str
    allocation: str  # how per-group widths were chosen
    # What the allocation's steps were weighed in (--prune-weigh); None: written before it was recorded.
    weigh: str | None = None
    # --prune-weigh host: the layer shapes timed alone on this host to weigh the steps (layer_latency.py).
    layer_shapes_timed: int | None = None
    round_to: int
    min_width: int
    excluded: list[str] = Field(default_factory=list)
    before: Counts
    after: Counts
    groups: list[GroupWidth]
    # Residual blocks removed whole (replaced by identity: quant/prune/blocks.py); their channel
    # groups are not listed in `groups`.
    blocks_removed: list[str] = Field(default_factory=list)
    kept_whole: list[str] = Field(default_factory=list)  # groups that could not be pruned, and why
    latency: LatencySearch | None = None  # --prune-target latency only
    recovery: Recovery
    fidelity: PruneFidelity
    seconds: float | None = None

    def removed(self, target: str | None = None) -> float:
        """The fraction of MACs (or params, or measured latency) removed."""
        what = target or self.target
        if what == "latency":
            return self.latency.removed if self.latency is not None else 0.0
        if what == "params":
            return 1.0 - self.after.params / max(1, self.before.params)
        before, after = self.macs()
        return 1.0 - after / max(1, before)

    def macs(self) -> tuple[int, int]:
        """MACs before and after: on the exported graphs when both were counted, else on the modules."""
        if self.before.onnx_macs is not None and self.after.onnx_macs is not None:
            return self.before.onnx_macs, self.after.onnx_macs
        return self.before.macs, self.after.macs

    def describe(self) -> str:
        """`pruned 31% of MACs (41.0M -> 28.3M), params -29%, l1, recovered 400 steps, SQNR 24.1 dB`
        (`..., host LiteRT latency 4.10 -> 2.87 ms, again 4.12 -> 2.90 ms (-30% then -30%, asked -30%),
        ...` for a latency target: the chosen trial's timing and its re-timing)."""
        text = (
            f"pruned {100 * self.removed('flops'):.0f}% of MACs ({self.macs()[0] / 1e6:.1f}M -> "
            f"{self.macs()[1] / 1e6:.1f}M), params -{100 * self.removed('params'):.0f}%, {self.criterion}"
        )
        if self.blocks_removed:
            count = len(self.blocks_removed)
            text += f", {count} residual block{'s' if count > 1 else ''} removed"
        if self.weigh == "host" and self.latency is None:
            text += ", steps weighed in host layer times"
        if self.latency is not None:
            lat, again = self.latency, self.latency.retimed
            text += f", host LiteRT latency {lat.before_ms:.2f} -> {lat.after_ms:.2f} ms"
            removed = f"{-100 * lat.removed:+.0f}%"  # +: slower (a noisy host can time a trial so)
            if again is not None:
                text += f", again {again.before_ms:.2f} -> {again.after_ms:.2f} ms"
                removed += f" then {-100 * again.removed:+.0f}%"
            text += f" ({removed}, asked -{100 * lat.asked:.0f}%)"
        if self.recovery.method != "none":
            text += f", distilled {self.recovery.steps} steps"
            text += "" if self.recovery.data_free else " (data-aware)"
            if self.recovery.kept not in (None, "distillation"):
                text += f" (not kept: {self.recovery.kept} scored higher)"
        if self.fidelity.sqnr_db is not None:
            text += f", SQNR vs unpruned {self.fidelity.sqnr_db:.1f} dB"
        if self.fidelity.top1_agreement is not None:
            text += f", top-1 agreement {100 * self.fidelity.top1_agreement:.0f}%"
        heads = [g for g in self.groups if g.heads_before is not None]
        if heads:
            before = sum(g.heads_before or 0 for g in heads)
            after = sum(g.heads_after or 0 for g in heads)
            text += f", attention heads {before} -> {after}"
        return text
