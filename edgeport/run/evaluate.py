"""Each variant's accuracy on the user's validation set ([validation] in the config).

The data is an .npz: one array per model input (named as the model's inputs; a one-input model may use
any name), each holding N samples of the input's shape without its batch axis of 1, and optionally
`labels` (N class indices). Or it is a folder of images (PNG / JPEG) for a one-input image model, with a
labels file in it (`labels`, default labels.txt): one `FILENAME LABEL` line per image (LABEL a class
index; blank lines and lines starting with # are skipped). Each image is resized to the input's height and
width, converted to its channels (1: grayscale, 3: RGB) and layout, and normalised as
`(pixel * scale - mean) / std` (scale 1/255 by default, mean and std per channel or one for all).

The metric is top-1 accuracy against the labels, or without labels top-1
agreement with the variant's own float32 model. The variant's model (its quantized one when it has one)
runs in LiteRT on the same float samples (quantized at the input as the model asks), source layout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

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

    data: Path = Field(
        description=".npz with one array per model input (N samples) and optionally labels, or a folder of "
        "images with a labels file."
    )
    labels: str | None = Field(
        None,
        description="The labels array in the .npz (default labels), or the labels file in the images folder "
        "(default labels.txt): one `FILENAME LABEL` line per image.",
    )
    metric: Literal["auto", "top-1", "agreement"] = Field(
        "auto",
        description="top-1 against the labels, agreement with the float32 model, auto: top-1 if labelled.",
    )
    scale: float | None = Field(None, description="Images: pixel values (0..255) are multiplied by it first.")
    mean: float | list[float] | None = Field(None, description="Images: subtracted after scale, per channel.")
    std: float | list[float] | None = Field(None, description="Images: divided by last, per channel.")

    def image_problems(self) -> list[str]:
        """What is wrong with the image keys, one line each (empty when the data is a folder of images
        and they are consistent, or when the data is an .npz and none is given)."""
        given = [k for k in IMAGE_KEYS if getattr(self, k) is not None]
        if not self.data.is_dir():
            return [f"{k}: applies to a folder of images only (data is {self.data.name})" for k in given]
        problems = []
        std = _per_channel(self.std)
        if std is not None and any(v == 0 for v in std):
            problems.append(f"std: {self.std} has a zero; give the standard deviation per channel")
        lengths = {len(v) for v in (_per_channel(self.mean), std) if v is not None and len(v) > 1}
        if len(lengths) > 1:
            problems.append("mean and std: give as many values each (one per channel), or one for all")
        if self.scale is not None and self.scale <= 0:
            problems.append(f"scale: {self.scale} must be positive (e.g. 0.00392156862745098 for 1/255)")
        return problems

    @property
    def labels_name(self) -> str:
        return self.labels or (DEFAULT_LABELS_FILE if self.data.is_dir() else "labels")


IMAGE_KEYS = ("scale", "mean", "std")
DEFAULT_LABELS_FILE = "labels.txt"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _per_channel(value: float | list[float] | None) -> list[float] | None:
    return None if value is None else [float(v) for v in (value if isinstance(value, list) else [value])]


def model_specs(manifest: Manifest, precision: str) -> tuple[str, list[TensorSpec], list[TensorSpec]]:
    """The .tflite of `precision` in a convert output and its I/O as LiteRTRunner takes them: source names
    and shapes (from model.onnx's entry), channels-last where the .tflite moved the channel axis."""
    onnx = next(a for a in manifest.artifacts if a.kind == "onnx")
    tflite = next(a for a in manifest.artifacts if a.kind == "tflite" and a.precision == precision)
    moved = {i.source_name or i.name for i in [*tflite.inputs, *tflite.outputs] if i.layout in CHANNELS_LAST}

    def specs(infos: list) -> list[TensorSpec]:
        return [TensorSpec(i.name, list(i.shape), i.dtype, i.name in moved) for i in infos]

    return tflite.path, specs(onnx.inputs), specs(onnx.outputs)


def read_npz(path: Path, names_only: bool = False) -> dict[str, Any]:
    """The arrays of a validation .npz (with `names_only`, its array names mapped to None: a cheap check
    that it is one); an unreadable file is one line."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise ValueError("a single array, not an .npz")
            return dict.fromkeys(data.files) if names_only else dict(data)
    except Exception as exc:  # noqa: BLE001 - any unreadable file means the same to the user
        raise EdgeportError(
            f"validation data {path} is not a readable .npz", "save it with numpy.savez"
        ) from exc


def load_data(path: Path, inputs: list[TensorSpec], labels: str) -> tuple[list[Sample], np.ndarray | None]:
    """The samples (batch of 1 each) and the labels, checked against the model's inputs."""
    arrays = read_npz(path)
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


def read_labels_file(path: Path) -> list[tuple[str, int]]:
    """The (filename, class index) pairs of a labels file: one `FILENAME LABEL` line per image."""
    try:
        text = path.read_text()
    except OSError:
        raise EdgeportError(
            f"labels file {path} cannot be read", "write one `FILENAME LABEL` line per image there"
        ) from None
    pairs = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.strip().rsplit(maxsplit=1)
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2 or not words[1].lstrip("-").isdigit():
            raise EdgeportError(
                f"labels file {path} line {number}: {line.strip()!r} is not `FILENAME LABEL`",
                "write the image's file name, a space and its class index",
            )
        pairs.append((words[0], int(words[1])))
    if not pairs:
        raise EdgeportError(f"labels file {path} names no image", "write one `FILENAME LABEL` line per image")
    return pairs


def image_layout(spec: TensorSpec) -> str:
    """NCHW or NHWC: where a one-image input keeps its channels (1 or 3) in the source layout."""
    shape = spec.shape
    if len(shape) == 4 and (spec.channels_last or (shape[1] in (1, 3) and shape[3] not in (1, 3))):
        return "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return "NHWC"
    raise EdgeportError(
        f"validation images: input {spec.name!r} has shape {shape}, not one image of 1 or 3 channels",
        "give the validation set as an .npz of input arrays",
    )


def image_tensor(image: Any, spec: TensorSpec, options: ValidationOptions) -> np.ndarray:
    """A PIL image as the model's input: resized, its channels, normalised, the model's layout, batch 1."""
    from PIL import Image

    layout = image_layout(spec)
    channels, height, width = spec.shape[1:] if layout == "NCHW" else [spec.shape[3], *spec.shape[1:3]]
    image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, channels)
    scale = options.scale if options.scale is not None else 1 / 255
    mean = np.asarray(_per_channel(options.mean) or [0.0], dtype=np.float32)
    std = np.asarray(_per_channel(options.std) or [1.0], dtype=np.float32)
    for name, values in (("mean", mean), ("std", std)):
        if len(values) not in (1, channels):
            raise EdgeportError(
                f"validation {name} has {len(values)} values, the model's images have {channels} channels",
                f"give {channels} values or one",
            )
    x = (pixels * np.float32(scale) - mean) / std
    x = x.transpose(2, 0, 1) if layout == "NCHW" else x
    return x[None].astype(spec.dtype if spec.dtype.startswith("float") else np.float32)


