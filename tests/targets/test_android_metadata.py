"""TFLite metadata written by edgeport (targets/android/metadata.py): round trip through its own reader,
through tflite-support's (installed for tests only, --no-deps), LiteRT still runs the model, labels
packed as the zip the schema's populator appends."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.runtimes.litert import interpreter
from edgeport.targets.android import metadata as md
from edgeport.tflite_file import parse_tflite
from tests.targets.synth import mobilenet_stem_model

LABELS = b"cat\ndog\n"


def _meta(**changes) -> md.ModelMetadata:
    meta = md.ModelMetadata(
        name="stem",
        description="a test model",
        version="3",
        author="edgeport tests",
        license="Apache-2.0",
        inputs=[
            md.TensorMetadata(
                name="image",
                description="the image",
                dimension_names=["batch", "height", "width", "channels"],
                image=md.ImageProperties(color_space="RGB", width=32, height=24),
                normalization=md.Normalization(mean=[123.5, 116.25, 103.5], std=[58.5, 57.0, 57.5]),
                value_min=[-2.25, -2.0, -1.75],
                value_max=[2.25, 2.5, 2.75],
            )
        ],
        outputs=[
            md.TensorMetadata(
                name="scores",
                associated_files=[md.AssociatedFile(name="labels.txt", description="class names")],
            )
        ],
    )
    return meta.model_copy(update=changes)


@pytest.fixture(scope="module")
def model() -> bytes:
    return mobilenet_stem_model()


def test_encode_decode_round_trip():
    meta = _meta()
    data = md.encode(meta)
    assert data[4:8] == b"M001"
    assert md.decode(data) == meta


def test_empty_fields_round_trip():
    meta = md.ModelMetadata(
        name="m", inputs=[md.TensorMetadata(name="x")], outputs=[md.TensorMetadata(name="y")]
    )
    assert md.decode(md.encode(meta)) == meta


def test_embedded_metadata_and_labels_read_back(model):
    meta = _meta()
    data = md.embed(model, meta, {"labels.txt": LABELS})
    assert md.read_metadata(data) == meta
    assert md.associated_files(data) == {"labels.txt": LABELS}
    # The flatbuffer at the start is a valid model LiteRT runs; the zip after it is ignored.
    interp = interpreter(data)
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
    interp.invoke()
    entries = [e.name for e in parse_tflite(data).raw.metadata]
    assert entries.count(b"TFLITE_METADATA") == 1


def test_embedding_again_replaces_metadata_and_files(model):
    first = md.embed(model, _meta(), {"labels.txt": LABELS})
    meta = _meta(name="renamed", outputs=[md.TensorMetadata(name="scores")])
    second = md.embed(first, meta)
    assert md.read_metadata(second) == meta
    assert md.associated_files(second) == {}
    raw = parse_tflite(second).raw
    assert [e.name for e in raw.metadata].count(b"TFLITE_METADATA") == 1
    # The old metadata's buffer was reused, not left behind.
    assert len(raw.buffers) == len(parse_tflite(first).raw.buffers)


def test_files_must_match_the_metadata(model):
    with pytest.raises(ValueError, match="differ"):
        md.embed(model, _meta(), {})


def test_model_without_metadata_reads_none(model):
    assert md.read_metadata(model) is None
    assert md.associated_files(model) == {}


def test_unreadable_metadata_is_one_line(model):
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    from edgeport.tflite_file import edit_tflite, serialize_tflite

    raw = edit_tflite(model)
    buffer = schema.BufferT()
    buffer.data = list(b"\x00" * 12)
    raw.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(raw.buffers) - 1
    raw.metadata = [*(raw.metadata or []), entry]
    with pytest.raises(EdgeportError, match="metadata edgeport cannot read") as err:
        md.read_metadata(serialize_tflite(raw), "bad.tflite")
    assert "\n" not in str(err.value)


def test_independent_reader_sees_the_same_content(model):
    """tflite-support's MetadataDisplayer (its generated schema and flatc's JSON printer) reads what
    edgeport wrote. Installed for tests only: pip install --no-deps tflite-support==0.4.4."""
    metadata = pytest.importorskip("tensorflow_lite_support.metadata.python.metadata")
    data = md.embed(model, _meta(), {"labels.txt": LABELS})
    shown = metadata.MetadataDisplayer.with_model_buffer(data)
    doc = json.loads(shown.get_metadata_json())
    assert (doc["name"], doc["version"], doc["author"], doc["license"]) == (
        "stem",
        "3",
        "edgeport tests",
        "Apache-2.0",
    )
    assert doc["min_parser_version"] == md.MIN_PARSER_VERSION
    (tensor,) = doc["subgraph_metadata"][0]["input_tensor_metadata"]
    assert tensor["content"]["content_properties_type"] == "ImageProperties"
    assert tensor["content"]["content_properties"]["color_space"] == "RGB"
    assert tensor["content"]["content_properties"]["default_size"] == {"width": 32, "height": 24}
    unit = tensor["process_units"][0]
    assert unit["options_type"] == "NormalizationOptions"
    assert unit["options"]["mean"] == [123.5, 116.25, 103.5]
    assert unit["options"]["std"] == [58.5, 57.0, 57.5]
    assert tensor["stats"] == {"max": [2.25, 2.5, 2.75], "min": [-2.25, -2.0, -1.75]}
    (out,) = doc["subgraph_metadata"][0]["output_tensor_metadata"]
    assert out["associated_files"] == [
        {"name": "labels.txt", "description": "class names", "type": "TENSOR_AXIS_LABELS"}
    ]
    assert shown.get_packed_associated_file_list() == ["labels.txt"]
    assert shown.get_associated_file_buffer("labels.txt") == LABELS
    # The generated schema module reads the same tables (an independent decoder of the flatbuffer).
    schema = pytest.importorskip("tensorflow_lite_support.metadata.metadata_schema_py_generated")
    buf = md.metadata_buffer(data)
    assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buf, 0)
    root = schema.ModelMetadataT.InitFromObj(schema.ModelMetadata.GetRootAsModelMetadata(buf, 0))
    assert root.subgraphMetadata[0].inputTensorMetadata[0].name == b"image"


def test_labels_zip_is_stored_after_the_flatbuffer(model):
    data = md.embed(model, _meta(), {"labels.txt": LABELS})
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (info,) = archive.infolist()
    assert info.compress_type == zipfile.ZIP_STORED
    # Everything before the zip is the model with its metadata.
    assert md.read_metadata(data[: info.header_offset]) == _meta()
