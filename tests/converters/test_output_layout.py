"""onnx2tf's per-output layout flag is checked against the Keras output's shape."""

from __future__ import annotations

from edgeport.converters.onnx_to_tflite import output_channels_last


def test_shape_overrides_a_wrong_flag():
    # [N, C, H, W] = [1, 16, 12, 10]: a Keras output of exactly that shape is channels-first.
    assert not output_channels_last(True, [1, 16, 12, 10], [1, 16, 12, 10])
    assert output_channels_last(False, [1, 16, 12, 10], [1, 12, 10, 16])
    assert output_channels_last(True, [1, 8, 30], [1, 30, 8])


def test_flag_decides_when_the_shape_cannot():
    assert output_channels_last(True, [1, 4, 4, 4], [1, 4, 4, 4])
    assert not output_channels_last(False, [1, 4, 4, 4], [1, 4, 4, 4])
    assert not output_channels_last(False, [1, 10], [1, 10])
    assert output_channels_last(True, [1, 3, 5], [None, 5, 3]) is True
