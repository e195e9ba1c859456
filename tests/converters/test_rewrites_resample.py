"""Pixel shuffle / unshuffle, dilated transposed convs and `padding="same"` convs: the rewrites keep
every output (onnxruntime before vs after) and leave the layouts onnx2tf cannot translate out."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import helper

from edgeport.converters.rewrites import conv_same_pads, dilated_deconv, pixel_shuffle
from tests.onnx_graphs import assert_same_outputs, make_model, ops, random_feeds, run


@pytest.mark.parametrize(("channels", "block"), [(8, 2), (18, 3), (4, 2)])
def test_crd_depth_to_space_becomes_gather_and_dcr(channels: int, block: int):
    before = make_model(
        [helper.make_node("DepthToSpace", ["x"], ["y"], blocksize=block, mode="CRD")],
        {"x": [1, channels, 3, 5]},
        ["y"],
    )
    after = pixel_shuffle.rewrite(before)
    assert ops(after) == {"Gather": 1, "DepthToSpace": 1}
    assert [a.s for n in after.graph.node for a in n.attribute if a.name == "mode"] == [b"DCR"]
    assert_same_outputs(before, after)


def test_crd_order_matches_torch_pixel_shuffle():
    x = torch.randn(1, 12, 2, 3, generator=torch.Generator().manual_seed(0))
    order = torch.from_numpy(pixel_shuffle.crd_to_dcr(12, 2))
    # TFLite / ONNX DCR depth-to-space, written out: channel (bh*b + bw)*C + c -> pixel (bh, bw) of c.
    dcr = x[:, order].reshape(1, 2, 2, 3, 2, 3).permute(0, 3, 4, 1, 5, 2).reshape(1, 3, 4, 6)
    torch.testing.assert_close(dcr, F.pixel_shuffle(x, 2), rtol=0, atol=0)


def unshuffle_graph(c: int = 3, h: int = 4, w: int = 6, b: int = 2, perm=(0, 1, 3, 5, 2, 4)):
    nodes = [
        helper.make_node("Reshape", ["x", "mid"], ["r"]),
        helper.make_node("Transpose", ["r"], ["t"], perm=list(perm)),
        helper.make_node("Reshape", ["t", "out"], ["y"]),
    ]
    shapes = {
        "mid": np.array([1, c, h // b, b, w // b, b], np.int64),
        "out": np.array([1, c * b * b, h // b, w // b], np.int64),
    }
    return make_model(nodes, {"x": [1, c, h, w]}, ["y"], shapes)


@pytest.mark.parametrize(("c", "h", "w", "b"), [(3, 4, 6, 2), (2, 6, 9, 3), (1, 2, 2, 2)])
def test_pixel_unshuffle_becomes_space_to_depth_and_gather(c: int, h: int, w: int, b: int):
    before = unshuffle_graph(c, h, w, b)
    after = pixel_shuffle.rewrite(before)
    assert ops(after) == {"SpaceToDepth": 1, "Gather": 1}
    assert_same_outputs(before, after)
    x = random_feeds(before)["x"]
    np.testing.assert_array_equal(run(after, {"x": x})[0], F.pixel_unshuffle(torch.from_numpy(x), b).numpy())


def test_other_six_d_transposes_are_left_alone():
    before = unshuffle_graph(perm=(0, 1, 2, 4, 3, 5))
    assert ops(pixel_shuffle.rewrite(before)) == ops(before)


@pytest.mark.parametrize(
    ("dilations", "strides", "group"), [([2, 2], [1, 1], 1), ([2, 3], [2, 1], 1), ([3, 2], [2, 2], 2)]
)
def test_dilated_deconv_gets_a_dense_kernel(dilations, strides, group):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 6 // group, 3, 2)).astype(np.float32)
    node = helper.make_node(
        "ConvTranspose",
        ["x", "w"],
        ["y"],
        dilations=dilations,
        strides=strides,
        group=group,
        pads=[1, 0, 2, 1],
    )
    before = make_model([node], {"x": [1, 4, 5, 7]}, ["y"], {"w": w})
    after = dilated_deconv.rewrite(before)
    (new,) = after.graph.node
    assert [list(a.ints) for a in new.attribute if a.name == "dilations"] == [[1, 1]]
    assert_same_outputs(before, after)


def test_dilate_kernel_puts_zeros_between_taps():
    w = np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
    dense = dilated_deconv.dilate_kernel(w, [2, 3])
    assert dense.shape == (1, 1, 3, 7)
    np.testing.assert_array_equal(dense[0, 0, ::2, ::3], w[0, 0])
    assert np.count_nonzero(dense) == 6


@pytest.mark.parametrize(
    ("mode", "dilation", "stride"), [("SAME_UPPER", 2, 1), ("SAME_LOWER", 3, 1), ("SAME_UPPER", 1, 2)]
)
def test_same_conv_gets_explicit_pads(mode: str, dilation: int, stride: int):
    w = np.random.default_rng(1).standard_normal((5, 3, 4)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], auto_pad=mode, dilations=[dilation], strides=[stride])
    before = make_model([node], {"x": [1, 3, 17]}, ["y"], {"w": w})
    after = conv_same_pads.rewrite(before)
    (new,) = after.graph.node
    assert {a.name: a for a in new.attribute}["auto_pad"].s == b"NOTSET"
    x = random_feeds(before)["x"]
    total = (17 + stride - 1) // stride * stride - stride + dilation * 3 + 1 - 17
    small, large = total // 2, total - total // 2
    padded = np.pad(x, [(0, 0), (0, 0), (small, large) if mode == "SAME_UPPER" else (large, small)])
    expected = F.conv1d(torch.from_numpy(padded), torch.from_numpy(w), stride=stride, dilation=dilation)
    np.testing.assert_allclose(run(after, {"x": x})[0], expected.numpy(), rtol=1e-5, atol=1e-5)


def test_same_pads_match_torch_padding_same():
    # PyTorch's padding="same" (stride 1) puts the odd element at the end: SAME_UPPER.
    assert conv_same_pads.same_pads([10], [4], [1], [3], upper=True) == [4, 5]
    assert conv_same_pads.same_pads([10, 7], [3, 3], [2, 2], [1, 1], upper=False) == [1, 1, 0, 1]
