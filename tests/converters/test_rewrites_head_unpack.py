"""head_unpack_rank4: q, k, v out of a rank-5 qkv tensor without rank-5 ops, same elements."""

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from edgeport.converters.rewrites import head_unpack
from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant.modes import QuantOptions
from edgeport.tflite_file import read_tflite
from tests.onnx_graphs import make_model, ops, random_feeds, run

B, N, H, D = 1, 6, 2, 4
E = H * D


def qkv_model(take: str = "slice", opset: int = 11) -> onnx.ModelProto:
    """x @ w -> [B, N, 3, H, D] -> [3, B, H, N, D]; q, k, v by index; softmax(q k^T) v, as PaddleOCR's
    SVTR writes it (Slice + Squeeze, opset 11) or as a Gather per index."""
    rng = np.random.default_rng(0)
    consts = {
        "w": rng.standard_normal((E, 3 * E)).astype(np.float32),
        "split": np.array([B, N, 3, H, D], np.int64),
        "perm_k": np.array([0, 1, 3, 2], np.int64),
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["p"]),
        helper.make_node("Reshape", ["p", "split"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4]),
    ]
    for i, name in enumerate("qkv"):
        if take == "gather":
            consts[f"i{i}"] = np.array(i, np.int64)
            nodes.append(helper.make_node("Gather", ["t", f"i{i}"], [name], axis=0))
            continue
        consts[f"s{i}"], consts[f"e{i}"] = np.array([i], np.int64), np.array([i + 1], np.int64)
        consts["zero"] = np.array([0], np.int64)
        nodes += [
            helper.make_node("Slice", ["t", f"s{i}", f"e{i}", "zero"], [f"{name}1"]),
            helper.make_node("Squeeze", [f"{name}1"], [name], axes=[0]),
        ]
    nodes += [
        helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["q", "kt"], ["s"]),
        helper.make_node("Softmax", ["s"], ["a"], axis=3),
        helper.make_node("MatMul", ["a", "v"], ["y"]),
    ]
    if opset >= 13:  # Squeeze's axes became an input
        nodes = [
            helper.make_node("Squeeze", [n.input[0], "zero"], list(n.output)) if n.op_type == "Squeeze" else n
            for n in nodes
        ]
    consts.pop("perm_k")
    return make_model(nodes, {"x": [B, N, E]}, ["y"], consts, opset=opset)


def test_q_k_v_are_sliced_from_the_projection_with_the_same_outputs():
    for model in (qkv_model(), qkv_model("gather"), qkv_model(opset=13)):
        after = head_unpack.rewrite(model)
        onnx.checker.check_model(after)
        counts = ops(after)
        assert counts.get("Squeeze", 0) == counts.get("Gather", 0) == 0
        assert counts["Slice"] == 3 and counts["Reshape"] == 3
        shapes = onnx.shape_inference.infer_shapes(after).graph.value_info
        assert max(len(v.type.tensor_type.shape.dim) for v in shapes) == 4
        feeds = random_feeds(model)
        np.testing.assert_array_equal(run(after, feeds)[0], run(model, feeds)[0])


def test_a_reader_that_takes_more_than_one_index_leaves_the_graph_alone():
    model = qkv_model()
    (slice_v,) = [n for n in model.graph.node if n.output[0] == "v1"]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([3], np.int64), "e_wide"))
    slice_v.input[1], slice_v.input[2] = "zero", "e_wide"  # v1 = t[0:3]: not one head block
    assert head_unpack.rewrite(model) == model


def test_the_int8_model_runs_in_tflite_micro(tmp_path: Path):
    """TFLite Micro refused the rank-5 STRIDED_SLICE this attention became ('input dim should not
    exceed 4'); the int8 stage runs the model in TFLite Micro, so converting is the proof."""
    source = tmp_path / "qkv.onnx"
    onnx.save(qkv_model(), source)
    out = tmp_path / "out"
    convert_model(
        ConvertOptions(
            source=str(source), outdir=out, input_shapes=[[B, N, E]], quantize=QuantOptions(mode="int8")
        )
    )
    tensors = read_tflite(out / "model_int8.tflite").raw.subgraphs[0].tensors
    assert max(len(t.shape) for t in tensors if t.shape is not None) == 4
