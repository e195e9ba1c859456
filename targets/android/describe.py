"""What the metadata says about a model: built from its tensors and the package options, checked first.

Everything here runs before any variant is made, so a labels file of the wrong length or a mean with
the wrong number of channels costs nothing. Tensors are named by their signature keys (what an app's
signature runner uses) and listed in the model's own input/output order (`for_model`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.targets.android.metadata import (
    AssociatedFile,
    ImageProperties,
    ModelMetadata,
    Normalization,
    TensorMetadata,
)
from edgeport.targets.android.target import AndroidOptions
from edgeport.tensors import TensorSpec

COLOR_SPACES = {3: "RGB", 1: "GRAYSCALE"}
LABELS_FILE = "labels.txt"  # the associated file's name inside every variant and in OUTDIR


def model_shape(spec: TensorSpec) -> list[int]:
    """The tensor's shape as the .tflite holds it."""
    if spec.channels_last and len(spec.shape) >= 3:
        return [spec.shape[0], *spec.shape[2:], spec.shape[1]]
    return list(spec.shape)


def channel_axis(spec: TensorSpec, keep_nchw: bool) -> int:
    """The channel axis in the .tflite: last when channels-last (or not an image), 1 for kept NCHW."""
    return 1 if keep_nchw and len(spec.shape) == 4 and not spec.channels_last else -1


def is_image(spec: TensorSpec, keep_nchw: bool) -> bool:
    """A 4-D float input with 1 or 3 channels."""
    shape = model_shape(spec)
    kind = np.dtype(spec.dtype).kind
    return len(shape) == 4 and kind == "f" and shape[channel_axis(spec, keep_nchw)] in COLOR_SPACES


def dimension_names(spec: TensorSpec, keep_nchw: bool) -> list[str]:
    rank = len(spec.shape)
    if rank == 4:
        nchw = channel_axis(spec, keep_nchw) == 1
        return ["batch", "channels", "height", "width"] if nchw else ["batch", "height", "width", "channels"]
    if rank == 3 and spec.channels_last:
        return ["batch", "width", "channels"]
    return []


def read_labels(path: Path, flag: str) -> list[str]:
    """The labels, one per non-empty line; a missing or empty file is a one-line error."""
    if path.is_dir():
        raise EdgeportError(f"{flag} {path} is a directory", "give the labels file in it, one label per line")
    if not path.is_file():
        raise EdgeportError(f"{flag} file {path} does not exist", "check the path")
    try:
        labels = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise EdgeportError(f"{flag} file {path} is not UTF-8 text", "give one label per line") from exc
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise EdgeportError(f"{flag} file {path} has no labels", "give one label per line")
    return labels


def labelled_output(outputs: Sequence[TensorSpec]) -> TensorSpec:
    """The output a plain `--labels FILE` names: the first [batch, classes] output, else the first output."""
    return next((s for s in outputs if len(s.shape) == 2), outputs[0])


def check_labels(labels: Sequence[str], out: TensorSpec, key: str, what: str) -> None:
    """One label per element of the output's last axis (its classes)."""
    size = model_shape(out)[-1] if out.shape else 1
    if len(labels) != size:
        raise EdgeportError(
            f"{what} has {len(labels)} labels but output {key!r} has {size} classes (shape {out.shape})",
            f"give one label per line, {size} lines",
        )


def parse_labels(
    values: Sequence[str], outputs: Sequence[TensorSpec], keys: Mapping[str, str], flag: str
) -> dict[str, list[str]]:
    """The labels of each labelled output, by source name, from `--labels` values: FILE for the output
    `labelled_output` picks, OUTPUT=FILE for a named output (its signature key or source name). Each is
    checked against its output's size; an output labelled twice or an unknown OUTPUT is an error."""
    by_name = {**{keys[s.name]: s for s in outputs}, **{s.name: s for s in outputs}}
    found: dict[str, list[str]] = {}
    for value in values:
        name, sep, file = value.partition("=")
        if sep and name in by_name:
            out, path = by_name[name], Path(file)
        elif sep and not Path(value).is_file():
            raise EdgeportError(
                f"{flag} {value!r} names output {name!r}, which the model does not have "
                f"(outputs: {', '.join(keys[s.name] for s in outputs)})",
                f"write {flag} OUTPUT=FILE with one of those, or {flag} FILE for the classifier output",
            )
        else:
            out, path = labelled_output(outputs), Path(value)
        if out.name in found:
            raise EdgeportError(
                f"{flag} gives output {keys[out.name]!r} two labels files", "give each output one"
            )
        labels = read_labels(path, flag)
        check_labels(labels, out, keys[out.name], f"{flag} {path.name}")
        found[out.name] = labels
    return found


