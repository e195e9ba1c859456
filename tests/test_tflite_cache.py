"""parse_tflite parses each model once per process; what callers get back cannot change another's parse."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport import tflite_file
from edgeport.errors import EdgeportError
from edgeport.tflite_file import edit_tflite, parse_tflite, serialize_tflite
from tests.targets.synth import mobilenet_stem_model


@pytest.fixture
def model() -> bytes:
    return mobilenet_stem_model()


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """An empty cache, and the length of every model the schema parser was handed."""
    monkeypatch.setattr(tflite_file, "_cache", type(tflite_file._cache)())
    seen: list[int] = []
    real = tflite_file.schema.ModelT.InitFromPackedBuf

    def counted(data: bytes, offset: int = 0) -> object:
        seen.append(len(data))
        return real(data, offset)

    monkeypatch.setattr(tflite_file.schema.ModelT, "InitFromPackedBuf", staticmethod(counted))
    return seen


def _unchanged(model: bytes) -> bool:
    """The shared tree of `model` still serializes like a fresh parse of its bytes."""
    return serialize_tflite(parse_tflite(model).raw) == serialize_tflite(edit_tflite(model))


def test_same_bytes_parse_once_under_each_callers_path(model: bytes, parses: list[int]) -> None:
    first = parse_tflite(model, "a.tflite")
    second = parse_tflite(bytearray(model), Path("b.tflite"))
    assert parses == [len(model)]
    assert second.raw is first.raw
    assert (first.path, second.path) == (Path("a.tflite"), Path("b.tflite"))
    assert second.op_counts == first.op_counts and second.inputs == first.inputs


def test_the_lists_returned_are_each_callers_own(model: bytes, parses: list[int]) -> None:
    first = parse_tflite(model)
    first.ops.append("EXTRA")
    first.inputs[0].name = "renamed"
    first.op_versions.clear()
    second = parse_tflite(model)
    assert "EXTRA" not in second.ops and second.inputs[0].name != "renamed" and second.op_versions


def test_edit_tflite_gives_a_tree_of_its_own(model: bytes, parses: list[int]) -> None:
    shared = parse_tflite(model).raw
    edited = edit_tflite(model)
    assert edited is not shared and edit_tflite(model) is not edited
    edited.subgraphs[0].tensors[0].name = b"changed"
    edited.buffers.append(tflite_file.schema.BufferT())
    assert _unchanged(model)


def test_callers_that_rewrite_a_model_leave_the_shared_parse_alone(model: bytes, parses: list[int]) -> None:
    from edgeport.targets.android import metadata as md
    from edgeport.targets.android.signature import with_signature

    parse_tflite(model)  # in the cache before each rewrite
    signed = with_signature(model)
    assert signed != model and parse_tflite(signed).raw.signatureDefs
    meta = md.ModelMetadata(name="stem", inputs=[md.TensorMetadata(name="x")], outputs=[])
    meta = meta.model_copy(update={"outputs": [md.TensorMetadata(name="y")]})
    assert md.read_metadata(md.embed(model, meta)) is not None
    assert md.read_metadata(model) is None
    assert _unchanged(model)


def _variant(model: bytes, description: bytes) -> bytes:
    raw = edit_tflite(model)
    raw.description = description
    return serialize_tflite(raw)


def test_the_cache_keeps_the_most_recently_used_within_count_and_size(
    model: bytes, parses: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = (_variant(model, name) for name in (b"a", b"b", b"c"))
    monkeypatch.setattr(tflite_file, "_CACHE_ENTRIES", 2)
    for data in (a, b, a, c):  # a used again before c comes: b is the one to go
        parse_tflite(data)
    assert len(parses) == 3 + 3  # three parses to build the variants, three here
    parses.clear()
    parse_tflite(a)
    parse_tflite(c)
    assert parses == []
    parse_tflite(b)
    assert parses == [len(b)] and len(tflite_file._cache) == 2
    monkeypatch.setattr(tflite_file, "_CACHE_BYTES", len(a) + len(b) - 1)
    parse_tflite(a)
    assert parses == [len(b), len(a)] and len(tflite_file._cache) == 1  # over the size: the newest stays


def test_bad_bytes_are_refused_every_time(parses: list[int]) -> None:
    for _ in range(2):
        with pytest.raises(EdgeportError, match="not a TFLite flatbuffer"):
            parse_tflite(b"\0" * 64, "x.tflite")
    assert tflite_file._cache == {}
