"""ONNX rewrites that make models convertible (and transpose-free) through onnx2tf.

Each rewrite is a module with `NAME` and a pure `rewrite(ModelProto) -> ModelProto` that leaves graphs
it does not match untouched; a new one is that module plus one line in REWRITES. The conversion runs
them in this order as named ONNX passes (edgeport/pipeline/onnx_passes.py: `--list-passes`,
`--skip-pass NAME`); `prepare_for_onnx2tf` runs them all and says which ones changed something and
which extra onnx2tf options the graph needs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx

from edgeport.converters.rewrites import (
    attention,
    bicubic_resize,
    ceil_pool,
    channel_shuffle,
    concat_fan_in,
    conv_same_pads,
    depthwise_conv1d,
    depthwise_strides,
    dilated_deconv,
    dilated_siblings,
    equal_split,
    feature_order,
    flatten_dense,
    gather_int32,
    gelu,
    group_norm,
    grouped_conv,
    hard_sigmoid,
    head_unpack,
    if_to_where,
    legacy_softmax,
    one_hot,
    patch_tokens,
    pixel_shuffle,
    pow_exponent,
    rnn_unroll,
    scalar_operands,
    selu,
    slice_axes,
    slices_to_split,
    softmax_mask,
    spatial_mean,
    stack_axis,
    strided_shortcut,
    unit_clip,
    where_arithmetic,
)

Rewrite = Callable[[onnx.ModelProto], onnx.ModelProto]

REWRITES: list[tuple[str, Rewrite]] = [
    (if_to_where.NAME, if_to_where.rewrite),
    (where_arithmetic.NAME, where_arithmetic.rewrite),
    (legacy_softmax.NAME, legacy_softmax.rewrite),
    (strided_shortcut.NAME, strided_shortcut.rewrite),
    (channel_shuffle.NAME, channel_shuffle.rewrite),
    (attention.NAME, attention.rewrite),
    (head_unpack.NAME, head_unpack.rewrite),
    (patch_tokens.NAME, patch_tokens.rewrite),
    (spatial_mean.NAME, spatial_mean.rewrite),
    (ceil_pool.NAME, ceil_pool.rewrite),
    (conv_same_pads.NAME, conv_same_pads.rewrite),
    (dilated_siblings.NAME, dilated_siblings.rewrite),
    (depthwise_conv1d.NAME, depthwise_conv1d.rewrite),
    (depthwise_strides.NAME, depthwise_strides.rewrite),
    (scalar_operands.NAME, scalar_operands.rewrite),
    (dilated_deconv.NAME, dilated_deconv.rewrite),
    (group_norm.NAME, group_norm.rewrite),
    (pixel_shuffle.NAME, pixel_shuffle.rewrite),
    (bicubic_resize.NAME, bicubic_resize.rewrite),
    (flatten_dense.NAME, flatten_dense.rewrite),
    (feature_order.NAME, feature_order.rewrite),
    (rnn_unroll.NAME, rnn_unroll.rewrite),
    (stack_axis.NAME, stack_axis.rewrite),
    (concat_fan_in.NAME, concat_fan_in.rewrite),
    (slice_axes.NAME, slice_axes.rewrite),
    (slices_to_split.NAME, slices_to_split.rewrite),
    (equal_split.NAME, equal_split.rewrite),
    (hard_sigmoid.NAME, hard_sigmoid.rewrite),
    (pow_exponent.NAME, pow_exponent.rewrite),
    (unit_clip.NAME, unit_clip.rewrite),
    (selu.NAME, selu.rewrite),
    (one_hot.NAME, one_hot.rewrite),
    (gather_int32.NAME, gather_int32.rewrite),
    (softmax_mask.NAME, softmax_mask.rewrite),
    # Last: its com.microsoft node has no ONNX shape-inference schema, so the shape-driven matchers
    # above would see unknown shapes downstream of it.
    (gelu.NAME, gelu.rewrite),
]

# Recurrent nodes that rnn_unroll could not write out (padded sequence_lens, input_forget, ...).
# onnx2tf would translate them to a TFLite WHILE loop: correct under LiteRT, but the TFLite Micro
# interpreter hangs on it (measured on the zoo GRU); its own unrolling gives plain ops every runtime
# runs, at ~20 ops per time step. Asked for only when such a node is left.
_RNN_OPS = {"GRU", "LSTM", "RNN"}


@dataclass
class PreparedModel:
    model: onnx.ModelProto
    applied: list[str] = field(default_factory=list)
    onnx2tf_options: dict[str, Any] = field(default_factory=dict)


def _fingerprint(model: onnx.ModelProto) -> bytes:
    return model.graph.SerializeToString(deterministic=True)


def apply_rewrite(rewrite: Rewrite, model: onnx.ModelProto) -> tuple[onnx.ModelProto, bool]:
    """Run one rewrite: (the new model, whether it changed the graph)."""
    before = _fingerprint(model)
    model = rewrite(model)
    return model, _fingerprint(model) != before


def onnx2tf_options_for(model: onnx.ModelProto) -> dict[str, Any]:
    """The onnx2tf options the rewritten graph needs."""
    options: dict[str, Any] = {}
    if any(node.op_type in _RNN_OPS for node in model.graph.node):
        options["enable_rnn_unroll"] = True
    options.update(grouped_conv.onnx2tf_options(model))
    return options


def prepare_for_onnx2tf(model: onnx.ModelProto) -> PreparedModel:
    """Apply every rewrite; `applied` names those that changed the graph, in order.

    The conversion runs the same rewrites one by one, as named passes that can be skipped
    (edgeport/pipeline/onnx_passes.py); this runs them all, for tests and benchmarks.
    """
    applied: list[str] = []
    for name, rewrite in REWRITES:
        model, changed = apply_rewrite(rewrite, model)
        if changed:
            applied.append(name)
    return PreparedModel(model=model, applied=applied, onnx2tf_options=onnx2tf_options_for(model))
