"""The Kotlin wrapper and Gradle build of the Android bundle, rendered from bundle_templates.py.

Everything model-specific is a substituted value: the class and package names, the variants and which
accelerator gets which, one `run` parameter per input and one `Outputs` property per output (named
after the signature keys), the normalisation constants from the metadata, and the labels assets.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgeport import __version__
from edgeport.errors import EdgeportError
from edgeport.targets.android import bundle_templates as t

ACCELERATORS = ("CPU", "GPU", "NNAPI")
# Kotlin's hard keywords: not usable as a plain identifier.
KEYWORDS = frozenset(
    "as break class continue do else false for fun if in interface is null object package return super "
    "this throw true try typealias typeof val var when while".split()
)
# Names the wrapper itself uses where an input parameter or output property could shadow or clash.
RESERVED = frozenset(
    "context accelerator variant numThreads delegate interpreter feeds results name run close Outputs "
    "Category Variant Accelerator Normalization".split()
)
# The float model's tensor type -> (Kotlin array type, helper suffix).
KOTLIN_ARRAYS = {"f": ("FloatArray", "float"), "int32": ("IntArray", "int"), "int64": ("LongArray", "long")}


@dataclass(frozen=True)
class WrapperTensor:
    key: str  # the signature key: what LiteRT's runSignature addresses
    shape: tuple[int, ...]  # as the .tflite holds it
    dtype: str  # the float model's tensor type (numpy name); int8 variants quantize float ones
    mean: tuple[float, ...] = ()  # the metadata's normalisation, one value or one per channel; () none
    std: tuple[float, ...] = ()
    stride: int = 1  # elements from one channel to the next in the flat layout (1: channels last)
    labels: str | None = None  # the labels asset of this output
    label_count: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class WrapperSpec:
    name: str  # the model's name (metadata)
    source: str  # what was packaged, for the header comment
    variants: tuple[str, ...]  # assets model_<variant>.tflite
    picks: Mapping[str, str]  # accelerator -> variant
    inputs: tuple[WrapperTensor, ...]
    outputs: tuple[WrapperTensor, ...]
    signature: str = "serving_default"


def _words(text: str) -> list[str]:
    """The alphanumeric runs of `text`, camel humps split: 'PartitionedCall:0' -> Partitioned Call 0."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", text)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def class_name(model_name: str) -> str:
    """'ds_cnn_kws' -> 'DsCnnKwsModel'."""
    words = [w[:1].upper() + w[1:].lower() for w in _words(model_name)]
    if words and words[-1] == "Model":
        words.pop()
    name = "".join(words) or "Edgeport"
    return ("M" + name if name[0].isdigit() else name) + "Model"


def package_name(model_name: str) -> str:
    """'ds-cnn KWS' -> 'edgeport.ds_cnn_kws' (also the Gradle namespace)."""
    segment = "_".join(w.lower() for w in _words(model_name)) or "model"
    if segment[0].isdigit() or segment in KEYWORDS:
        segment = "m" + segment
    return f"edgeport.{segment}"


def identifiers(keys: Sequence[str], taken: Iterable[str] = ()) -> dict[str, str]:
    """A distinct lowerCamelCase Kotlin identifier per key, none a keyword or in `taken`."""
    used = set(taken) | RESERVED
    found = {}
    for key in keys:
        words = _words(key) or ["tensor"]
        base = words[0][:1].lower() + words[0][1:] + "".join(w[:1].upper() + w[1:] for w in words[1:])
        if base[0].isdigit():
            base = "t" + base
        if base in KEYWORDS or base in used:
            base += "Tensor"
        name, n = base, 2
        while name in used:
            name, n = f"{base}{n}", n + 1
        used.add(name)
        found[key] = name
    return found