def label_files(keys: Sequence[str]) -> dict[str, str]:
    """The labels file of each labelled output (by signature key), inside every variant and in OUTDIR:
    labels.txt when one output has labels, labels_<output>.txt each when several have."""
    if len(keys) == 1:
        return {keys[0]: LABELS_FILE}
    names: dict[str, str] = {}
    for key in keys:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("._") or "output"
        name, n = f"labels_{stem}.txt", 2
        while name in names.values():
            name, n = f"labels_{stem}_{n}.txt", n + 1
        names[key] = name
    return names


def check_normalization(
    values: Sequence[float] | None, spec: TensorSpec, keep_nchw: bool, flag: str
) -> list[float] | None:
    """One value, or one per channel of the first input."""
    if values is None:
        return None
    shape = model_shape(spec)
    channels = shape[channel_axis(spec, keep_nchw)] if shape else 1
    if len(values) not in (1, channels):
        raise EdgeportError(
            f"{flag} has {len(values)} values but input {spec.name!r} has {channels} channels",
            f"give one value, or {channels} separated by commas",
        )
    if flag.endswith("std") and any(v == 0 for v in values):
        raise EdgeportError(f"{flag} has a zero", "a standard deviation divides: give non-zero values")
    return [float(v) for v in values]


def model_range(
    input_range: tuple[float, float] | None, mean: Sequence[float] | None, std: Sequence[float] | None
) -> tuple[list[float], list[float]] | None:
    """(min, max) per channel of what the model sees: the raw range normalised by (x - mean) / std (one
    value each without normalisation), None without a range."""
    if input_range is None:
        return None
    low, high = input_range
    if mean is None or std is None:
        return [low], [high]
    count = max(len(mean), len(std))
    means = list(mean) * (count // len(mean))
    stds = list(std) * (count // len(std))
    ends = [sorted(((low - m) / s, (high - m) / s)) for m, s in zip(means, stds, strict=True)]
    return [float(e[0]) for e in ends], [float(e[1]) for e in ends]


def build_metadata(
    options: AndroidOptions,
    inputs: Sequence[TensorSpec],
    outputs: Sequence[TensorSpec],
    keys: dict[str, str],
    default_name: str,
    keep_nchw: bool,
    labels: Mapping[str, str],
    spell: dict[str, str],
) -> ModelMetadata:
    """The metadata of every variant (inputs and outputs in the source's order, named by `keys`:
    source name -> signature key; `labels`: output source name -> its labels file, checked by
    `parse_labels`). `spell` maps option fields to the flags as written (errors)."""
    first = inputs[0]
    mean = check_normalization(options.mean, first, keep_nchw, spell["mean"])
    std = check_normalization(options.std, first, keep_nchw, spell["std"])
    if (mean is None) != (std is None):
        given, missing = ("mean", "std") if std is None else ("std", "mean")
        raise EdgeportError(f"{spell[given]} given without {spell[missing]}", "give both, or neither")
    value_range = model_range(options.input_range, mean, std)

    def tensor(spec: TensorSpec, is_input: bool) -> TensorMetadata:
        image = None
        if is_input and is_image(spec, keep_nchw):
            shape = model_shape(spec)
            axis = channel_axis(spec, keep_nchw)
            height, width = (shape[2], shape[3]) if axis == 1 else (shape[1], shape[2])
            image = ImageProperties(color_space=COLOR_SPACES[shape[axis]], width=width, height=height)
        described = spec is first and mean is not None and std is not None
        low, high = value_range if value_range is not None and spec is first else ([], [])
        files = []
        if not is_input and spec.name in labels:
            described = "Labels for the classes of this output."
            files = [AssociatedFile(name=labels[spec.name], description=described)]
        kind = "image" if image else "tensor"
        return TensorMetadata(
            name=keys[spec.name],
            description=f"{'input' if is_input else 'output'} {kind} {spec.name}, shape {model_shape(spec)} "
            f"({spec.dtype})",
            dimension_names=dimension_names(spec, keep_nchw),
            image=image,
            normalization=Normalization(mean=mean, std=std) if described and mean and std else None,
            value_min=low,
            value_max=high,
            associated_files=files,
        )

    return ModelMetadata(
        name=options.model_name or default_name,
        description=options.description,
        version=options.model_version,
        author=options.author,
        license=options.license,
        inputs=[tensor(s, True) for s in inputs],
        outputs=[tensor(s, False) for s in outputs],
    )


def for_model(meta: ModelMetadata, input_keys: Sequence[str], output_keys: Sequence[str]) -> ModelMetadata:
    """`meta` with its tensors in a model's subgraph order (given as signature keys): the schema's
    tensor metadata match SubGraph.inputs / outputs position by position."""
    inputs, outputs = {t.name: t for t in meta.inputs}, {t.name: t for t in meta.outputs}
    return meta.model_copy(
        update={"inputs": [inputs[k] for k in input_keys], "outputs": [outputs[k] for k in output_keys]}
    )
