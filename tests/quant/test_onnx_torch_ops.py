"""quant/onnx_torch.py's transformer, normalisation and index ops against onnxruntime, each on a small
seeded graph run at a batch of three (exported batch 1): LayerNormalization (axis, epsilon, stash_type,
a float16 input, no bias, its Mean and InvStdDev outputs), Mod (fmod on floats and integers, Python's
sign rule on integers), Trilu, Einsum, the reductions, DepthToSpace/SpaceToDepth, InstanceNormalization,
ArgMax/ArgMin, the elementwise ops attention exports use, and AveragePool's ceil-mode windows counted
with their padding (onnxruntime divides by the whole kernel)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edgeport.quant import onnx_torch
from tests.quant.helpers import make_model

X = [1, 4, 6, 6]
_I64 = np.int64


def _node(op: str, inputs: list[str], output: str = "y", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], **attrs)


def _cast(source: str, output: str, to: int) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [output], to=to)


def _integer_mod(fmod: int) -> list[onnx.NodeProto]:
    """x * 10 truncated to int32, Mod by a constant with both signs, back to float."""
    return [
        _node("Mul", ["x", "ten"], "scaled"),
        _cast("scaled", "ints", TensorProto.INT32),
        _node("Mod", ["ints", "divisor"], "m", fmod=fmod),
        _cast("m", "y", TensorProto.FLOAT),
    ]


def _arg(op: str, **attrs: object) -> list[onnx.NodeProto]:
    """ArgMax/ArgMin of Round(x) (ties in plenty: select_last_index matters), as float."""
    return [_node("Round", ["x"], "r"), _node(op, ["r"], "i", **attrs), _cast("i", "y", TensorProto.FLOAT)]


_EPS_INIT = {"ten": np.float32(10), "divisor": np.array([3, -4, 5, -3], np.int32).reshape(1, 4, 1, 1)}

# case -> (nodes, outputs, constants, opset)
CASES: dict[str, tuple[list[onnx.NodeProto], list[str], dict[str, np.ndarray], int]] = {
    "layernorm_last_axis": (
        [_node("LayerNormalization", ["x", "s6", "b6"])],
        ["y"],
        {},
        17,
    ),
    "layernorm_axis1_eps_no_bias": (
        [_node("LayerNormalization", ["x", "s466"], axis=1, epsilon=1e-2)],
        ["y"],
        {},
        17,
    ),
    "layernorm_axis_minus2_stash_float": (
        [_node("LayerNormalization", ["x", "s66", "b66"], axis=-2, stash_type=1)],
        ["y"],
        {},
        17,
    ),
    "layernorm_mean_inv_std_outputs": (
        [helper.make_node("LayerNormalization", ["x", "s66", "b66"], ["y", "mean", "inv_std"], axis=2)],
        ["y", "mean", "inv_std"],
        {},
        17,
    ),
    "layernorm_float16_stash_float": (
        [
            _cast("x", "h", TensorProto.FLOAT16),
            _cast("s6", "sh", TensorProto.FLOAT16),
            _node("LayerNormalization", ["h", "sh"], "n"),
            _cast("n", "y", TensorProto.FLOAT),
        ],
        ["y"],
        {},
        17,
    ),
    "mod_float_fmod": ([_node("Mod", ["x", "fdiv"], fmod=1)], ["y"], {"fdiv": np.float32(-0.7)}, 17),
    "mod_int_python_sign": (_integer_mod(0), ["y"], _EPS_INIT, 17),
    "mod_int_fmod": (_integer_mod(1), ["y"], _EPS_INIT, 17),
    "trilu_upper": ([_node("Trilu", ["x"])], ["y"], {}, 17),
    "trilu_lower_k_negative": ([_node("Trilu", ["x", "k"], upper=0)], ["y"], {"k": np.array(-1, _I64)}, 17),
    "trilu_upper_k_positive": ([_node("Trilu", ["x", "k"], upper=1)], ["y"], {"k": np.array(2, _I64)}, 17),
    "einsum_channels": ([_node("Einsum", ["x", "m46"], equation="bchw, cd -> bdhw")], ["y"], {}, 17),
    "einsum_batched_matmul": ([_node("Einsum", ["x", "x"], equation="bcij,bckj->bcik")], ["y"], {}, 17),
    "einsum_implicit_ellipsis": ([_node("Einsum", ["x", "m66"], equation="...ij,jk")], ["y"], {}, 17),
    "celu": ([_node("Celu", ["x"], alpha=0.5)], ["y"], {}, 17),
    "selu_defaults": ([_node("Selu", ["x"])], ["y"], {}, 17),
    "selu_attributes": ([_node("Selu", ["x"], alpha=1.2, gamma=0.9)], ["y"], {}, 17),
    "depth_to_space_dcr": ([_node("DepthToSpace", ["x"], blocksize=2)], ["y"], {}, 17),
    "depth_to_space_crd": ([_node("DepthToSpace", ["x"], blocksize=2, mode="CRD")], ["y"], {}, 17),
    "space_to_depth": ([_node("SpaceToDepth", ["x"], blocksize=2)], ["y"], {}, 17),
    "instance_norm": ([_node("InstanceNormalization", ["x", "s4", "b4"], epsilon=1e-3)], ["y"], {}, 17),
    "reduce_l1": ([_node("ReduceL1", ["x"], axes=[2, 3])], ["y"], {}, 17),
    "reduce_l2_no_keepdims": ([_node("ReduceL2", ["x"], axes=[1], keepdims=0)], ["y"], {}, 17),
    "reduce_sum_square": ([_node("ReduceSumSquare", ["x"], axes=[-1])], ["y"], {}, 17),
    "reduce_log_sum_exp": ([_node("ReduceLogSumExp", ["x"], axes=[1, 3])], ["y"], {}, 17),
    "reduce_log_sum": (
        [_node("Abs", ["x"], "a"), _node("ReduceLogSum", ["a"], axes=[2])],
        ["y"],
        {},
        17,
    ),
    "reduce_prod_axes_input": (
        [_node("ReduceProd", ["x", "axes"], keepdims=0)],
        ["y"],
        {"axes": np.array([3, 1], _I64)},
        18,
    ),
    "reduce_l2_opset18_axes_input": (
        [_node("ReduceL2", ["x", "axes"])],
        ["y"],
        {"axes": np.array([-2], _I64)},
        18,
    ),
    "argmax_first": (_arg("ArgMax", axis=1), ["y"], {}, 17),
    "argmax_last_no_keepdims": (_arg("ArgMax", axis=-1, keepdims=0, select_last_index=1), ["y"], {}, 17),
    "argmin_last": (_arg("ArgMin", axis=2, select_last_index=1), ["y"], {}, 17),
    "sign_round": (
        [_node("Sign", ["x"], "s"), _node("Mul", ["x", "s"], "m"), _node("Round", ["m"])],
        ["y"],
        {},
        17,
    ),
    "xor": (
        [
            _node("Greater", ["x", "zero"], "g"),
            _node("Less", ["x", "half"], "l"),
            _node("Xor", ["g", "l"], "z"),
            _cast("z", "y", TensorProto.FLOAT),
        ],
        ["y"],
        {"zero": np.float32(0), "half": np.float32(0.5)},
        17,
    ),
    # torch.nn.AvgPool2d(3, 2, ceil_mode=True) exported (count_include_pad=1): a window past the end.
    "avgpool_ceil_count_pad": (
        [_node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1)],
        ["y"],
        {},
        17,
    ),
    "avgpool_ceil_count_pad_asymmetric": (
        [
            _node(
                "AveragePool",
                ["x"],
                kernel_shape=[3, 2],
                strides=[2, 2],
                pads=[1, 0, 0, 1],
                ceil_mode=1,
                count_include_pad=1,
            )
        ],
        ["y"],
        {},
        17,
    ),
    # A last ceil-mode window that would start in the end padding is dropped (torch keeps it).
    "avgpool_ceil_window_in_end_pad": (
        [_node("AveragePool", ["x"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)],
        ["y"],
        {},
        17,
    ),
    "maxpool_ceil_window_in_end_pad": (
        [_node("MaxPool", ["x"], kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 0, 1], ceil_mode=1)],
        ["y"],
        {},
        17,
    ),
    "avgpool_ceil_1d_count_pad": (
        [
            _node("Reshape", ["x", "rows"], "r"),
            _node(
                "AveragePool",
                ["r"],
                kernel_shape=[4],
                strides=[3],
                pads=[1, 1],
                ceil_mode=1,
                count_include_pad=1,
            ),
        ],
        ["y"],
        {"rows": np.array([1, 4, 36], _I64)},
        17,
    ),
    "gelu_tanh": ([_node("Gelu", ["x"], approximate="tanh")], ["y"], {}, 20),
    "erf": ([_node("Erf", ["x"])], ["y"], {}, 17),
    "softmax_axis2_opset13": ([_node("Softmax", ["x"], axis=2)], ["y"], {}, 13),
    "softmax_opset11_flattens": ([_node("Softmax", ["x"], axis=2)], ["y"], {}, 11),
}


def _constants(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "s6": 1 + 0.2 * rng.standard_normal(6),
        "b6": 0.1 * rng.standard_normal(6),
        "s466": 1 + 0.2 * rng.standard_normal((4, 6, 6)),
        "s66": 1 + 0.2 * rng.standard_normal((6, 6)),
        "b66": 0.1 * rng.standard_normal((6, 6)),
        "s4": 1 + 0.2 * rng.standard_normal(4),
        "b4": 0.1 * rng.standard_normal(4),
        "m46": rng.standard_normal((4, 5)),
        "m66": rng.standard_normal((6, 3)),
    }


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_op_matches_onnxruntime(case: str) -> None:
    rng = np.random.default_rng(11)
    nodes, outputs, inits, opset = CASES[case]
    given = {**_constants(rng), **inits}
    used = {k: v for k, v in given.items() if any(k in n.input for n in nodes)}
    model = make_model(nodes, {"x": X}, outputs, used, opset=opset)
    samples = [{"x": rng.standard_normal(X).astype(np.float32)} for _ in range(3)]
    module = onnx_torch.onnx_to_torch(model)
    assert onnx_torch.check_against_onnxruntime(module, model, samples) < 1e-5


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
def test_layernorm_is_torch_s_layer_norm_and_differentiable() -> None:
    """The whole-shape form runs as F.layer_norm (a re-export writes LayerNormalization again) and
    carries gradients (distillation, pruning's recovery)."""
    rng = np.random.default_rng(1)
    model = make_model([_node("LayerNormalization", ["x", "s6", "b6"])], {"x": X}, ["y"], _constants(rng))
    module = onnx_torch.onnx_to_torch(model)
    x = torch.randn(2, *X[1:], requires_grad=True)
    traced = torch.jit.trace(module, (x,))
    assert "aten::layer_norm" in str(traced.graph)
    module(x).square().sum().backward()
    assert x.grad is not None and bool(x.grad.abs().sum() > 0)


def test_float_mod_without_fmod_fails_naming_the_node() -> None:
    """ONNX defines Mod of floats with fmod=1 only (onnxruntime refuses the other): named, not guessed."""
    model = make_model(
        [_node("Mod", ["x", "fdiv"], name="the_mod")], {"x": X}, ["y"], {"fdiv": np.float32(0.7)}
    )
    with pytest.raises(RuntimeError, match=r"node 'the_mod' \(Mod\): ValueError: .*fmod=1"):
        onnx_torch.onnx_to_torch(model)(torch.zeros(X))


def test_layernorm_with_an_integer_stash_type_is_refused_naming_it() -> None:
    node = _node("LayerNormalization", ["x", "s6"], stash_type=TensorProto.INT32)
    model = make_model([node], {"x": X}, ["y"], {"s6": np.ones(6)}, opset=17)
    with pytest.raises(onnx_torch.UnsupportedOnnxGraph, match="stash_type 6") as err:
        onnx_torch.onnx_to_torch(model)(torch.zeros(X))
    assert err.value.op == "LayerNormalization"
