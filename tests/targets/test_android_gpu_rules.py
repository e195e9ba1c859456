"""The GPU delegate's rules (targets/android/gpu_compat.py) on op signatures and small graphs: pure
functions, no TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from edgeport.targets.android.gpu_compat import (
    PARSERS,
    OpSignature,
    TensorSpec,
    analyse,
    bool_cast_rule,
    build_problem,
    logical_rule,
    op_rule,
    partition,
    tensor_rule,
)
from edgeport.tflite_file import edit_tflite
from tests.targets.synth import Graph, T

F = "float32"
ACT = schema.ActivationFunctionType


def x(*dims: int, type: str = F) -> TensorSpec:
    return TensorSpec(type, dims)


def c(*dims: int, type: str = F) -> TensorSpec:
    return TensorSpec(type, dims, is_const=True)


def sig(op: str, inputs, outputs, version: int = 1, **options) -> OpSignature:
    return OpSignature(op, tuple(inputs), tuple(outputs), version, options)


CONV = {"strideH": 1, "strideW": 1, "dilationHFactor": 1, "dilationWFactor": 1}


def conv(**options) -> OpSignature:
    return sig("CONV_2D", [x(1, 8, 8, 3), c(4, 3, 3, 3), c(4)], [x(1, 8, 8, 4)], **{**CONV, **options})


def test_ops_without_a_gpu_parser_fall_back():
    for op in ("GATHER_ND", "TOPK_V2", "ARG_MAX", "SQUEEZE", "EMBEDDING_LOOKUP"):
        assert op_rule(sig(op, [x(1, 4)], [x(1, 4)])) == f"no GPU kernel for op {op}"
    assert op_rule(sig("CUSTOM:MyOp", [x(1)], [x(1)])) == "no GPU kernel for custom op MyOp"
    assert (
        "CUSTOM:Resampler" in PARSERS
        and op_rule(sig("CUSTOM:Resampler", [x(1, 4, 4, 2)] * 2, [x(1)])) is None
    )


def test_op_versions_above_the_parsers_limit_fall_back():
    fc = [x(1, 16), c(8, 16), c(8)]
    assert op_rule(sig("FULLY_CONNECTED", fc, [x(1, 8)], version=9)) is None
    assert "takes up to version 9" in op_rule(sig("FULLY_CONNECTED", fc, [x(1, 8)], version=10))
    assert op_rule(sig("RESHAPE", [x(1, 4), c(2, type="int32")], [x(4)], version=2)) is not None
    assert op_rule(sig("MEAN", [x(1, 4, 4, 8), c(2, type="int32")], [x(1, 8)], version=7)) is None  # no limit
    # A node missing a tensor its rule reads is refused with a reason, not a crash of the report.
    assert (
        op_rule(sig("FULLY_CONNECTED", [], [x(1, 8)]))
        == "FULLY_CONNECTED lacks an input or output the GPU rules read"
    )


def test_convolution_options_and_fused_activations():
    assert op_rule(conv()) is None
    assert op_rule(conv(fusedActivationFunction=ACT.RELU6)) is None
    assert op_rule(conv(fusedActivationFunction=ACT.SIGN_BIT)) == "fused activation SIGN_BIT is not supported"
    assert "stride" in op_rule(conv(strideH=0))
    assert "dilation" in op_rule(conv(dilationWFactor=0))
    three = sig("CONV_2D", [x(1, 8, 8, 3), x(4, 3, 3, 3), x(4)], [x(1, 8, 8, 4)], **CONV)
    assert "1 or 2 runtime input" in op_rule(three)


def test_depthwise_multiplier_only_on_one_input_channel():
    def dw(channels: int, multiplier: int) -> OpSignature:
        out = channels * multiplier
        inputs = [x(1, 8, 8, channels), c(1, 3, 3, out), c(out)]
        return sig("DEPTHWISE_CONV_2D", inputs, [x(1, 8, 8, out)], depthMultiplier=multiplier, **CONV)

    assert op_rule(dw(8, 1)) is None and op_rule(dw(1, 4)) is None
    assert op_rule(dw(3, 2)) == "depth_multiplier != 1 with more than one input channel"


@pytest.mark.parametrize(
    "a, b, ok",
    [
        ((1, 8, 8, 3), (1, 8, 8, 3), True),  # same rank: always
        ((1, 8, 8, 3), (3,), True),  # a vector: always
        ((1, 8, 8, 3), (8, 8, 3), True),  # 3-D into 4-D with batch 1
        ((2, 8, 8, 3), (8, 8, 3), False),
        ((1, 8, 8, 3), (1, 3), True),  # [b, c] into [b, h, w, c]
        ((1, 8, 8, 3), (1, 1), True),
        ((1, 8, 8, 3), (8, 3), False),
        ((8, 8, 3), (8, 3), False),  # only 4-D takes a lower rank (kStandard)
    ],
)
def test_add_and_mul_broadcasting(a, b, ok):
    for op in ("ADD", "MUL"):
        problem = op_rule(sig(op, [x(*a), x(*b)], [x(*a)]))
        assert (problem is None) == ok, problem
        if not ok:
            assert "broadcasting" in problem


def test_reductions_need_constant_int32_axes():
    out = [x(1, 8)]
    assert op_rule(sig("MEAN", [x(1, 4, 4, 8), c(2, type="int32")], out)) is None
    assert "expected 1 constant input" in op_rule(sig("MEAN", [x(1, 4, 4, 8), x(2, type="int32")], out))
    assert "expected 1 runtime input" in op_rule(sig("SUM", [x(1, 4, 4, 8), x(2, type="int32")], out))
    assert "int32 axes" in op_rule(sig("SUM", [x(1, 4, 4, 8), c(2, type="int64")], out))


def test_slices_softmax_pad_resize():
    ss = [x(1, 8, 8, 3), c(4, type="int32"), c(4, type="int32"), c(4, type="int32")]
    assert op_rule(sig("STRIDED_SLICE", ss, [x(1, 4, 8, 3)])) is None
    assert op_rule(sig("STRIDED_SLICE", ss, [x(1, 8, 3)], shrinkAxisMask=2)) == (
        "STRIDED_SLICE does not support shrink_axis_mask"
    )
    flat = [x(4, 6), c(2, type="int32"), c(2, type="int32"), c(2, type="int32")]
    assert "3-D or 4-D" in op_rule(sig("STRIDED_SLICE", flat, [x(2, 6)]))
    assert "3-D or 4-D" in op_rule(sig("SLICE", flat[:3], [x(2, 6)]))
    assert op_rule(sig("SOFTMAX", [x(1, 10)], [x(1, 10)], beta=1.0)) is None
    assert "beta" in op_rule(sig("SOFTMAX", [x(1, 10)], [x(1, 10)], beta=0.5))
    assert op_rule(sig("PAD", [x(1, 8, 8, 3), c(4, 2, type="int32")], [x(1, 10, 10, 3)])) is None
    assert "4x2 or 3x2" in op_rule(sig("PAD", [x(1, 2, 8, 8, 3), c(5, 2, type="int32")], [x(1)]))
    assert "REFLECT" in op_rule(sig("MIRROR_PAD", [x(1, 8, 8, 3), c(4, 2, type="int32")], [x(1)], mode=1))
    both = {"alignCorners": True, "halfPixelCenters": True}
    assert op_rule(sig("RESIZE_BILINEAR", [x(1, 4, 4, 3), c(2, type="int32")], [x(1, 8, 8, 3)], **both))


def test_tensor_rank_and_types():
    assert tensor_rule(sig("ADD", [x(1, 8, 8, 3), x(1, 8, 8, 3)], [x(1, 8, 8, 3)])) is None
    assert tensor_rule(sig("ADD", [x(1, 2, 4, 8, 3), c(3)], [x(1, 2, 4, 8, 3)])) == (
        "input 0 has rank 5; the GPU delegate takes rank <= 4"
    )
    assert "rank 5" in tensor_rule(sig("RESHAPE", [x(1, 64), c(5, type="int32")], [x(1, 2, 4, 2, 4)]))
    int32 = sig("ADD", [x(1, 4, type="int32"), x(1, 4, type="int32")], [x(1, 4, type="int32")])
    assert tensor_rule(int32) == "input 0 is int32; the GPU delegate takes float32/float16/int8/uint8 here"
    # Constant tensors are not type-checked; int8 and uint8 are (quantized models are allowed by default).
    assert (
        tensor_rule(sig("RESHAPE", [x(1, 8, type="int8"), c(2, type="int32")], [x(8, type="int8")])) is None
    )
    assert tensor_rule(sig("GATHER", [x(4, 8), x(2, type="int32")], [x(2, 8)])) is None
    assert tensor_rule(sig("LESS", [x(1, 4), x(1, 4)], [x(1, 4, type="bool")])) is None
    assert "bool" in tensor_rule(sig("ADD", [x(1, 4), x(1, 4)], [x(1, 4, type="bool")]))


def test_comparisons_and_bool_casts_depend_on_their_neighbours():
    assert logical_rule([("CAST", F)], producers=1) is None
    assert logical_rule([("SELECT_V2", "float16")], producers=1) is None
    assert logical_rule([("CAST", "int32")], producers=1) is not None
    assert logical_rule([("CAST", F), ("CAST", F)], producers=1) is not None
    assert logical_rule([], producers=1) is not None  # a model output
    assert bool_cast_rule(1, 1, 1) is None
    assert "right after" in bool_cast_rule(0, 1, 1)
    assert "model output" in bool_cast_rule(1, 1, 0)


def test_int4_constants_fail_the_build():
    int4 = sig(
        "CONV_2D", [x(1, 8, 8, 3, type="int8"), c(4, 3, 3, 3, type="int4"), c(4, type="int32")], [x(1)]
    )
    int8 = sig(
        "CONV_2D", [x(1, 8, 8, 3, type="int8"), c(4, 3, 3, 3, type="int8"), c(4, type="int32")], [x(1)]
    )
    assert build_problem([(0, int8), (3, int4)]).startswith("node 3 CONV_2D has constant int4 input 1")
    assert build_problem([(0, int8)]) is None and build_problem([]) is None


def test_greedy_partitioning():
    # A chain S -> U -> S: two GPU partitions around the CPU node.
    chain = partition([[0], [1], [2]], [[1], [2], [3]], supported={0, 2})
    assert chain == [(True, [0]), (False, [1]), (True, [2])]
    # Greedy: node 2 joins node 0's partition ahead of the CPU node 1 it does not depend on.
    branches = partition([[0], [0], [1], [2, 3]], [[1], [2], [3], [4]], supported={0, 2, 3})
    assert [(kind, nodes) for kind, nodes in branches if kind] == [(True, [0, 2]), (True, [3])]
    assert partition([[0], [1]], [[1], [2]], supported={0, 1}) == [(True, [0, 1])]
    assert partition([], [], supported=set()) == []
    # Nodes with side effects keep their order: independent S, U, S make one GPU partition [0, 2]
    # greedily, but two when all three have side effects (node 2 waits for node 1).
    free = partition([[0], [0], [0]], [[1], [2], [3]], supported={0, 2})
    assert [nodes for kind, nodes in free if kind] == [[0, 2]]
    chained = partition([[0], [0], [0]], [[1], [2], [3]], supported={0, 2}, side_effects=[True] * 3)
    assert chained == [(True, [0]), (False, [1]), (True, [2])]


def _fp16_graph(unsupported: bool) -> schema.ModelT:
    """DEQUANTIZE(float16 weights) -> CONV_2D, optionally followed by an op the GPU does not take."""
    rng = np.random.default_rng(0)
    g = Graph()
    inp = g.tensor([1, 8, 8, 3], T.FLOAT32, scale=None)
    w16 = g.tensor([4, 3, 3, 3], T.FLOAT16, rng.standard_normal((4, 3, 3, 3)).astype(np.float16), scale=None)
    w = g.tensor([4, 3, 3, 3], T.FLOAT32, scale=None)
    y = g.tensor([1, 8, 8, 4], T.FLOAT32, scale=None)
    g.op(schema.BuiltinOperator.DEQUANTIZE, [w16], [w])
    options = schema.Conv2DOptionsT()
    options.strideH = options.strideW = 1
    g.op(schema.BuiltinOperator.CONV_2D, [inp, w, -1], [y], schema.BuiltinOptions.Conv2DOptions, options)
    out = y
    if unsupported:
        out = g.tensor([1, 8, 8, 4], T.FLOAT32, scale=None)
        g.op(schema.BuiltinOperator.REVERSE_SEQUENCE, [y], [out])
    data = g.build([inp], [out])
    return edit_tflite(data)


def test_float16_weights_go_along_only_when_the_whole_graph_is_taken():
    full = analyse(_fp16_graph(unsupported=False))
    assert full.fallbacks == () and full.taken == (0, 1) and full.partitions == ((0, 1),)
    assert full.supported == (1,)  # the CONV_2D, checked against the constant float16 weights
    split = analyse(_fp16_graph(unsupported=True))
    assert [(f.node, f.op) for f in split.fallbacks] == [(0, "DEQUANTIZE"), (2, "REVERSE_SEQUENCE")]
    assert "float16 weights" in split.fallbacks[0].rule
    assert split.taken == (1,) and split.partitions == ((1,),)
