"""Small synthetic .tflite models built with the schema's object API (fast, deterministic, no TF)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

from edgeport.tflite_file import serialize_tflite, set_builtin_code

T = schema.TensorType


@dataclass
class Graph:
    """Collects tensors, buffers and operators, then packs a TFL3 flatbuffer."""

    tensors: list[schema.TensorT] = field(default_factory=list)
    buffers: list[schema.BufferT] = field(default_factory=lambda: [schema.BufferT()])  # buffer 0 is empty
    ops: list[schema.OperatorT] = field(default_factory=list)
    codes: list[schema.OperatorCodeT] = field(default_factory=list)

    def tensor(self, shape, ttype=T.INT8, data: np.ndarray | None = None, scale=0.05, zero_point=0) -> int:
        t = schema.TensorT()
        t.shape = list(shape)
        t.type = ttype
        t.name = f"t{len(self.tensors)}".encode()
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        else:
            t.buffer = 0
        if ttype in (T.INT8, T.INT32) and scale is not None:
            q = schema.QuantizationParametersT()
            q.scale = [scale]
            q.zeroPoint = [zero_point]
            t.quantization = q
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(
        self, builtin: int, inputs, outputs, options_type=0, options=None, custom: str | None = None
    ) -> None:
        key = (builtin, custom)
        index = next(
            (i for i, c in enumerate(self.codes) if (c.builtinCode, c.customCode) == (builtin, custom)), None
        )
        if index is None:
            code = schema.OperatorCodeT()
            set_builtin_code(code, builtin)
            code.version = 1
            code.customCode = custom
            self.codes.append(code)
            index = len(self.codes) - 1
        del key
        op = schema.OperatorT()
        op.opcodeIndex = index
        op.inputs, op.outputs = list(inputs), list(outputs)
        op.builtinOptionsType = options_type
        op.builtinOptions = options
        self.ops.append(op)

    def build(self, inputs, outputs) -> bytes:
        graph = schema.SubGraphT()
        graph.tensors, graph.operators = self.tensors, self.ops
        graph.inputs, graph.outputs = list(inputs), list(outputs)
        graph.name = b"main"
        model = schema.ModelT()
        model.version = 3
        model.operatorCodes = self.codes
        model.subgraphs = [graph]
        model.buffers = self.buffers
        model.description = b"edgeport test model"
        return serialize_tflite(model)


def fully_connected(g: Graph, x: int, in_features: int, out_features: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    weights = rng.integers(-127, 127, size=(out_features, in_features), dtype=np.int8)
    w = g.tensor([out_features, in_features], T.INT8, weights, scale=0.01)
    y = g.tensor([1, out_features], T.INT8, scale=0.5)
    options = schema.FullyConnectedOptionsT()
    g.op(
        schema.BuiltinOperator.FULLY_CONNECTED,
        [x, w, -1],
        [y],
        schema.BuiltinOptions.FullyConnectedOptions,
        options,
    )
    return y


def big_fc_model(in_features: int = 2048, out_features: int = 2048) -> bytes:
    """One int8 FULLY_CONNECTED: in*out bytes of weights (2048x2048 = 4 MB)."""
    g = Graph()
    x = g.tensor([1, in_features], T.INT8)
    y = fully_connected(g, x, in_features, out_features)
    return g.build([x], [y])


def _conv(g: Graph, x: int, in_ch: int, out_ch: int, hw: int, stride: int, depthwise: bool = False) -> int:
    rng = np.random.default_rng(in_ch * 31 + out_ch)
    out_hw = hw // stride
    if depthwise:
        w = g.tensor([1, 3, 3, out_ch], T.INT8, rng.integers(-127, 127, (1, 3, 3, out_ch), dtype=np.int8))
    else:
        k = 3 if in_ch == 3 else 1
        w = g.tensor(
            [out_ch, k, k, in_ch], T.INT8, rng.integers(-127, 127, (out_ch, k, k, in_ch), dtype=np.int8)
        )
    b = g.tensor([out_ch], T.INT32, np.zeros(out_ch, dtype=np.int32), scale=0.0005)
    y = g.tensor([1, out_hw, out_hw, out_ch], T.INT8, scale=0.1)
    if depthwise:
        opt = schema.DepthwiseConv2DOptionsT()
        opt.padding, opt.strideW, opt.strideH, opt.depthMultiplier = schema.Padding.SAME, stride, stride, 1
        opt.dilationWFactor = opt.dilationHFactor = 1
        g.op(
            schema.BuiltinOperator.DEPTHWISE_CONV_2D,
            [x, w, b],
            [y],
            schema.BuiltinOptions.DepthwiseConv2DOptions,
            opt,
        )
    else:
        opt = schema.Conv2DOptionsT()
        opt.padding, opt.strideW, opt.strideH = schema.Padding.SAME, stride, stride
        opt.dilationWFactor = opt.dilationHFactor = 1
        g.op(schema.BuiltinOperator.CONV_2D, [x, w, b], [y], schema.BuiltinOptions.Conv2DOptions, opt)
    return y


def mobilenet_stem_model() -> bytes:
    """The first MobileNetV1 (224x224, alpha 1.0) block: conv 3x3/2 -> dw 3x3 -> pw 1x1 to 64 channels.

    Its activations (112x112x32 in, 112x112x64 out) are what make MobileNet-size models need over a
    megabyte of arena.
    """
    g = Graph()
    x = g.tensor([1, 224, 224, 3], T.INT8)
    y = _conv(g, x, 3, 32, 224, 2)
    y = _conv(g, y, 32, 32, 112, 1, depthwise=True)
    y = _conv(g, y, 32, 64, 112, 1)
    return g.build([x], [y])


def unsupported_op_model() -> bytes:
    """FULLY_CONNECTED then TOPK_V2 (which TFLite Micro has no kernel for) at node 1."""
    g = Graph()
    x = g.tensor([1, 16], T.INT8)
    y = fully_connected(g, x, 16, 8)
    k = g.tensor([], T.INT32, np.array([2], dtype=np.int32), scale=None)
    values = g.tensor([1, 2], T.INT8)
    indices = g.tensor([1, 2], T.INT32, scale=None)
    g.op(
        schema.BuiltinOperator.TOPK_V2,
        [y, k],
        [values, indices],
        schema.BuiltinOptions.TopKV2Options,
        schema.TopKV2OptionsT(),
    )
    return g.build([x], [values, indices])


def bad_index_model() -> bytes:
    """A well-formed flatbuffer whose operator reads tensor 7 of a 3-tensor graph."""
    g = Graph()
    x = g.tensor([1, 16], T.INT8)
    y = fully_connected(g, x, 16, 8)
    g.ops[0].inputs = [x, 7, -1]
    return g.build([x], [y])
