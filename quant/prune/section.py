"""The `pruning` section of edgeport.json: what `--prune` removed, how it recovered, and how close the
pruned model stays to the unpruned one (written by the PyTorch passes stage)."""

from __future__ import annotations

from pydantic import Field

from edgeport.manifest import Record, Section


class GroupWidth(Record):
    """One group of coupled channels: its root module, the modules it spans, channels kept."""

    module: str
    modules: list[str]
    channels_before: int
    channels_after: int
    merged: int = 0  # channels merged into a twin (red) rather than cut


class Counts(Record):
    macs: int  # Conv/Linear multiply-accumulates of one inference (quant/prune/count.py)
    params: int


class Recovery(Record):
    OPTIONAL = ("inputs",)

    method: str  # distill or none
    data_free: bool
    inputs: str | None = None  # what the synthetic inputs were made from
    steps: int = 0
    budget_seconds: float = 0.0
    seconds: float = 0.0
    loss_start: float | None = None
    loss_end: float | None = None


class PruneFidelity(Record):
    """Pruned vs unpruned on held-out synthetic inputs (never trained on)."""

    OPTIONAL = ("top1_agreement", "top1_agreement_before_recovery")

    samples: int
    sqnr_db: float | None  # worst output; None: identical
    sqnr_db_before_recovery: float | None
    top1_agreement: float | None = None  # classifier-shaped outputs only
    top1_agreement_before_recovery: float | None = None


class PruningSection(Section):
    NAME = "pruning"
    WRITTEN_BY = "edgeport convert --prune RATIO"

    ratio: float
    target: str
    criterion: str
    allocation: str  # how per-group widths were chosen
    round_to: int
    min_width: int
    excluded: list[str] = Field(default_factory=list)
    before: Counts
    after: Counts
    groups: list[GroupWidth]
    kept_whole: list[str] = Field(default_factory=list)  # groups that could not be pruned, and why
    recovery: Recovery
    fidelity: PruneFidelity
    seconds: float | None = None

    def removed(self, target: str | None = None) -> float:
        """The fraction of MACs (or params) removed."""
        what = target or self.target
        if what == "params":
            return 1.0 - self.after.params / max(1, self.before.params)
        return 1.0 - self.after.macs / max(1, self.before.macs)

    def describe(self) -> str:
        """`pruned 31% of MACs (41.0M -> 28.3M), params -29%, l2, recovered 400 steps, SQNR 24.1 dB`."""
        text = (
            f"pruned {100 * self.removed('flops'):.0f}% of MACs ({self.before.macs / 1e6:.1f}M -> "
            f"{self.after.macs / 1e6:.1f}M), params -{100 * self.removed('params'):.0f}%, {self.criterion}"
        )
        if self.recovery.method != "none":
            text += f", distilled {self.recovery.steps} steps"
        if self.fidelity.sqnr_db is not None:
            text += f", SQNR vs unpruned {self.fidelity.sqnr_db:.1f} dB"
        if self.fidelity.top1_agreement is not None:
            text += f", top-1 agreement {100 * self.fidelity.top1_agreement:.0f}%"
        return text
