"""The ONNX passes, in the order they run on the exported graph (`edgeport convert --list-passes`).

A new ONNX pass is one module with a function `(ModelProto) -> (ModelProto, PassReport)` plus one
line in ONNX_PASSES; an onnx2tf rewrite is one module in converters/rewrites/ plus one line in its
REWRITES list, which this registry includes in that order. Any of them can be skipped by name
(`--skip-pass NAME`; `--no-fold-bn` is `--skip-pass fold_batch_norms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import onnx
from pydantic import ConfigDict, Field

from edgeport.converters import onnx_prepare
from edgeport.converters.rewrites import REWRITES, Rewrite, apply_rewrite
from edgeport.pipeline import dequantize_qdq as qdq
from edgeport.pipeline import fold_fixed_inputs as fixed
from edgeport.pipeline import index_inputs_int32 as index_inputs
from edgeport.pipeline.passes import ChangedReport, Pass, PassReport, about_module
from edgeport.quant.bn_fold import fold_batch_norms

OnnxPass = Pass[onnx.ModelProto]


class FoldReport(PassReport):
    """quant/bn_fold.py's report; fields it adds later pass through to the manifest."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    pass_: str = Field(alias="pass")
    found: int
    folded: int
    left: int
    folded_detail: list[dict[str, Any]] = Field(default_factory=list)
    left_detail: list[dict[str, Any]] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)

    def headline(self) -> str:
        return f"{self.folded}/{self.found} BN folded" if self.found else ""

    def warnings_(self) -> list[str]:
        return list(self.warnings)


class RewriteReport(ChangedReport):
    """One onnx2tf rewrite: whether it matched (the manifest lists them together, see rewrites_entry)."""


class RewritesReport(PassReport):
    """The manifest entry for the onnx2tf rewrites: which changed the graph, the options onnx2tf gets."""

    name: str = "onnx2tf_rewrites"
    applied: list[str]
    onnx2tf_options: dict[str, Any]


class SkippedReport(PassReport):
    skipped: bool = True


def _fold_batch_norms(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    model, report = fold_batch_norms(model)
    return model, FoldReport.model_validate({"name": "fold_batch_norms", **report.to_dict()})


def _simplify(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
    # fold_batch_norms is the one place BNs are folded, so onnxsim's Conv+BN fusion stays off.
    model, simplified = onnx_prepare.simplify(model, fuse_bn=False)
    return model, ChangedReport(name="onnxsim", applied=simplified)


def _rewrite_pass(name: str, rewrite: Rewrite) -> OnnxPass:
    def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, PassReport]:
        model, changed = apply_rewrite(rewrite, model)
        return model, RewriteReport(name=name, applied=changed)

    return Pass(name, f"onnx2tf rewrite: {about_module(rewrite)}", run)


# onnx2tf runs onnxsim itself unless told not to; that run fuses Conv+BN, so skipping either of
# these passes also turns it off (a skipped pass must not be redone behind the user's back).
_NO_ONNX2TF_ONNXSIM = {"not_use_onnxsim": True}

ONNX_PASSES: list[OnnxPass] = [
    Pass(fixed.NAME, fixed.ABOUT, fixed.fold_fixed_inputs),
    Pass(qdq.NAME, qdq.ABOUT, qdq.dequantize_qdq),
    Pass(
        "fold_batch_norms",
        "fold each BatchNormalization into a neighbouring Conv/Gemm/MatMul (quant/bn_fold.py)",
        _fold_batch_norms,
        _NO_ONNX2TF_ONNXSIM,
    ),
    Pass("onnxsim", "onnxsim: constant folding and graph simplification", _simplify, _NO_ONNX2TF_ONNXSIM),
    Pass(index_inputs.NAME, index_inputs.ABOUT, index_inputs.convert_index_inputs),
    *(_rewrite_pass(name, rewrite) for name, rewrite in REWRITES),
]


# Passes that change what the model computes, not only how (dequantize_qdq drops the rounding): the
# verification reference is the exported graph with these applied, as a PyTorch pass that changes the
# model hands its result on as the reference; the passes after them are verified against it.
REFERENCE_PASSES = [qdq.NAME]


def reference_model(model: onnx.ModelProto, skipped: Sequence[str]) -> tuple[onnx.ModelProto, list[str]]:
    """`model` (the graph as exported) with the REFERENCE_PASSES not in `skipped` applied, and the names
    of those that changed it."""
    changed = []
    for entry in ONNX_PASSES:
        if entry.name in REFERENCE_PASSES and entry.name not in skipped:
            model, report = entry.run(model)
            if report.headline():
                changed.append(entry.name)
    return model, changed


def manifest_entries(
    reports: Sequence[PassReport], skipped: Sequence[str], onnx2tf_options: dict[str, Any]
) -> list[PassReport]:
    """The `passes` entries in registry order; the rewrites share one `onnx2tf_rewrites` entry."""
    by_name = {r.name: r for r in reports}
    entries: list[PassReport] = []
    rewrites: list[str] = []
    for entry in ONNX_PASSES:
        report = by_name.get(entry.name)
        if entry.name in skipped:
            entries.append(SkippedReport(name=entry.name))
        elif isinstance(report, RewriteReport):
            if report.applied:
                rewrites.append(report.name)
        elif report is not None:
            entries.append(report)
    entries.append(RewritesReport(applied=rewrites, onnx2tf_options=dict(onnx2tf_options)))
    return entries
