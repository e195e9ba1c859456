"""Android as a registered target: its package options and runners (see targets/base.py).

Kept light to import (the CLI makes its flags from the options): the packager, TensorFlow and LiteRT load
only when a package is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from edgeport.errors import EdgeportError
from edgeport.options import cli, parse_floats, spell_of
from edgeport.targets.base import Packaged, TargetBoard

# The variants, in the order they are made and listed (targets/android/variants.py makes them).
VARIANT_NAMES = ("float32", "float16", "dynamic", "int8_float_io", "int8", "w4a8")


class AndroidOptions(BaseModel):
    """`edgeport package --target android` options; each field is a flag."""

    model_config = ConfigDict(extra="forbid")

    labels: list[str] = Field(
        default_factory=list,
        description="Labels file, one label per line, attached to every variant as TFLite metadata "
        "(TENSOR_AXIS_LABELS): FILE for the classifier output (the first [batch, classes] output), "
        "OUTPUT=FILE for a named output; repeat it for several outputs.",
        json_schema_extra=cli(text=True, multiple=True, metavar="[OUTPUT=]FILE"),
    )
    mean: list[float] | None = Field(
        None,
        description="Normalisation of the first input, (x - mean) / std, written into the metadata: one "
        "number or one per channel, e.g. 127.5 or 123.7,116.3,103.5.",
        json_schema_extra=cli(text=True),
    )
    std: list[float] | None = Field(
        None,
        description="Normalisation std of the first input (see --mean).",
        json_schema_extra=cli(text=True),
    )
    input_range: tuple[float, float] | None = Field(
        None,
        description="Range of the first input's raw values before normalisation, lo,hi (e.g. 0,255), "
        "written into the metadata.",
        json_schema_extra=cli(text=True),
    )
    model_name: str | None = Field(
        None, description="Model name in the metadata (default: the source's name)."
    )
    description: str = Field(
        "", description="Model description in the metadata.", json_schema_extra=cli(show_default=False)
    )
    model_version: str = Field(
        "", description="Model version in the metadata.", json_schema_extra=cli(show_default=False)
    )
    author: str = Field("", description="Author in the metadata.", json_schema_extra=cli(show_default=False))
    license: str = Field(
        "", description="License in the metadata.", json_schema_extra=cli(show_default=False)
    )
    variants: list[str] = Field(
        list(VARIANT_NAMES),
        description="Variants to build, comma-separated: " + ", ".join(VARIANT_NAMES) + ".",
        json_schema_extra=cli(text=True, show_default=False),
    )
    skip_unavailable: bool = Field(
        False,
        description="Package the variants that can be made and list the others in the manifest, instead of "
        "failing.",
    )
    calibration: Path | None = Field(
        None, description="Real calibration samples (.npy, .npz or a dir) for the int8 variants."
    )
    bundle: bool = Field(
        True,
        description="Write android/, a Gradle module with the variants and labels as assets and a Kotlin "
        "wrapper class (--no-bundle: the model files only).",
    )
    latency: bool = Field(
        True,
        description="Time every variant once in LiteRT on this machine (one thread, XNNPACK, interleaved "
        "runs) for the READMEs and edgeport.json's run block (--no-latency: skip it, e.g. in CI or when "
        "this machine is not the one whose timings matter).",
    )

    @field_validator("labels", mode="before")
    @classmethod
    def _label_files(cls, value: Any) -> Any:
        """One file (a str or Path, as Python callers pass it) or several."""
        if isinstance(value, (str, Path)):
            return [str(value)]
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else value

    @field_validator("mean", "std", mode="before")
    @classmethod
    def _numbers(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            return parse_floats(value, spell_of(info, cls)(str(info.field_name)))
        return value

    @field_validator("input_range", mode="before")
    @classmethod
    def _range(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):
            low, high = parse_floats(value, spell_of(info, cls)("input_range"), 2)
            if not low < high:
                raise EdgeportError(
                    f"{spell_of(info, cls)('input_range')} {value!r} is empty",
                    "write it as lo,hi with lo < hi",
                )
            return (low, high)
        return value

    @field_validator("variants", mode="before")
    @classmethod
    def _variant_names(cls, value: Any, info: ValidationInfo) -> Any:
        names = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value
        unknown = [n for n in names if n not in VARIANT_NAMES]
        if unknown or not names:
            raise EdgeportError(
                f"{spell_of(info, cls)('variants')} {value!r} names no known variant"
                + (f" ({unknown[0]!r})" if unknown else ""),
                f"use some of {', '.join(VARIANT_NAMES)}, comma-separated",
            )
        return names


class AndroidTarget:
    name = "android"
    title = "Android phones, LiteRT (CPU/XNNPACK, GPU, NNAPI)"
    options = AndroidOptions
    # LiteRT on this host: the same CPU kernels an Android CPU runs (the device runs over adb in
    # `edgeport bench`, targets/android/bench_adb.py).
    runners = ("litert",)

    def boards(self) -> Sequence[TargetBoard]:
        return ()

    def supported_ops(self) -> dict[str, list[str]]:
        from edgeport.tflite_file import schema

        builtins = [n for n in vars(schema.BuiltinOperator) if not n.startswith("_") and n != "CUSTOM"]
        return {"builtin": sorted(builtins), "custom": []}

    def package(
        self, model: Path, outdir: Path, options: BaseModel, *, force: bool = False, command: str = ""
    ) -> Packaged:
        from edgeport.targets.android.packager import package

        if not isinstance(options, AndroidOptions):
            raise TypeError(f"android takes AndroidOptions, not {type(options).__name__}")
        return package(model, outdir, options, force=force, command=command)


TARGET = AndroidTarget()
