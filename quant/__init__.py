"""Data-free compression: batch-norm folding, equalization, quantization, structured pruning."""
