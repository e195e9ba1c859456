"""`--profile`: one inference op by op (OpProfile), summed per op type, from the events a runtime's profiler
recorded. Pure: the runner converts its counter's ticks into the unit of BenchResult.ticks first and says
which unit that is (`ticks_are`)."""

from __future__ import annotations

from collections.abc import Sequence

from edgeport.bench.schema import OpProfile, OpTime, OpTypeTime, TicksAre


def op_profile(
    ops: Sequence[tuple[int, str, int]],
    inference: int,
    inference_ticks: int,
    ms_per_tick: float,
    ticks_are: TicksAre,
    source: str = "",
) -> OpProfile:
    """(index, op name, ticks) of each op of the inference `inference`, which took `inference_ticks` whole
    -> its OpProfile: per op type the count, ticks and share of the whole inference, most ticks first
    (ties by name), and what the ops leave of it (never below zero: rounded per-op counts may overshoot)."""
    times = [OpTime(index=i, op=name, ticks=t, ms=t * ms_per_tick) for i, name, t in ops]
    counts: dict[str, int] = {}
    ticks: dict[str, int] = {}
    for op in times:
        counts[op.op] = counts.get(op.op, 0) + 1
        ticks[op.op] = ticks.get(op.op, 0) + op.ticks
    whole = max(inference_ticks, sum(ticks.values()), 1)
    by_type = [
        OpTypeTime(op=name, count=counts[name], ticks=t, ms=t * ms_per_tick, share=t / whole)
        for name, t in sorted(ticks.items(), key=lambda item: (-item[1], item[0]))
    ]
    outside = max(0, inference_ticks - sum(ticks.values()))
    return OpProfile(
        inference=inference,
        ticks_are=ticks_are,
        ticks=inference_ticks,
        ops=times,
        by_type=by_type,
        outside_ticks=outside,
        outside_ms=outside * ms_per_tick,
        source=source,
    )
