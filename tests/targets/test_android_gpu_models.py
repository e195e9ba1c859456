"""The GPU delegate report on real converter output: small TensorFlow models with ops the GPU delegate
does not take, and a zoo CNN converted by edgeport (float32 and float16), which it takes whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeport.targets.android.delegates import GpuReport, gpu_report
from edgeport.targets.android.gpu_compat import GpuAnalysis, analyse
from edgeport.tflite_file import parse_tflite

ZOO = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
IMAGE = [1, 8, 8, 3]


@pytest.fixture(scope="module")
def tf_models() -> dict[str, bytes]:
    """name -> .tflite made by TensorFlow's converter from a tf.function (seeded weights)."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    w1 = tf.constant(rng.standard_normal((3, 3, 3, 8)).astype(np.float32))
    w2 = tf.constant(rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    dw = tf.constant(rng.standard_normal((3, 3, 3, 2)).astype(np.float32))

    def stem(x):
        return tf.nn.relu(tf.nn.conv2d(x, w1, 1, "SAME"))

    def head(y):
        return tf.nn.relu(tf.nn.conv2d(y, w2, 1, "SAME"))

    def gather_nd(x):
        picked = tf.gather_nd(stem(x), [[0, 1], [0, 3]])  # rows 1 and 3: [2, 8, 8]
        return head(tf.reshape(picked, [1, 2, 8, 8]))

    def top_k(x):
        values, _ = tf.math.top_k(stem(x), 4)
        return tf.nn.relu(values * 2.0)

    def rank5(x):
        five = tf.reshape(stem(x), [1, 2, 4, 8, 8]) * 3.0
        return head(tf.reshape(five, [1, 8, 8, 8]))

    def shrink(x):
        return tf.nn.relu(stem(x)[:, 0] + 1.0)  # STRIDED_SLICE with shrink_axis_mask

    def multiplier(x):
        return tf.nn.relu(tf.nn.depthwise_conv2d(x, dw, [1, 1, 1, 1], "SAME"))  # 3 channels x 2

    def plain(x):
        pooled = tf.nn.avg_pool2d(head(stem(x)), 2, 2, "VALID")
        return tf.nn.softmax(tf.reduce_mean(pooled, [1, 2]))

    def classify(x):
        return tf.math.argmax(plain(x), axis=1)

    def small(x):
        return tf.nn.softmax(tf.reduce_mean(stem(x), [1, 2]))

    def convert(fn, mode: str = "float32") -> bytes:
        spec = [tf.TensorSpec(IMAGE, tf.float32)]
        concrete = tf.function(fn, input_signature=spec).get_concrete_function()
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete])
        if mode == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif mode in ("int8", "int16x8"):
            data = np.random.default_rng(1).standard_normal((8, *IMAGE)).astype(np.float32)
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([sample] for sample in data)
            ops = tf.lite.OpsSet
            int16 = ops.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            converter.target_spec.supported_ops = [int16 if mode == "int16x8" else ops.TFLITE_BUILTINS_INT8]
        return converter.convert()

    return {
        "gather_nd": convert(gather_nd),
        "gather_nd_float16": convert(gather_nd, "float16"),
        "top_k": convert(top_k),
        "rank5": convert(rank5),
        "shrink": convert(shrink),
        "multiplier": convert(multiplier),
        "plain_float16": convert(plain, "float16"),
        "classify_int8": convert(classify, "int8"),
        "plain_int16x8": convert(plain, "int16x8"),
        "small_float32": convert(small),
        "small_int8": convert(small, "int8"),
    }


def _found(data: bytes) -> tuple[list[str], GpuAnalysis]:
    model = parse_tflite(data)
    return model.ops, analyse(model.raw)


def _one_fallback(ops: list[str], found: GpuAnalysis, op: str) -> str:
    """The single fallback, which must be the only `op` node; its rule."""
    assert [(f.node, f.op) for f in found.fallbacks] == [(ops.index(op), op)]
    assert ops.count(op) == 1
    return found.fallbacks[0].rule


@pytest.mark.parametrize("name, op", [("gather_nd", "GATHER_ND"), ("top_k", "TOPK_V2")])
def test_an_op_without_gpu_kernel_splits_the_graph(tf_models, name, op):
    ops, found = _found(tf_models[name])
    assert _one_fallback(ops, found, op) == f"no GPU kernel for op {op}"
    # The convolution before it and the nodes after it: two GPU partitions; the default takes one.
    assert ops.index(op) > 0 and ops.index(op) < len(ops) - 1
    assert len(found.partitions) == 2
    assert found.supported == tuple(i for i in range(len(ops)) if i != ops.index(op))
    assert found.taken == max(found.partitions, key=len) and len(found.taken) < len(ops) - 1


