"""The manifest's artifact entries: each file's hash, size, op counts and I/O as the user sees it."""

from __future__ import annotations

from pathlib import Path

import onnx

from edgeport.manifest import Artifact, TensorInfo, sha256_of
from edgeport.tensors import TensorSpec
from edgeport.tflite_file import read_tflite


def source_infos(specs: list[TensorSpec], keep_nchw: bool) -> list[TensorInfo]:
    """I/O as the source model sees it (ONNX: channels-first)."""
    layouts = {3: "NCW", 4: "NCHW"}
    return [
        TensorInfo(
            name=s.name,
            shape=list(s.shape),
            dtype=s.dtype,
            layout=layouts.get(len(s.shape), "other") if s.channels_last or keep_nchw else "other",
        )
        for s in specs
    ]


def tflite_infos(
    path: Path, specs: list[TensorSpec], runner_names: dict[str, str], keep_nchw: bool
) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """I/O of a .tflite in its own tensor order, with names, shapes, quantization read from the file."""
    model = read_tflite(path)
    by_tensor = {runner_names[s.name]: s for s in specs}
    result = []
    for infos in (model.inputs, model.outputs):
        out = []
        for info in infos:
            spec = by_tensor.get(info.name)
            rank = len(info.shape)
            if spec is None:
                layout = "other"
            elif spec.channels_last:
                layout = {3: "NWC", 4: "NHWC"}.get(rank, "other")
            else:
                layout = {3: "NCW", 4: "NCHW"}.get(rank, "other") if keep_nchw else "other"
            out.append(info.model_copy(update={"layout": layout, "source_name": spec.name if spec else None}))
        result.append(out)
    return result[0], result[1]


def artifact(
    path: Path, root: Path, kind: str, precision: str, inputs: list[TensorInfo], outputs: list[TensorInfo]
) -> Artifact:
    art = Artifact(
        path=str(path.relative_to(root)),
        kind=kind,
        precision=precision,
        sha256=sha256_of(path),
        size_bytes=path.stat().st_size,
        inputs=inputs,
        outputs=outputs,
    )
    if kind == "tflite":
        art.op_counts = read_tflite(path).op_counts
    else:
        model = onnx.load(str(path), load_external_data=False)
        counts: dict[str, int] = {}
        for node in model.graph.node:
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        art.op_counts = dict(sorted(counts.items()))
    return art


def model_layout(in_specs: list[TensorSpec], keep_nchw: bool) -> str:
    if any(s.channels_last for s in in_specs):
        return "NHWC"
    if keep_nchw and any(len(s.shape) == 4 for s in in_specs):
        return "NCHW"
    return "other"
