"""quant/tflm_pad_value.py: which int8 SPACE_TO_BATCH_ND ops TFLite Micro pads with raw 0 instead of
their zero point, on small synthetic models (the schema's object API: no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeport.quant.tflm_pad_value import pad_value_problem, padding_space_to_batch
from edgeport.tflite_file import schema
from tests.targets.synth import Graph, T


def space_to_batch(zero_point: int, paddings: list[int], ttype: int = T.INT8) -> bytes:
    g = Graph()
    x = g.tensor([1, 4, 4, 1], ttype, zero_point=zero_point)
    block = g.tensor([2], T.INT32, np.array([2, 2], np.int32), scale=None)
    pads = g.tensor([2, 2], T.INT32, np.array(paddings, np.int32).reshape(2, 2), scale=None)
    y = g.tensor([4, 3, 3, 1], ttype, zero_point=zero_point)
    g.op(schema.BuiltinOperator.SPACE_TO_BATCH_ND, [x, block, pads], [y])
    return g.build([x], [y])


def test_a_padding_int8_space_to_batch_is_named_with_its_zero_point() -> None:
    model = space_to_batch(-5, [1, 1, 1, 1])
    assert padding_space_to_batch(model) == [("t3", -5)]
    problem, fix = pad_value_problem(model, "y", 3) or ("", "")
    assert "SPACE_TO_BATCH_ND 't3'" in problem and "zero point -5" in problem and "float" in fix


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(lambda: space_to_batch(0, [1, 1, 1, 1]), id="zero point 0: raw 0 is the real 0"),
        pytest.param(lambda: space_to_batch(-5, [0, 0, 0, 0]), id="zero paddings: nothing padded"),
    ],
)
def test_space_to_batch_that_pads_nothing_wrong_is_left_alone(model) -> None:
    assert padding_space_to_batch(model()) == [] and pad_value_problem(model(), "y", 3) is None
