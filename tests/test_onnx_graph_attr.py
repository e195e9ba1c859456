"""Attribute reads: string attributes (bytes in onnx) as str."""

from __future__ import annotations

from onnx import helper

from edgeport.onnx_graph import as_text, attr, text_attr


def test_a_string_attribute_reads_as_str_and_a_missing_one_as_the_default() -> None:
    node = helper.make_node("Resize", ["x"], ["y"], mode="cubic", activations=["Sigmoid", "Tanh"])
    assert attr(node, "mode") == b"cubic"  # what onnx gives
    assert text_attr(node, "mode", "nearest") == "cubic"
    assert text_attr(node, "coordinate_transformation_mode", "half_pixel") == "half_pixel"
    assert text_attr(node, "nearest_mode") == ""
    assert [as_text(a) for a in attr(node, "activations")] == ["Sigmoid", "Tanh"]
    assert as_text("already") == "already"
