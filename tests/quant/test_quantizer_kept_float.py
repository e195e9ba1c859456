"""Ops the TFLite quantizer itself leaves float32 (quant/int8.py: quantizer_kept_float)."""

from pathlib import Path

import numpy as np

from edgeport.pipeline import ConvertOptions, convert_model
from edgeport.quant import int8 as Q
from edgeport.quant.modes import QuantOptions, _check_full_integer
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import parse_tflite

IMAGE = TensorSpec("x", [1, 3, 8, 8], channels_last=True)


def quantized(activation: str) -> bytes:
    import tf_keras as K

    K.utils.set_random_seed(0)
    x = K.Input((8, 8, 3), name="x")
    act = K.layers.ELU() if activation == "elu" else K.layers.ReLU()
    y = K.layers.Dense(4)(K.layers.GlobalAveragePooling2D()(act(K.layers.Conv2D(8, 3)(x))))
    rng = np.random.default_rng(0)
    samples = [{"x": rng.standard_normal((1, 3, 8, 8)).astype(np.float32)} for _ in range(8)]
    return Q.keras_to_quantized(K.Model(x, y), "int8", [IMAGE], samples)


def test_the_quantizers_float_elu_is_found_and_accepted() -> None:
    model = quantized("elu")
    (kept,) = Q.quantizer_kept_float(model)
    assert kept.op == "ELU" and "TFLite quantizer" in kept.note()
    assert parse_tflite(model).op_counts["DEQUANTIZE"] == 1
    _check_full_integer(model, "int8", [kept.node])  # accepted once named; refused otherwise (test_tflm_ops)
    assert Q.quantizer_kept_float(quantized("relu")) == []


def test_zoo_activations_quantize_with_elu_kept_float(tmp_path: Path) -> None:
    """Was refused after calibration: 'the int8 model is not full-integer: tensor tfl.dequantize'."""
    out = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "models.py"
    result = convert_model(
        ConvertOptions(
            source=f"{zoo}:activations",
            outdir=out,
            input_shapes=[[1, 3, 16, 16]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    assert "ELU" in parse_tflite((out / "model_int8.tflite").read_bytes()).ops
    text = (out / "edgeport.json").read_text()
    assert "the TFLite quantizer has no int8 form of it" in text
    # TFLite's reference kernels have no ELU: TFLite Micro is compared with the optimized ones, and
    # the manifest says so instead of claiming a bit-exact check.
    assert "not checked bit for bit" in text and '"tflm_vs_litert"' not in text
    assert result.manifest is not None


def test_a_region_of_float_ops_is_kept_float_as_a_whole(tmp_path: Path) -> None:
    """The quantizer leaves this model's output RESHAPE + ADD float together (each reads the other):
    refused as 'not full-integer: tensor ...transpose... is float32' before regions were counted."""
    out = tmp_path / "out"
    zoo = Path(__file__).resolve().parents[1] / "zoo" / "tensorops.py"
    convert_model(
        ConvertOptions(
            source=f"{zoo}:three_in_three_out",
            outdir=out,
            input_shapes=[[1, 3, 12, 12], [1, 4, 9], [1, 5]],
            quantize=QuantOptions(mode="int8"),
        )
    )
    model = (out / "model_int8.tflite").read_bytes()
    kept = Q.quantizer_kept_float(model)
    assert len(kept) >= 2  # a region, not a single op
    _check_full_integer(model, "int8", [k.node for k in kept])
