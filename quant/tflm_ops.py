"""Which ops of an int8 model TFLite Micro cannot run, found before calibration starts.

TFLite Micro's int8 support is a property of each kernel's Prepare/Eval (LOG, for one, has a float32
kernel only), so the list is not typed out here: a probe model, quantized from a few synthetic
samples (seconds), runs once in the TFLite Micro runtime itself (edgeport.runtimes.tflm). An op that
fails there with a type error but has a float kernel is kept float32 between DEQUANTIZE and QUANTIZE
(the TFLite quantizer's denylist; TFLite Micro runs both), and the probe runs again; an op TFLite
Micro has no kernel for at all, or one that still fails as float, refuses the model with its name,
node and tensor, before the minutes of calibration rather than after them. Ops with a known replacement
in ops TFLite Micro runs (OP_REPLACEMENTS: GELU) are written out in the calibrate-only model before the
quantizer reads it, for the probe and the final model alike, and never reach the refusal.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.quant import tflm_gelu
from edgeport.runtimes.tflm import ARENA_FACTOR, MIN_ARENA, run_tflm
from edgeport.tflite_file import parse_tflite, tensor_name

# A kept-float op adds DEQUANTIZE/QUANTIZE around itself; more rounds than this means the model is
# mostly float, which is not what --quantize int8 promises.
MAX_KEPT_FLOAT = 8
_FAILED = re.compile(r"cannot (?:prepare|invoke|init) op (\S+) at node (\d+)(?: \((.*)\))?")
_MISSING = re.compile(r"has no kernel for op (\S+)")
NO_KERNEL_FIX = (
    "replace that op in the model before conversion (TFLite Micro has no kernel for it, int8 or float); "
    "for Android (no TFLite Micro) use --quantize dynamic or float16"
)
# What to write instead of an op TFLite Micro has no kernel for, where its replacement's ops are known
# to run there (each checked in TFLite Micro, int8). GELU reaches this only where OP_REPLACEMENTS could
# not replace it (outside the main subgraph, or with no recorded input range).
OP_WORKAROUNDS = {
    "GELU": "write the GELU as nn.GELU(approximate='tanh'), which becomes TANH, MUL and ADD (TFLite Micro "
    "runs them; a close approximation of the erf GELU, so check the accuracy)",
}


@dataclass(frozen=True)
class OpReplacement:
    """An op TFLite Micro has no kernel for, which the integer modes write out in ops it has: `replace`
    runs on the calibrate-only model (quant/int8.py's calibrate_only), `replaced` finds the written-out
    ones in the finished model, `note` says what the int8 model computes instead. `name` is what
    `edgeport convert --list-passes` lists (with `about`) and `--skip-pass` takes."""

    name: str
    about: str
    op: str
    replace: Callable[[bytes], bytes]
    replaced: Callable[[bytes], list[str]]
    note: str

    def notes(self, model: bytes) -> list[str]:
        """One note for all the ops written out (a transformer has one GELU per block)."""
        nodes = self.replaced(model)
        if not nodes:
            return []
        count = f"{self.op}" if len(nodes) == 1 else f"{len(nodes)} {self.op}s"
        # A fused TensorFlow name lists every op it came from ('a;b;c'): the first names it.
        return [f"{count} at {', '.join(repr(n.split(';')[0]) for n in nodes)}: {self.note}"]


# A new replacement is one module plus one line here.
OP_REPLACEMENTS = [
    OpReplacement(
        "tflm_gelu",
        "integer models: each GELU as its tanh form in ABS, MUL, ADD, LOGISTIC, RELU, SUB "
        "(quant/tflm_gelu.py)",
        "GELU",
        tflm_gelu.replace_gelu,
        tflm_gelu.approximated_gelus,
        "the tanh approximation of GELU in ABS, MUL, ADD, LOGISTIC, RELU and SUB (TFLite Micro has no GELU "
        f"kernel; within {tflm_gelu.FLOAT_ERROR:.1e} of the erf GELU the float model computes)",
    ),
]


def replace_for_tflm(calibrated: bytes) -> bytes:
    """The calibrate-only model with every op of OP_REPLACEMENTS written out (same bytes if none)."""
    for replacement in OP_REPLACEMENTS:
        calibrated = replacement.replace(calibrated)
    return calibrated


def replacement_notes(model: bytes) -> list[str]:
    """One note per op of the finished integer model that OP_REPLACEMENTS wrote out."""
    return [note for replacement in OP_REPLACEMENTS for note in replacement.notes(model)]


def refuse_skipped_replacements(skipped: Collection[str], model: bytes, name: str) -> None:
    """Refuse an integer model of `model` (the float .tflite) when --skip-pass names a replacement of
    OP_REPLACEMENTS whose op it has: TFLite Micro, which every integer model is checked in, has no
    kernel for that op, so the conversion would only be refused later, after the probe. Skipping one
    whose op the model lacks changes nothing and is allowed."""
    ops = set(parse_tflite(model).ops)
    for replacement in OP_REPLACEMENTS:
        if replacement.name in skipped and replacement.op in ops:
            raise EdgeportError(
                f"{name}: --skip-pass {replacement.name} keeps the model's {replacement.op} as it is, and "
                f"TFLite Micro (every integer model is checked in it) has no {replacement.op} kernel",
                f"drop --skip-pass {replacement.name}, which writes each {replacement.op} in ops TFLite "
                f"Micro runs; or {no_kernel_fix(replacement.op)}",
            )


def no_kernel_fix(op: str) -> str:
    """The fix for an op TFLite Micro has no kernel for: its known replacement first, if any."""
    return f"{OP_WORKAROUNDS[op]}; or {NO_KERNEL_FIX}" if op in OP_WORKAROUNDS else NO_KERNEL_FIX


# The op has a kernel, but it rejects this use of it (a rank, a type or an option, as its message says).
KERNEL_LIMIT_FIX = (
    "change that layer so TFLite Micro's kernel accepts it (its message says what it rejects, e.g. at most "
    "4 dimensions) and convert again; for Android (no TFLite Micro) use --quantize dynamic or float16"
)


@dataclass(frozen=True)
class KeptFloat:
    op: str
    node: str  # output tensor name: what the quantizer's denylist matches
    reason: str
    why: str = "TFLite Micro has no int8 kernel for it"  # who decided, for the note

    def to_dict(self) -> dict[str, str]:
        return {"op": self.op, "node": self.node, "reason": self.reason}

    def note(self) -> str:
        return f"{self.op} at {self.node!r} kept float32 between DEQUANTIZE and QUANTIZE: {self.why}"


@dataclass
class TflmPlan:
    kept_float: list[KeptFloat] = field(default_factory=list)
    probes: int = 0  # probe models run in TFLite Micro
    # Why the probe could not decide (it crashed without naming an op): the check after calibration,
    # on the calibrated model, decides instead.
    inconclusive: str = ""

    @property
    def denylist(self) -> list[str]:
        return [k.node for k in self.kept_float]


def arena_for(model: bytes) -> int:
    """An arena no model can outgrow: every tensor at once (4 bytes an element) on top of run_tflm's
    default. The default scales with the file, i.e. the weights; a small network on a large image
    needs megabytes of activations (EfficientNet-tiny at 192x192: TFLM 'failed to allocate tensors')."""
    graph = parse_tflite(model).raw.subgraphs[0]
    elements = sum(
        math.prod(max(int(d), 1) for d in (t.shape if t.shape is not None else [])) for t in graph.tensors
    )
    return max(MIN_ARENA, ARENA_FACTOR * len(model)) + 4 * elements


def node_output(model: bytes, index: int) -> str:
    graph = parse_tflite(model).raw.subgraphs[0]
    return tensor_name(graph.tensors[graph.operators[index].outputs[0]])


def failing_op(problem: str) -> tuple[str, int | None, str]:
    """(op, node index or None, TFLM's detail) from run_tflm's error line; ("", None, "") if neither."""
    failed = _FAILED.search(problem)
    if failed:
        return failed.group(1), int(failed.group(2)), failed.group(3) or ""
    missing = _MISSING.search(problem)
    if missing:
        return missing.group(1).rstrip("."), None, ""
    return "", None, ""


def plan_int8_for_tflm(
    quantize: Callable[[Sequence[str]], bytes],
    raw_inputs: Callable[[bytes], list[list[np.ndarray]]],
    name: str,
) -> TflmPlan:
    """Probe until TFLite Micro runs the int8 model, keeping float the ops it has no int8 kernel for.

    `quantize(denylist)` returns the probe model with those ops left float; `raw_inputs(model)` one
    sample of raw inputs for it. Raises EdgeportError, naming op, node and fix, when no plan works.
    """
    plan = TflmPlan()
    while True:
        try:
            model = quantize(plan.denylist)
        except EdgeportError as exc:  # a model no int8 runtime can run shows already in the probe
            raise EdgeportError(f"{exc.problem}; found before calibration", exc.fix) from exc
        plan.probes += 1
        try:
            run_tflm(model, raw_inputs(model), name, arena_size=arena_for(model))
            return plan
        except EdgeportError as exc:
            op, index, detail = failing_op(exc.problem)
            if not op:
                # Seen on a residual net: the probe, quantized from a few synthetic samples, crashes
                # TFLite Micro (and LiteRT) natively where the calibrated model runs.
                plan.inconclusive = exc.problem
                return plan
            node = node_output(model, index) if index is not None else ""
            where = f" (node {index}, tensor {node!r})" if index is not None else ""
            if index is None:
                raise EdgeportError(
                    f"{name}: TFLite Micro has no kernel for op {op}{where}; found before calibration",
                    no_kernel_fix(op),
                ) from exc
            if node in plan.denylist or op in ("QUANTIZE", "DEQUANTIZE"):
                raise EdgeportError(
                    f"{name}: TFLite Micro cannot run op {op}{where} in int8 nor in float32"
                    + (f" ({detail})" if detail else "")
                    + "; found before calibration",
                    KERNEL_LIMIT_FIX,
                ) from exc
            if len(plan.kept_float) >= MAX_KEPT_FLOAT:
                raise EdgeportError(
                    f"{name}: TFLite Micro has no int8 kernel for {len(plan.kept_float) + 1} ops "
                    f"(the last: {op}{where}); found before calibration",
                    "for TFLite Micro keep the model float32; for Android use --quantize dynamic or float16",
                ) from exc
            plan.kept_float.append(KeptFloat(op, node, detail or "TFLite Micro failed on its int8 form"))
