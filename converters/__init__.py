"""torch -> ONNX -> TFLite, and the numeric checks between stages."""
