"""Small int8 models for the weight clustering and LUT compression tests.

`keras_int8_cnn`: what the TFLite converter makes of a conv / depthwise / pointwise / dense network
(per-channel weights, real converter layout), with heavy-tailed (Laplacian) weights like trained ones.
`synth_int8_cnn`: the same kinds of layers written with the schema's object API (no TensorFlow, for the
packaging tests), with a per-tensor-quantized FULLY_CONNECTED so both table layouts are covered.
"""

from __future__ import annotations

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from tests.targets.synth import Graph

T = schema.TensorType
INPUT_SHAPE = (12, 12, 3)
CLASSES = 10


def keras_int8_cnn(seed: int = 0) -> bytes:
    """Conv 3x3 (16) -> depthwise 3x3 -> conv 3x3 (32) -> conv 1x1 (64) -> mean -> dense (10), int8 I/O."""
    import tensorflow as tf

    from edgeport.quiet import silenced

    rng = np.random.default_rng(seed)
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input(INPUT_SHAPE, batch_size=1)
    x = tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(64, 1, activation="relu")(x)
    x = tf.keras.layers.GlobalAveragePooling2D()(x)
    outputs = tf.keras.layers.Dense(CLASSES)(x)
    model = tf.keras.Model(inputs, outputs)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        kernel = weights[0]
        fan_in = int(np.prod(kernel.shape[:-1])) if layer.__class__.__name__ != "DepthwiseConv2D" else 9
        # Laplacian with He variance (2 / fan_in): b = sqrt(var / 2).
        weights[0] = rng.laplace(0.0, np.sqrt(1.0 / fan_in), kernel.shape).astype(np.float32)
        weights[1] = rng.normal(0.0, 0.1, weights[1].shape).astype(np.float32)
        layer.set_weights(weights)

    def representative():
        for _ in range(32):
            yield [rng.standard_normal((1, *INPUT_SHAPE)).astype(np.float32)]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with silenced():
        return bytes(converter.convert())


def _per_channel(graph: Graph, index: int, scales: np.ndarray, axis: int) -> None:
    q = schema.QuantizationParametersT()
    q.scale = [float(s) for s in scales]
    q.zeroPoint = [0] * len(scales)
    q.quantizedDimension = axis
    graph.tensors[index].quantization = q


def synth_int8_cnn(seed: int = 0) -> bytes:
    """Conv 3x3 (8 -> 16, per-channel axis 0) -> depthwise 5x5 (per-channel axis 3) -> reshape ->
    fully connected (per-tensor) on an 8x8x8 int8 input; Laplacian int8 weights."""
    rng = np.random.default_rng(seed)
    g = Graph()

    def weights(shape: tuple[int, ...]) -> np.ndarray:
        return np.clip(np.round(rng.laplace(0.0, 20.0, shape)), -127, 127).astype(np.int8)

    x = g.tensor([1, 8, 8, 8], T.INT8, scale=0.05)
    w = g.tensor([16, 3, 3, 8], T.INT8, weights((16, 3, 3, 8)))
    _per_channel(g, w, rng.uniform(0.002, 0.004, 16), 0)
    b = g.tensor([16], T.INT32, np.zeros(16, np.int32))
    _per_channel(g, b, np.full(16, 0.05 * 0.003), 0)
    y = g.tensor([1, 8, 8, 16], T.INT8, scale=0.1)
    conv = schema.Conv2DOptionsT()
    conv.padding, conv.strideW, conv.strideH = schema.Padding.SAME, 1, 1
    conv.dilationWFactor = conv.dilationHFactor = 1
    conv.fusedActivationFunction = schema.ActivationFunctionType.RELU
    g.op(schema.BuiltinOperator.CONV_2D, [x, w, b], [y], schema.BuiltinOptions.Conv2DOptions, conv)

    dw_w = g.tensor([1, 5, 5, 16], T.INT8, weights((1, 5, 5, 16)))
    _per_channel(g, dw_w, rng.uniform(0.005, 0.01, 16), 3)
    dw_b = g.tensor([16], T.INT32, np.zeros(16, np.int32))
    _per_channel(g, dw_b, np.full(16, 0.1 * 0.007), 0)
    z = g.tensor([1, 8, 8, 16], T.INT8, scale=0.1)
    dw = schema.DepthwiseConv2DOptionsT()
    dw.padding, dw.strideW, dw.strideH, dw.depthMultiplier = schema.Padding.SAME, 1, 1, 1
    dw.dilationWFactor = dw.dilationHFactor = 1
    g.op(
        schema.BuiltinOperator.DEPTHWISE_CONV_2D,
        [y, dw_w, dw_b],
        [z],
        schema.BuiltinOptions.DepthwiseConv2DOptions,
        dw,
    )

    shape = g.tensor([2], T.INT32, np.array([1, 1024], np.int32), scale=None)
    flat = g.tensor([1, 1024], T.INT8, scale=0.1)
    g.op(
        schema.BuiltinOperator.RESHAPE,
        [z, shape],
        [flat],
        schema.BuiltinOptions.ReshapeOptions,
        schema.ReshapeOptionsT(),
    )
    fc_w = g.tensor([CLASSES, 1024], T.INT8, weights((CLASSES, 1024)), scale=0.002)
    out = g.tensor([1, CLASSES], T.INT8, scale=0.5)
    g.op(
        schema.BuiltinOperator.FULLY_CONNECTED,
        [flat, fc_w, -1],
        [out],
        schema.BuiltinOptions.FullyConnectedOptions,
        schema.FullyConnectedOptionsT(),
    )
    return g.build([x], [out])