def test_rank5_tensors_fall_back(tf_models):
    ops, found = _found(tf_models["rank5"])
    graph = parse_tflite(tf_models["rank5"]).raw.subgraphs[0]
    touching = [
        i
        for i, op in enumerate(graph.operators)
        if any(len(graph.tensors[t].shape) == 5 for t in [*op.inputs, *op.outputs] if t >= 0)
    ]
    assert touching and [f.node for f in found.fallbacks] == touching
    assert all("rank 5; the GPU delegate takes rank <= 4" in f.rule for f in found.fallbacks)
    assert ops[0] == ops[-1] == "CONV_2D" and len(found.partitions) == 2


def test_option_rules_on_converter_output(tf_models):
    ops, found = _found(tf_models["shrink"])
    assert _one_fallback(ops, found, "STRIDED_SLICE") == "STRIDED_SLICE does not support shrink_axis_mask"
    ops, found = _found(tf_models["multiplier"])
    rule = _one_fallback(ops, found, "DEPTHWISE_CONV_2D")
    assert rule == "depth_multiplier != 1 with more than one input channel"
    assert found.partitions == () and found.taken == ()


def test_integer_models(tf_models):
    # Full int8: the GPU delegate takes quantized models (default options), all but the int32 ARG_MAX.
    ops, found = _found(tf_models["classify_int8"])
    assert "QUANTIZE" in ops and "CONV_2D" in ops
    assert _one_fallback(ops, found, "ARG_MAX") == "no GPU kernel for op ARG_MAX"
    assert len(found.partitions) == 1 and len(found.taken) == len(ops) - 1
    # int16 activations: every node has an int16 tensor, which the GPU delegate does not take.
    ops, found = _found(tf_models["plain_int16x8"])
    assert [f.node for f in found.fallbacks] == list(range(len(ops)))
    assert found.partitions == () and found.taken == ()
    assert all("int16" in f.rule for f in found.fallbacks)


def test_int4_weights_fail_the_gpu_build(tf_models):
    from edgeport.quant.int4 import to_w4a8

    w4a8, layers = to_w4a8(tf_models["small_int8"], tf_models["small_float32"])
    assert [layer.op for layer in layers] == ["CONV_2D"]
    ops, found = _found(w4a8)
    # Every node passes the rules, but the delegate cannot read the int4 filter: nothing on the GPU.
    assert found.fallbacks == () and len(found.supported) == len(ops)
    assert (
        found.taken == () and f"node {ops.index('CONV_2D')} CONV_2D has constant int4" in found.build_problem
    )
    assert gpu_report(w4a8).taken_nodes == 0
    assert _found(tf_models["small_int8"])[1].build_problem is None


def test_float16_weights(tf_models):
    ops, found = _found(tf_models["plain_float16"])
    assert ops.count("DEQUANTIZE") >= 2  # one per float16 weight tensor
    assert found.fallbacks == () and found.taken == tuple(range(len(ops))) and len(found.partitions) == 1
    # Split by GATHER_ND: the float16 DEQUANTIZEs stay on the CPU with it.
    ops, found = _found(tf_models["gather_nd_float16"])
    fallen = {f.node: f.op for f in found.fallbacks}
    assert fallen == {i: op for i, op in enumerate(ops) if op in ("DEQUANTIZE", "GATHER_ND")}
    assert len(found.partitions) == 2


def test_the_report_record(tf_models):
    report = gpu_report(tf_models["gather_nd"])
    ops = parse_tflite(tf_models["gather_nd"]).ops
    assert isinstance(report, GpuReport)
    assert (report.supported_nodes, report.partitions) == (len(ops) - 1, 2)
    assert [(f.op, f.rule) for f in report.fallbacks] == [("GATHER_ND", "no GPU kernel for op GATHER_ND")]
    assert GpuReport.model_validate(report.model_dump(mode="json")) == report


@pytest.fixture(scope="module")
def zoo_cnn(tmp_path_factory) -> Path:
    from edgeport.pipeline import ConvertOptions, convert_model

    out = tmp_path_factory.mktemp("gpu_zoo") / "mobilenet_v2"
    convert_model(ConvertOptions(source=f"{ZOO}:mobilenet_v2", outdir=out, input_shapes=[[1, 3, 64, 64]]))
    return out


@pytest.mark.parametrize("precision", ["float32", "float16"])
def test_zoo_cnn_is_taken_whole(zoo_cnn, precision):
    ops, found = _found((zoo_cnn / f"model_{precision}.tflite").read_bytes())
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD"} <= set(ops)
    assert found.fallbacks == ()
    assert found.taken == tuple(range(len(ops))) and found.partitions == (found.taken,)


def test_readme_lists_each_rule_once(tf_models):
    from edgeport.targets.android.readme import _fallback_groups

    ops = parse_tflite(tf_models["gather_nd_float16"]).ops
    dequantize = [i for i, op in enumerate(ops) if op == "DEQUANTIZE"]
    groups = _fallback_groups(gpu_report(tf_models["gather_nd_float16"]).fallbacks)
    assert len(groups) == 2 and len(dequantize) >= 2
    assert groups[0].startswith(f"DEQUANTIZE (nodes {', '.join(map(str, dequantize))}): float16 weights")
    assert groups[1] == f"GATHER_ND (node {ops.index('GATHER_ND')}): no GPU kernel for op GATHER_ND"
