"""Proof that a rewrite's replacement computes what the region it replaces computed.

Only the rewrites whose matchers are deliberately loose (attention, rnn_unroll) need this, so it stays
beside them rather than in edgeport.onnx_graph: the graph helper, which quant/ also imports, only looks
things up and edits, and does not run models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeport.onnx_graph import OnnxGraph
from edgeport.runtimes import onnxrt


def replacement_agrees(
    graph: OnnxGraph,
    old: Sequence[onnx.NodeProto],
    new: Sequence[onnx.NodeProto],
    new_inits: Sequence[onnx.TensorProto],
    outputs: Sequence[str],
    tolerance: float,
    samples: int = 2,
) -> bool:
    """Run region `old` of `graph` and its replacement `new` with onnxruntime on random values of every
    non-constant input the region reads; True when every output agrees within `tolerance` (relative to
    the output's largest magnitude). Rewrites that match loosely prove themselves here."""
    produced = {o for n in old for o in n.output}
    feed_names = sorted(
        {i for n in old for i in n.input if i and i not in produced and graph.const(i) is None}
    )
    shapes = {}
    for name in feed_names:
        shape = graph.static_shape(name)
        if shape is None or not graph.is_float32(name):
            return False
        shapes[name] = shape

    def session(
        nodes: Sequence[onnx.NodeProto], own_inits: Sequence[onnx.TensorProto]
    ) -> ort.InferenceSession:
        # Graph constants the region reads (weights, initial states) come along as initializers.
        made = {o for n in nodes for o in n.output} | {i.name for i in own_inits} | set(shapes)
        reads = {i for n in nodes for i in n.input if i and i not in made}
        inits = [*own_inits, *(numpy_helper.from_array(graph.const(i), i) for i in sorted(reads))]
        region = helper.make_graph(
            list(nodes),
            "region",
            [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
            inits,
        )
        m = helper.make_model(region, opset_imports=list(graph.model.opset_import))
        m.ir_version = 8
        return onnxrt.session(m.SerializeToString())

    rng = np.random.default_rng(0)
    try:
        before, after = session(old, []), session(new, new_inits)
        for _ in range(samples):
            feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in shapes.items()}
            ref, got = before.run(list(outputs), feeds), after.run(list(outputs), feeds)
            for a, b in zip(ref, got, strict=True):
                if a.shape != b.shape or np.abs(a - b).max() > tolerance * max(np.abs(a).max(), 1e-6):
                    return False
    except Exception:  # a replacement onnxruntime cannot even run is not a replacement
        return False
    return True