def kotlin_string(text: str) -> str:
    """`text` as a Kotlin string literal (no templates, no raw control characters)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    escaped = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def kotlin_floats(values: Sequence[float]) -> str:
    """floatArrayOf(...) with each value as its shortest float32 literal."""
    return f"floatArrayOf({', '.join(str(np.float32(v)) + 'f' for v in values)})"


def _comment(text: str) -> str:
    """`text` safe inside a comment."""
    return text.replace("*/", "* /").replace("\n", " ").replace("\r", " ")


def kotlin_array(tensor: WrapperTensor) -> tuple[str, str]:
    """(Kotlin array type, helper prefix) of the tensor's values; a type the wrapper cannot pass is a
    one-line error."""
    kind = np.dtype(tensor.dtype)
    found = KOTLIN_ARRAYS.get("f" if kind.kind == "f" else kind.name)
    if found is None:
        raise EdgeportError(
            f"the Android bundle's Kotlin wrapper cannot pass {kind.name} tensor {tensor.key!r}",
            "package with --no-bundle for the model files only",
        )
    return found


def fill(template: str, values: Mapping[str, str]) -> str:
    """`template` with every {{NAME}} replaced in one pass (a value is never scanned for placeholders);
    a placeholder without a value is a bug here, not bad input."""
    missing = sorted(set(re.findall(r"\{\{([A-Z_]+)\}\}", template)) - set(values))
    if missing:
        raise ValueError(f"template placeholders without a value: {missing}")
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)], template)


def _normalization(tensor: WrapperTensor) -> tuple[list[float], list[float]] | None:
    """Mean and std with one value each per channel, None when the input has no normalisation."""
    if not tensor.mean:
        return None
    count = max(len(tensor.mean), len(tensor.std))
    return list(tensor.mean) * (count // len(tensor.mean)), list(tensor.std) * (count // len(tensor.std))


@dataclass(frozen=True)
class _Names:
    cls: str
    inputs: dict[str, str]  # signature key -> run() parameter
    outputs: dict[str, str]  # signature key -> Outputs property
    labels: dict[str, str]  # signature key -> Outputs property with the output's labels
    top: dict[str, str]  # signature key -> Outputs top-k method (outputs with one label per value)


def _names(spec: WrapperSpec) -> _Names:
    inputs = identifiers([x.key for x in spec.inputs])
    outputs = identifiers([x.key for x in spec.outputs], inputs.values())
    labelled = [o for o in spec.outputs if o.labels]
    extra = identifiers(
        [f"{outputs[o.key]} labels" for o in labelled] + [f"{outputs[o.key]} top" for o in labelled],
        [*inputs.values(), *outputs.values()],
    )
    return _Names(
        cls=class_name(spec.name),
        inputs=inputs,
        outputs=outputs,
        labels={o.key: extra[f"{outputs[o.key]} labels"] for o in labelled},
        top={o.key: extra[f"{outputs[o.key]} top"] for o in labelled if o.size == o.label_count},
    )


def render_wrapper(spec: WrapperSpec) -> str:
    """The Kotlin source of the wrapper class."""
    names = _names(spec)
    cls, names_in, names_out, labels_of, top_of = (
        names.cls,
        names.inputs,
        names.outputs,
        names.labels,
        names.top,
    )
    labelled = [o for o in spec.outputs if o.labels]

    helpers: dict[str, str] = {}
    params, feeds, constants, doc = [], [], [], []
    for x in spec.inputs:
        array, kind = kotlin_array(x)
        name = names_in[x.key]
        params.append(f"{name}: {array}")
        helpers[kind + "_in"] = {"float": t.FLOAT_INPUT, "int": t.INT_INPUT, "long": t.LONG_INPUT}[kind]
        norm = _normalization(x)
        constant = "null"
        if kind == "float" and norm is not None:
            constant = re.sub(r"(?<!^)([A-Z])", r"_\1", name).upper() + "_NORMALIZATION"
            constants.append(
                f"        // Input {_comment(x.key)}: the normalisation in the model's metadata.\n"
                f"        private val {constant} =\n"
                f"            Normalization({kotlin_floats(norm[0])}, {kotlin_floats(norm[1])}, {x.stride})"
            )
        key = kotlin_string(x.key)
        args = f"{key}, {name}, {constant}" if kind == "float" else f"{key}, {name}"
        feeds.append(f"        feeds[{key}] = {kind}Input({args})")
        how = ", raw (the metadata's (x - mean) / std is applied here)" if norm is not None else ""
        doc.append(f"     * - [{name}]: {list(x.shape)}{how}")

    props, outs, fields = [], [], []
    for o in spec.outputs:
        array, kind = kotlin_array(o)
        name = names_out[o.key]
        helpers[kind + "_out"] = {"float": t.FLOAT_OUTPUT, "int": t.INT_OUTPUT, "long": t.LONG_OUTPUT}[kind]
        props.append(
            f"        /** Output {_comment(o.key)}, shape {list(o.shape)}. */\n        val {name}: {array}"
        )
        outs.append(f"            {kind}Output({kotlin_string(o.key)}, results)")
        if o.labels:
            field = labels_of[o.key]
            props.append(
                f"        /** The labels of [{name}]'s last axis ({_comment(o.labels)}). */\n"
                f"        val {field}: List<String>"
            )
            outs.append(f"            {field}")
            fields.append(f"    private val {field} = readLabels(context, {kotlin_string(o.labels)})")
    body = [
        f"        /** The [k] highest scores of [{names_out[o.key]}] with their labels. */\n"
        f"        fun {top_of[o.key]}(k: Int): List<Category> = "
        f"top({names_out[o.key]}, {labels_of[o.key]}, k)"
        for o in spec.outputs
        if o.key in top_of
    ]
    file_helpers = (t.LABEL_HELPERS if labelled else "") + (
        fill(t.TOP_HELPER, {"CLASS": cls}) if top_of else ""
    )
    variants = [f"        {v.upper()}({kotlin_string(f'model_{v}.tflite')})" for v in spec.variants]
    return fill(
        t.WRAPPER,
        {
            "VERSION": __version__,
            "SOURCE": _comment(spec.source),
            "PACKAGE": package_name(spec.name),
            "TITLE": _comment(spec.name),
            "VARIANTS": ",\n".join(variants),
            **{a: spec.picks[a].upper() for a in ACCELERATORS},
            "OUTPUT_PROPERTIES": ",\n".join(props),
            "OUTPUT_BODY": " {\n" + "\n\n".join(body) + "\n    }" if body else "",
            "LABEL_FIELDS": "\n".join(fields) + "\n" if fields else "",
            "RUN_DOC": "\n".join(doc),
            "RUN_PARAMS": ", ".join(params),
            "RUN_FEEDS": "\n".join(feeds),
            "RUN_OUTPUTS": ",\n".join(outs),
            "HELPERS": "".join(helpers[k] for k in sorted(helpers)),
            "SIGNATURE": kotlin_string(spec.signature),
            "OUTPUT_NAMES": ", ".join(kotlin_string(o.key) for o in spec.outputs),
            "CONSTANTS": "\n".join(constants),
            "FILE_HELPERS": file_helpers,
            "CLASS": cls,
        },
    )


def wrapper_path(spec: WrapperSpec) -> str:
    """Where the wrapper goes in the module: src/main/java/<package path>/<Class>.kt."""
    return f"src/main/java/{package_name(spec.name).replace('.', '/')}/{class_name(spec.name)}.kt"


def render_gradle(spec: WrapperSpec) -> str:
    return fill(
        t.BUILD_GRADLE,
        {
            "VERSION": __version__,
            "PACKAGE": package_name(spec.name),
            "CLASS": class_name(spec.name),
            "LITERT": t.LITERT_VERSION,
        },
    )


def usage(spec: WrapperSpec) -> str:
    """A few lines of Kotlin that use the wrapper, for the bundle's README."""
    names = _names(spec)
    args = ", ".join(f"{names.inputs[x.key]}  /* {x.size} values */" for x in spec.inputs)
    lines = [
        f"import {package_name(spec.name)}.{names.cls}",
        "",
        f"val model = {names.cls}(context, {names.cls}.Accelerator.CPU)  // loads its variant from assets/",
        f"val outputs = model.run({args})",
    ]
    for o in spec.outputs:
        if o.key in names.top:
            lines.append(
                f"val {names.outputs[o.key]}Best = outputs.{names.top[o.key]}(3)  // [label: score, ...]"
            )
        else:
            lines.append(f"outputs.{names.outputs[o.key]}  // {list(o.shape)}, flat")
    lines.append("model.close()")
    return "\n".join(lines)
