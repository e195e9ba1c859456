"""End to end: a representative few of the attention and shuffle zoo models through `edgeport convert`.

Each is converted with the Python API and re-checked by the zoo harness (PyTorch vs the float32
.tflite on inputs of another seed, TRANSPOSE-free where the zoo says so); the rewrites' own tests cover
the other spellings on ONNX graphs. The whole zoo runs in tests/test_zoo_convert.py (EDGEPORT_ZOO=all).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_zoo_convert import check, convert
from tests.zoo import ENTRIES

REPRESENTATIVE = [
    "attention/vit_tiny",  # patch conv, cls token, two blocks with a GELU MLP between them
    "attention/mha_weights_per_head",  # need_weights: the per-head probabilities are an output
    "attention/mha_cross_kdim_vdim",  # two inputs, separate q / k / v projections
    "attention/hand_attention",  # separate Linear layers, view/transpose heads
    "shuffle/shufflenet_v1_g3",  # grouped 1x1 convs (the '0 Signatures' model) + view shuffle
    "shuffle/shufflenet_v1_g4_chunk",  # chunk + stack shuffle, 4 groups
]


@pytest.mark.parametrize("zoo_id", REPRESENTATIVE)
def test_converts_within_tolerance(zoo_id: str, tmp_path: Path) -> None:
    (entry,) = [e for e in ENTRIES if e.id == zoo_id]
    manifest, outdir = convert(entry.model, entry.source, tmp_path / entry.model.name)
    check(entry.model, manifest, outdir)
