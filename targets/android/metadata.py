"""TFLite model metadata, written and read by edgeport against the metadata flatbuffer schema.

The schema is tflite-support's `metadata_schema.fbs` (file identifier "M001", schema 1.5.0): a
`ModelMetadata` flatbuffer stored in one of the model's buffers and named "TFLITE_METADATA" in the
model's metadata list; associated files (a classifier's labels) are appended to the .tflite as a zip
archive, which leaves the flatbuffer at the start of the file untouched. tflite-support's writer
library pins protobuf < 4 and cannot be installed next to TensorFlow, so the tables are built here with
the `flatbuffers` package: each table's fields are numbered by their order in the schema, a union
taking two slots (its type, then its value).

The same content is described by `ModelMetadata` (a pydantic model), which is also the JSON sidecar.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import flatbuffers
from flatbuffers import number_types
from flatbuffers.table import Table
from pydantic import BaseModel, ConfigDict, Field

from edgeport.errors import EdgeportError
from edgeport.tflite_file import edit_tflite, flatbuffer_text, parse_tflite, schema, serialize_tflite

METADATA_NAME = "TFLITE_METADATA"  # the entry in the model's metadata list that tflite-support reads
FILE_IDENTIFIER = b"M001"
# Every table, field and enum value edgeport writes exists since the schema's first release (its
# history starts adding fields at 1.0.1), so any metadata parser reads all of it.
MIN_PARSER_VERSION = "1.0.0"

# Enum values of the schema.
COLOR_SPACES = {"UNKNOWN": 0, "RGB": 1, "GRAYSCALE": 2}
FILE_TYPES = {
    "UNKNOWN": 0,
    "DESCRIPTIONS": 1,
    "TENSOR_AXIS_LABELS": 2,
    "TENSOR_VALUE_LABELS": 3,
    "TENSOR_AXIS_SCORE_CALIBRATION": 4,
    "VOCABULARY": 5,
    "SCANN_INDEX_FILE": 6,
}
# Union member numbers: ContentProperties and ProcessUnitOptions.
FEATURE_PROPERTIES, IMAGE_PROPERTIES = 1, 2
NORMALIZATION_OPTIONS = 1

ColorSpace = Literal["UNKNOWN", "RGB", "GRAYSCALE"]
FileType = Literal[
    "UNKNOWN",
    "DESCRIPTIONS",
    "TENSOR_AXIS_LABELS",
    "TENSOR_VALUE_LABELS",
    "TENSOR_AXIS_SCORE_CALIBRATION",
    "VOCABULARY",
    "SCANN_INDEX_FILE",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ImageProperties(_Strict):
    color_space: ColorSpace
    width: int | None = None
    height: int | None = None


class Normalization(_Strict):
    """(x - mean) / std per channel (one value: every channel), applied before the model."""

    mean: list[float]
    std: list[float]


class AssociatedFile(_Strict):
    name: str
    description: str = ""
    type: FileType = "TENSOR_AXIS_LABELS"


class TensorMetadata(_Strict):
    name: str
    description: str = ""
    dimension_names: list[str] = Field(default_factory=list)  # the layout: ["batch", "height", ...]
    image: ImageProperties | None = None  # None: a feature tensor
    normalization: Normalization | None = None
    # The Stats table: the tensor's value range as the model sees it (after normalisation), one value or
    # one per channel.
    value_min: list[float] = Field(default_factory=list)
    value_max: list[float] = Field(default_factory=list)
    associated_files: list[AssociatedFile] = Field(default_factory=list)


class ModelMetadata(_Strict):
    name: str
    description: str = ""
    version: str = ""
    author: str = ""
    license: str = ""
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    min_parser_version: str = MIN_PARSER_VERSION

    def file_names(self) -> list[str]:
        return [f.name for t in self.inputs + self.outputs for f in t.associated_files]


# --- writing -----------------------------------------------------------------------------------


def _string(b: flatbuffers.Builder, text: str) -> int | None:
    return b.CreateString(text) if text else None


def _offsets(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _floats(b: flatbuffers.Builder, values: Sequence[float]) -> int:
    b.StartVector(4, len(values), 4)
    for value in reversed(values):
        b.PrependFloat32(float(value))
    return b.EndVector()


def _object(
    b: flatbuffers.Builder,
    slots: int,
    refs: Mapping[int, int | None] = {},  # noqa: B006 - read only
    bytes_: Mapping[int, int] = {},  # noqa: B006
    uints: Mapping[int, int | None] = {},  # noqa: B006
) -> int:
    """A table of `slots` fields: offsets of objects built before it, byte enums, uint32 values."""
    b.StartObject(slots)
    for slot, offset in refs.items():
        if offset is not None:
            b.PrependUOffsetTRelativeSlot(slot, offset, 0)
    for slot, value in uints.items():
        if value is not None:
            b.PrependUint32Slot(slot, value, 0)
    for slot, value in bytes_.items():
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _associated_file(b: flatbuffers.Builder, file: AssociatedFile) -> int:
    # AssociatedFile: name, description, type, locale, version.
    name, description = _string(b, file.name), _string(b, file.description)
    return _object(b, 5, refs={0: name, 1: description}, bytes_={2: FILE_TYPES[file.type]})


def _tensor(b: flatbuffers.Builder, tensor: TensorMetadata) -> int:
    name, description = _string(b, tensor.name), _string(b, tensor.description)
    dims = None
    if tensor.dimension_names:
        dims = _offsets(b, [b.CreateString(d) for d in tensor.dimension_names])
    # Content: content_properties (union: type slot 0, value slot 1), range.
    if tensor.image is not None:
        image = tensor.image
        size = None
        if image.width is not None and image.height is not None:
            size = _object(b, 2, uints={0: image.width, 1: image.height})  # ImageSize: width, height
        # ImageProperties: color_space, default_size.
        props = _object(b, 2, refs={1: size}, bytes_={0: COLOR_SPACES[image.color_space]})
        kind = IMAGE_PROPERTIES
    else:
        props, kind = _object(b, 0), FEATURE_PROPERTIES
    content = _object(b, 3, refs={1: props}, bytes_={0: kind})
    units = None
    if tensor.normalization is not None:
        # NormalizationOptions: mean, std; ProcessUnit: options (union: type slot 0, value slot 1).
        mean, std = _floats(b, tensor.normalization.mean), _floats(b, tensor.normalization.std)
        options = _object(b, 2, refs={0: mean, 1: std})
        units = _offsets(b, [_object(b, 2, refs={1: options}, bytes_={0: NORMALIZATION_OPTIONS})])
    stats = None
    if tensor.value_min or tensor.value_max:
        high, low = _floats(b, tensor.value_max), _floats(b, tensor.value_min)
        stats = _object(b, 2, refs={0: high, 1: low})  # Stats: max, min
    files = None
    if tensor.associated_files:
        files = _offsets(b, [_associated_file(b, f) for f in tensor.associated_files])
    # TensorMetadata: name, description, dimension_names, content, process_units, stats, associated_files.
    return _object(b, 7, refs={0: name, 1: description, 2: dims, 3: content, 4: units, 5: stats, 6: files})


def encode(meta: ModelMetadata) -> bytes:
    """The ModelMetadata flatbuffer (file identifier M001)."""
    b = flatbuffers.Builder(1024)
    inputs = _offsets(b, [_tensor(b, t) for t in meta.inputs])
    outputs = _offsets(b, [_tensor(b, t) for t in meta.outputs])
    # SubGraphMetadata: name, description, input_tensor_metadata, output_tensor_metadata, ... (10 fields).
    subgraph = _object(b, 10, refs={2: inputs, 3: outputs})
    subgraphs = _offsets(b, [subgraph])
    fields = [meta.name, meta.description, meta.version, meta.author, meta.license, meta.min_parser_version]
    name, description, version, author, license_, parser = (_string(b, text) for text in fields)
    # ModelMetadata: name, description, version, subgraph_metadata, author, license, associated_files,
    # min_parser_version.
    root = _object(
        b, 8, refs={0: name, 1: description, 2: version, 3: subgraphs, 4: author, 5: license_, 7: parser}
    )
    b.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def embed(model: bytes, meta: ModelMetadata, files: Mapping[str, bytes] = {}) -> bytes:  # noqa: B006
    """`model` with `meta` as its TFLITE_METADATA (replacing any) and `files` appended as a zip.

    The names in `files` must be exactly the associated files `meta` lists."""
    if sorted(files) != sorted(meta.file_names()):
        raise ValueError(f"files {sorted(files)} differ from the metadata's {sorted(meta.file_names())}")
    raw = edit_tflite(model)  # the flatbuffer only: an earlier zip is dropped
    buffer = schema.BufferT()
    buffer.data = list(encode(meta))
    entries = [m for m in raw.metadata or [] if flatbuffer_text(m.name) != METADATA_NAME]
    raw.buffers = raw.buffers or []
    old = [m.buffer for m in raw.metadata or [] if flatbuffer_text(m.name) == METADATA_NAME]
    if old:  # reuse the old metadata's buffer, so no buffer is left unreferenced
        raw.buffers[old[0]] = buffer
        index = old[0]
    else:
        raw.buffers.append(buffer)
        index = len(raw.buffers) - 1
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, index
    raw.metadata = [*entries, entry]
    data = serialize_tflite(raw)
    if not files:
        return data
    out = io.BytesIO(data)
    out.seek(0, io.SEEK_END)
    # What tflite-support's populator does: zipfile in append mode after the flatbuffer, stored.
    with zipfile.ZipFile(out, "a") as archive:
        for name in sorted(files):
            archive.writestr(name, files[name])
    return out.getvalue()


# --- reading -----------------------------------------------------------------------------------


class _Reader:
    """Fields of one table by slot number (the generated readers do the same, one method per field)."""

    def __init__(self, table: Table) -> None:
        self.t = table

    def _at(self, slot: int) -> int:
        offset = self.t.Offset(4 + 2 * slot)
        return self.t.Pos + offset if offset else 0

    def string(self, slot: int) -> str:
        at = self._at(slot)
        return self.t.String(at).decode() if at else ""

    def scalar(self, slot: int, flags: Any) -> int:
        at = self._at(slot)
        return self.t.Get(flags, at) if at else 0

    def _vector(self, slot: int) -> tuple[int, int]:
        offset = self.t.Offset(4 + 2 * slot)
        return (self.t.Vector(offset), self.t.VectorLen(offset)) if offset else (0, 0)

    def table(self, slot: int) -> _Reader | None:
        at = self._at(slot)
        return _Reader(Table(self.t.Bytes, self.t.Indirect(at))) if at else None

    def tables(self, slot: int) -> list[_Reader]:
        start, n = self._vector(slot)
        return [_Reader(Table(self.t.Bytes, self.t.Indirect(start + 4 * i))) for i in range(n)]

    def strings(self, slot: int) -> list[str]:
        start, n = self._vector(slot)
        return [self.t.String(start + 4 * i).decode() for i in range(n)]

    def floats(self, slot: int) -> list[float]:
        start, n = self._vector(slot)
        return [float(self.t.Get(number_types.Float32Flags, start + 4 * i)) for i in range(n)]

    def union(self, slot: int) -> _Reader | None:
        offset = self.t.Offset(4 + 2 * slot)
        if not offset:
            return None
        value = Table(bytearray(), 0)
        self.t.Union(value, offset)
        return _Reader(value)


def _named(table: dict[str, int], value: int, what: str) -> str:
    for name, number in table.items():
        if number == value:
            return name
    raise ValueError(f"unknown {what} {value}")


def _read_tensor(r: _Reader) -> TensorMetadata:
    image = None
    content = r.table(3)
    if content is not None and content.scalar(0, number_types.Uint8Flags) == IMAGE_PROPERTIES:
        props = content.union(1)
        if props is not None:
            size = props.table(1)
            image = ImageProperties(
                color_space=_named(COLOR_SPACES, props.scalar(0, number_types.Int8Flags), "color space"),
                width=size.scalar(0, number_types.Uint32Flags) if size else None,
                height=size.scalar(1, number_types.Uint32Flags) if size else None,
            )
    normalization = None
    for unit in r.tables(4):
        if unit.scalar(0, number_types.Uint8Flags) == NORMALIZATION_OPTIONS:
            options = unit.union(1)
            if options is not None:
                normalization = Normalization(mean=options.floats(0), std=options.floats(1))
    stats = r.table(5)
    files = [
        AssociatedFile(
            name=f.string(0),
            description=f.string(1),
            type=_named(FILE_TYPES, f.scalar(2, number_types.Int8Flags), "associated file type"),  # type: ignore[arg-type]
        )
        for f in r.tables(6)
    ]
    return TensorMetadata(
        name=r.string(0),
        description=r.string(1),
        dimension_names=r.strings(2),
        image=image,
        normalization=normalization,
        value_min=stats.floats(1) if stats else [],
        value_max=stats.floats(0) if stats else [],
        associated_files=files,
    )


def decode(data: bytes) -> ModelMetadata:
    """A ModelMetadata flatbuffer read back (the first subgraph's tensors)."""
    if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
        raise ValueError("not a TFLite metadata flatbuffer (no M001 identifier)")
    buf = bytearray(data)
    root = _Reader(Table(buf, flatbuffers.encode.Get(number_types.UOffsetTFlags.packer_type, buf, 0)))
    subgraphs = root.tables(3)
    main = subgraphs[0] if subgraphs else None
    return ModelMetadata(
        name=root.string(0),
        description=root.string(1),
        version=root.string(2),
        author=root.string(4),
        license=root.string(5),
        inputs=[_read_tensor(t) for t in main.tables(2)] if main else [],
        outputs=[_read_tensor(t) for t in main.tables(3)] if main else [],
        min_parser_version=root.string(7),
    )


def metadata_buffer(model: bytes) -> bytes | None:
    """The raw TFLITE_METADATA flatbuffer of a .tflite, None when it has none."""
    raw = parse_tflite(model).raw
    for entry in raw.metadata or []:
        if flatbuffer_text(entry.name) == METADATA_NAME:
            data = raw.buffers[entry.buffer].data
            return bytes(bytearray(data)) if data is not None else None
    return None


def associated_files(model: bytes) -> dict[str, bytes]:
    """The files packed after the flatbuffer (name -> content); {} when there are none."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}


def read_metadata(model: bytes, where: str = "<bytes>") -> ModelMetadata | None:
    """The metadata of a .tflite, None when it has none; unreadable metadata is a one-line error."""
    data = metadata_buffer(model)
    if data is None:
        return None
    try:
        return decode(data)
    except Exception as exc:  # noqa: BLE001 - any failure means the same: metadata this reader cannot read
        raise EdgeportError(
            f"{where} has TFLite metadata edgeport cannot read ({exc})",
            "re-run `edgeport package --target android` on the float model",
        ) from exc
