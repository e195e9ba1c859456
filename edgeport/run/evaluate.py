"""Each variant's accuracy on the user's validation set ([validation] in the config).

The data is an .npz: one array per model input (named as the model's inputs; a one-input model may use
any name), each holding N samples of the input's shape without its batch axis of 1, and optionally
`labels` (N class indices). The metric is top-1 accuracy against the labels, or without labels top-1
agreement with the variant's own float32 model. The variant's model (its quantized one when it has one)
runs in LiteRT on the same float samples (quantized at the input as the model asks), source layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.tensors import Sample, TensorSpec

EVALUATION_JSON = "evaluation.json"
CHANNELS_LAST = ("NHWC", "NWC")


class ValidationOptions(BaseModel):
    """The config's [validation] section."""

    model_config = ConfigDict(extra="forbid")

    data: Path = Field(description=".npz with one array per model input (N samples) and optionally labels.")
    labels: str = Field("labels", description="Name of the labels array in the .npz (N class indices).")
    metric: Literal["auto", "top-1", "agreement"] = Field(
        "auto",
        description="top-1 against the labels, agreement with the float32 model, auto: top-1 if labelled.",
    )


def model_specs(manifest: Manifest, precision: str) -> tuple[str, list[TensorSpec], list[TensorSpec]]:
    """The .tflite of `precision` in a convert output and its I/O as LiteRTRunner takes them: source names
    and shapes (from model.onnx's entry), channels-last where the .tflite moved the channel axis."""
    onnx = next(a for a in manifest.artifacts if a.kind == "onnx")
    tflite = next(a for a in manifest.artifacts if a.kind == "tflite" and a.precision == precision)
    moved = {i.source_name or i.name for i in [*tflite.inputs, *tflite.outputs] if i.layout in CHANNELS_LAST}

    def specs(infos: list) -> list[TensorSpec]:
        return [TensorSpec(i.name, list(i.shape), i.dtype, i.name in moved) for i in infos]

    return tflite.path, specs(onnx.inputs), specs(onnx.outputs)


def load_data(path: Path, inputs: list[TensorSpec], labels: str) -> tuple[list[Sample], np.ndarray | None]:
    """The samples (batch of 1 each) and the labels, checked against the model's inputs."""
    try:
        arrays = dict(np.load(path, allow_pickle=False))
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same to the user
        raise EdgeportError(
            f"validation data {path} is not a readable .npz", "save it with numpy.savez"
        ) from exc
    found = arrays.pop(labels, None)
    if len(inputs) == 1 and len(arrays) == 1 and inputs[0].name not in arrays:
        arrays = {inputs[0].name: next(iter(arrays.values()))}
    missing = [s.name for s in inputs if s.name not in arrays]
    if missing:
        raise EdgeportError(
            f"validation data {path} has no array for input {missing[0]!r} (it has {', '.join(arrays)})",
            "name each array after the model input it feeds",
        )
    counts = {len(arrays[s.name]) for s in inputs}
    if len(counts) != 1 or (found is not None and len(found) not in counts):
        raise EdgeportError(
            f"validation data {path}: the arrays hold different numbers of samples", "give N of each"
        )
    samples = []
    for i in range(counts.pop()):
        sample = {}
        for spec in inputs:
            value = arrays[spec.name][i : i + 1]
            if list(value.shape) != spec.shape:
                raise EdgeportError(
                    f"validation data {path}: input {spec.name!r} samples are {list(value.shape[1:])}, "
                    f"the model takes {spec.shape[1:]}",
                    "store N samples of the input's shape without its batch axis",
                )
            sample[spec.name] = value
        samples.append(sample)
    return samples, found


def top1(model_dir: Path, precision: str, samples: list[Sample]) -> np.ndarray:
    """The class index the model's first output ranks first, per sample."""
    from edgeport.runtimes.litert import LiteRTRunner

    manifest = Manifest.read(model_dir)
    path, inputs, outputs = model_specs(manifest, precision)
    runner = LiteRTRunner((model_dir / path).read_bytes(), inputs, outputs)
    return np.array([int(np.argmax(runner.run(s)[outputs[0].name])) for s in samples])


def evaluate(model_dir: Path, options: ValidationOptions) -> dict[str, object]:
    """The variant's metric on the validation set, as evaluation.json holds it."""
    from edgeport.bench.models import default_variant

    manifest = Manifest.read(model_dir)
    precision = default_variant([a.precision for a in manifest.artifacts if a.kind == "tflite"]) or "float32"
    path, inputs, _ = model_specs(manifest, precision)
    samples, labels = load_data(options.data, inputs, options.labels)
    metric = options.metric if options.metric != "auto" else ("top-1" if labels is not None else "agreement")
    if metric == "top-1" and labels is None:
        raise EdgeportError(
            f"validation data {options.data} has no {options.labels!r} array", "add the labels"
        )
    predicted = top1(model_dir, precision, samples)
    truth = labels if metric == "top-1" else top1(model_dir, "float32", samples)
    return {
        "metric": metric,
        "value": float(np.mean(predicted == np.asarray(truth).reshape(-1))),
        "samples": len(samples),
        "model": Path(path).name,
    }


def write_evaluation(model_dir: Path, options: ValidationOptions, out: Path) -> None:
    out.mkdir(parents=True)
    (out / EVALUATION_JSON).write_text(json.dumps(evaluate(model_dir, options), indent=2) + "\n")
