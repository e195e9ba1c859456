"""ONNX rewrites that make models convertible (and transpose-free) through onnx2tf."""
