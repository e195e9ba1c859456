"""Stage cache: content keys and atomic entries."""

from __future__ import annotations

from pathlib import Path

from edgeport.pipeline.state import ConvertOptions
from edgeport.run.cache import StageCache, digest, file_digest
from edgeport.run.execute import convert_key

TOOLS = {"onnx2tf": "1", "edgeport-code": "abc"}


def options(source: Path, **more) -> ConvertOptions:
    return ConvertOptions(source=f"{source}:build", outdir=Path("out"), input_shapes=[[1, 4]], **more)


def test_digest_ignores_key_order():
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1}) != digest({"a": 2, "b": [1, 2]})


def test_file_digest_of_a_directory_covers_names_and_bytes(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x").write_bytes(b"1")
    first = file_digest(tmp_path / "d")
    (tmp_path / "d" / "x").rename(tmp_path / "d" / "y")
    assert file_digest(tmp_path / "d") != first


def test_convert_key_follows_content_options_and_tools_not_location(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    (a / "m.py").write_text("x = 1\n")
    (b / "m.py").write_text("x = 1\n")
    key = convert_key(options(a / "m.py"), TOOLS)
    assert convert_key(options(b / "m.py"), TOOLS) == key  # same bytes elsewhere: same key
    assert convert_key(options(a / "m.py", opset=13), TOOLS) != key
    assert convert_key(options(a / "m.py"), {**TOOLS, "edgeport-code": "abd"}) != key
    # outdir and --force say where and how to write, not what: same key.
    assert (
        convert_key(options(a / "m.py").model_copy(update={"outdir": Path("x"), "force": True}), TOOLS) == key
    )
    (a / "m.py").write_text("x = 2\n")
    assert convert_key(options(a / "m.py"), TOOLS) != key


def test_store_then_fetch_copies_the_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"\x00\x01")
    cache = StageCache(tmp_path / "cache")
    assert not cache.fetch("convert", "k1", tmp_path / "miss")
    cache.store("convert", "k1", out)
    cache.store("convert", "k1", out)  # again (another worker, or --no-cache): replaced, not nested
    assert cache.fetch("convert", "k1", tmp_path / "hit")
    assert (tmp_path / "hit" / "model.tflite").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "cache" / "convert").iterdir()) == ["k1"]
    # --no-cache: nothing is read, entries are still refreshed.
    assert not StageCache(tmp_path / "cache", read=False).fetch("convert", "k1", tmp_path / "again")
    assert not StageCache(None).fetch("convert", "k1", tmp_path / "none")
