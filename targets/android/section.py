"""The `android` section of edgeport.json as typed fields: written by the packager, read back by any
report (and later the app bundle) as attributes."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from edgeport.manifest import Record, Section
from edgeport.targets.android.delegates import DelegateReport
from edgeport.targets.android.latency import VariantLatency
from edgeport.targets.android.metadata import ModelMetadata
from edgeport.targets.android.variants import VariantCheck


class VariantEntry(Record):
    name: str  # float32, float16, dynamic, int8_float_io, int8, w4a8
    file: str
    purpose: str  # which delegate / device to ship it for
    made_by: str  # where it came from
    size_bytes: int
    ops: int
    op_counts: dict[str, int]
    input_types: list[str]
    output_types: list[str]
    check: VariantCheck  # against float32 on the same inputs
    delegates: DelegateReport  # what XNNPACK and the GPU delegate take, whether integer-only (NPU-ready)
    # Host LiteRT timing for the READMEs, never written into the section: it differs between runs and goes
    # to the manifest's run block (latency.py). None: not measured (--no-latency).
    latency: VariantLatency | None = Field(None, exclude=True)


class SkippedVariant(Record):
    name: str
    reason: str


class Signature(Record):
    key: str
    inputs: list[str]
    outputs: list[str]


class AndroidSection(Section):
    NAME: ClassVar[str] = "android"
    WRITTEN_BY: ClassVar[str] = "edgeport package --target android"

    model: str  # the convert output directory or .tflite packaged (name)
    source_kind: str  # "convert output" or "tflite"
    variants: list[VariantEntry]
    skipped: list[SkippedVariant] = Field(default_factory=list)
    signature: Signature
    metadata: ModelMetadata  # embedded in every variant (TFLITE_METADATA) and in metadata.json
    metadata_file: str
    labels_files: dict[str, str] = Field(default_factory=dict)  # output (signature key) -> its labels file
    bundle: str | None = None  # the Android module's directory (targets/android/bundle.py), None: --no-bundle
    notes: list[str] = Field(default_factory=list)
