"""Every model of the fast zoo prunes at 30 % of its MACs (without recovery: the shapes, the target
and the removal check are what is tested here), or is refused in one line saying why."""

from __future__ import annotations

import pytest
import torch

from edgeport.errors import EdgeportError
from edgeport.quant.prune import prune_module
from edgeport.tensors import TensorSpec
from tests.quant.prune_models import fast_options, one_torch_thread  # noqa: F401 (autouse fixture)
from tests.zoo import ENTRIES, ZooEntry

# Zoo id -> part of the one line each is refused with today.
REFUSED = {
    "core/gru": "nothing in this model can be pruned",
    "core/lstm": "nothing in this model can be pruned",
    # One layer before the output: no channels inside the model.
    "tensorops/pool_padding": "nothing in this model can be pruned",
    "tensorops/einsum": "nothing in this model can be pruned",
    # A GroupNorm normalizes over its group's channels: removing one changes the others (not pruned yet).
    "normact/groupnorm": "cannot follow this model: body.3",
    # Max and mean pools concatenated into the Linear: torch-pruning maps the Linear's columns wrong.
    "tensorops/global_pools": "cannot follow this model: conv",
    # Circular padding (a concat of time slices): torch-pruning's analysis does not end; stopped.
    "temporal/conv1d_circular": "does not finish for the channels of c1",
}
# The analysis limit for the model known not to finish (the default is 30 s a group).
SHORT_LIMIT = {"temporal/conv1d_circular": 3}
OPTIONS = fast_options(round_to=4, min_width=4)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.model.fast], ids=lambda e: e.id)
def test_zoo_model_prunes_30_percent(entry: ZooEntry, monkeypatch) -> None:
    from edgeport.quant.prune import graph

    if entry.id in SHORT_LIMIT:
        monkeypatch.setattr(graph, "GROUP_SECONDS", SHORT_LIMIT[entry.id])
    model = entry.model
    specs = [TensorSpec(f"input_{i}", shape) for i, shape in enumerate(model.input_shapes)]
    reference = model.build()
    if entry.id in REFUSED:
        with pytest.raises(EdgeportError, match=REFUSED[entry.id]) as err:
            prune_module(reference, specs, {}, OPTIONS)
        assert "\n" not in str(err.value)
        return
    result = prune_module(reference, specs, {}, OPTIONS)
    assert result.section.removed() >= 0.3
    inputs = model.example_inputs()
    with torch.no_grad():
        got, want = result.module(*inputs), reference(*inputs)
    got = got if isinstance(got, tuple) else (got,)
    want = want if isinstance(want, tuple) else (want,)
    assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in want]


def test_refusals_name_zoo_models() -> None:
    assert set(REFUSED) <= {e.id for e in ENTRIES if e.model.fast}
