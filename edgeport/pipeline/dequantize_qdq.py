"""A quantized (QDQ) ONNX model is converted as the float model it dequantizes to (quant/qdq.py).

onnx2tf miscomputes the DequantizeLinears of a model quantized in QDQ format (onnxruntime's
quantize_static with QuantFormat.QDQ: relative error about 1.45 on a small CNN), so the float
verification refused every such model. This pass hands onnx2tf the float graph instead: weight
DequantizeLinear chains folded to initializers, activation QuantizeLinear -> DequantizeLinear pairs
dropped (kept as the Relu/Clip the quantizer folded into them where zero ends their range and the tensor
can cross that end: not after a Sigmoid or inside an exact GELU's 1 + erf). That graph computes the QDQ
model's function but for the rounding, so it is also verification's reference (the ONNX passes after it
are verified against it, as against the source otherwise); --quantize int8 quantizes the float model
again. A model without Quantize/DequantizeLinear nodes is left as it is.
"""

from __future__ import annotations

import onnx

from edgeport.errors import EdgeportError
from edgeport.pipeline.passes import PassReport
from edgeport.quant.qdq import NotAPair, float_graph, float_note

NAME = "dequantize_qdq"
ABOUT = (
    "a quantized (QDQ) model becomes the float model it dequantizes to: weight DequantizeLinears folded, "
    "activation QuantizeLinear -> DequantizeLinear pairs dropped (kept as their Relu/Clip)"
)


class DequantizeReport(PassReport):
    name: str = NAME
    quantized: bool = False  # the model had QuantizeLinear / DequantizeLinear nodes
    weights_dequantized: int = 0  # constants a DequantizeLinear computed, now initializers
    pairs_dropped: int = 0  # activation QuantizeLinear -> DequantizeLinear pairs
    pairs_kept_as_clamps: int = 0  # of those, replaced by the Relu/Clip to their range

    def headline(self) -> str:
        return "quantized (QDQ) model converted as float" if self.quantized else ""

    def warnings_(self) -> list[str]:
        if not self.quantized:
            return []
        tensors = self.weights_dequantized
        weights = (
            f"{tensors} constant tensor{'s' * (tensors != 1)} (weights, biases) dequantized"
            if tensors
            else ""
        )
        return float_note(
            " and is converted as float", weights, self.pairs_dropped, self.pairs_kept_as_clamps
        )


def dequantize_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, DequantizeReport]:
    """The float graph of a QDQ `model` and what changed; `model` as it is without QDQ nodes. An
    activation QuantizeLinear that is no per-tensor pair is refused in one line."""
    try:
        model, counts = float_graph(model)
    except NotAPair as exc:
        raise EdgeportError(
            f"the ONNX model is quantized (QDQ) and edgeport converts it as float, but {exc} (only "
            "per-tensor QuantizeLinear -> DequantizeLinear pairs of activations can go)",
            "convert the float model it was quantized from (--quantize int8 quantizes it)",
        ) from exc
    return model, DequantizeReport(
        quantized=counts.changed(),
        weights_dequantized=counts.weights,
        pairs_dropped=counts.pairs,
        pairs_kept_as_clamps=counts.clips,
    )