def labelled_images(folder: Path, labels_name: str) -> list[tuple[str, int]]:
    """The (image file, class index) pairs of a folder's labels file, each image there and each image
    there labelled; needs no model, so the config check runs it before any work."""
    pairs = read_labels_file(folder / labels_name)
    listed = {name for name, _ in pairs}
    unlisted = sorted(
        p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in listed
    )
    if unlisted:
        raise EdgeportError(
            f"validation images: {len(unlisted)} image(s) in {folder} have no label (first: {unlisted[0]})",
            f"add a line for each to {labels_name}, or move them out",
        )
    for name, _ in pairs:
        if not (folder / name).is_file():
            raise EdgeportError(
                f"validation images: {labels_name} names {name}, which is not in {folder}",
                "fix the file name or add the image",
            )
    return pairs


def data_problems(options: ValidationOptions) -> list[str]:
    """What is wrong with the validation data that needs no model to see, one line each: a labels file
    that does not label the folder's images, an .npz that is not one or lacks the labels top-1 needs."""
    try:
        if options.data.is_dir():
            labelled_images(options.data, options.labels_name)
            return []
        names = read_npz(options.data, names_only=True)
    except EdgeportError as err:
        return [err.one_line()]
    if options.metric == "top-1" and options.labels_name not in names:
        return [f"metric top-1: {options.data} has no {options.labels_name!r} array; add the labels"]
    return []


def input_problems(options: ValidationOptions, shape: list[int]) -> list[str]:
    """What does not fit a one-input model whose input shape the config gives (source layout): the images'
    mean / std per channel, the .npz samples' shape. Checked before any conversion; everything else about
    the model's inputs is checked when the validation set is loaded."""
    spec = TensorSpec("input", list(shape))
    try:
        if options.data.is_dir():
            layout = image_layout(spec)
            channels = shape[1] if layout == "NCHW" else shape[3]
            for name in ("mean", "std"):
                values = _per_channel(getattr(options, name))
                if values is not None and len(values) not in (1, channels):
                    return [
                        f"{name}: {len(values)} values, the model's images have {channels} channel(s); "
                        f"give one value or {channels}"
                    ]
            return []
        arrays = {k: v for k, v in read_npz(options.data).items() if k != options.labels_name}
    except EdgeportError as err:
        return [err.one_line()]
    if len(arrays) == 1:
        ((name, array),) = arrays.items()
        if list(array.shape[1:]) != list(shape[1:]):
            return [
                f"{options.data}: array {name!r} holds samples of {list(array.shape[1:])}, the model takes "
                f"{list(shape[1:])} (input-shape); store N samples of that shape"
            ]
    return []


def load_images(
    folder: Path, inputs: list[TensorSpec], options: ValidationOptions
) -> tuple[list[Sample], np.ndarray]:
    """The images a labels file names in `folder`, as samples of the model's one input, and their labels."""
    from PIL import Image, UnidentifiedImageError

    if len(inputs) != 1:
        raise EdgeportError(
            f"validation images: the model has {len(inputs)} inputs, a folder of images feeds one",
            "give the validation set as an .npz with one array per input",
        )
    pairs = labelled_images(folder, options.labels_name)
    samples = []
    for name, _ in pairs:
        path = folder / name
        try:
            with Image.open(path) as image:
                image.load()
                samples.append({inputs[0].name: image_tensor(image, inputs[0], options)})
        except (UnidentifiedImageError, OSError):
            raise EdgeportError(
                f"validation images: {path} is not a readable PNG or JPEG image", "replace or remove it"
            ) from None
    return samples, np.array([label for _, label in pairs])


def load_validation(
    options: ValidationOptions, inputs: list[TensorSpec]
) -> tuple[list[Sample], np.ndarray | None]:
    """The validation samples and labels, from an .npz or a folder of images."""
    if options.data.is_dir():
        return load_images(options.data, inputs, options)
    return load_data(options.data, inputs, options.labels_name)


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
    samples, labels = load_validation(options, inputs)
    metric = options.metric if options.metric != "auto" else ("top-1" if labels is not None else "agreement")
    if metric == "top-1" and labels is None:
        raise EdgeportError(
            f"validation data {options.data} has no {options.labels_name!r} array", "add the labels"
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
