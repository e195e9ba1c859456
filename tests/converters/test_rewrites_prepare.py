import numpy as np
from onnx import helper

from edgeport.converters.rewrites import prepare_for_onnx2tf
from tests.onnx_graphs import make_model


def gru_graph():
    rng = np.random.default_rng(0)
    consts = {
        "W": rng.standard_normal((1, 12, 5)).astype(np.float32),
        "R": rng.standard_normal((1, 12, 4)).astype(np.float32),
        "lens": np.array([3], np.int32),
    }
    node = helper.make_node("GRU", ["x", "W", "R", "", "lens"], ["y", "h"], hidden_size=4)
    return make_model([node], {"x": [7, 1, 5]}, ["h"], consts)


def test_recurrent_graphs_ask_onnx2tf_to_unroll():
    # Sequences shorter than the input (a padded batch) are left to onnx2tf by rnn_unroll: option needed.
    prepared = prepare_for_onnx2tf(gru_graph())
    assert prepared.onnx2tf_options == {"enable_rnn_unroll": True}
    assert prepared.applied == []


def test_graphs_without_a_pattern_come_back_unchanged_with_no_options():
    before = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [1, 3, 4, 4]}, ["y"])
    prepared = prepare_for_onnx2tf(before)
    assert prepared.applied == [] and prepared.onnx2tf_options == {}
    assert prepared.model.SerializeToString() == before.SerializeToString()


def test_prepare_never_modifies_its_input():
    from tests.converters.test_rewrites_channel_shuffle import shuffle_graph
    from tests.converters.test_rewrites_strided_shortcut import shortcut_graph

    for before in (gru_graph(), shortcut_graph(), shuffle_graph()):
        snapshot = before.SerializeToString()
        prepared = prepare_for_onnx2tf(before)
        assert before.SerializeToString() == snapshot
        assert prepared.model is not before


def test_every_rewrite_belongs_to_its_own_module() -> None:
    """`--list-passes` describes a rewrite by its module's docstring: a rewrite made by
    onnx_graph.node_rewrite must report the matcher's module, not onnx_graph."""
    from edgeport.converters.rewrites import REWRITES

    modules = [rewrite.__module__ for _, rewrite in REWRITES]
    assert all(m.startswith("edgeport.converters.rewrites.") for m in modules), modules
    assert len(set(modules)) == len(modules)
