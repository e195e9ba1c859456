"""Run the same inputs through PyTorch, onnxruntime and LiteRT and measure how far apart they are.

Relative error of an output is max|y - ref| / max|ref|: elementwise relative error explodes near
zero, while this scale-aware form is what "agrees to 1e-4" means for a whole tensor.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeport.converters.onnx_to_tflite import signature_name
from edgeport.manifest import StageError
from edgeport.tensors import Sample, TensorSpec, to_channels_first, to_channels_last


def run_torch(
    module: Any, samples: Sequence[Sample], input_names: Sequence[str], output_names: Sequence[str]
) -> list[Sample]:
    import torch

    from edgeport.converters.torch_to_onnx import run_module

    results = []
    for sample in samples:
        outs = run_module(module, [torch.from_numpy(sample[n]) for n in input_names])
        results.append({n: o.detach().numpy() for n, o in zip(output_names, outs, strict=True)})
    return results


def run_onnx(model_bytes: bytes, samples: Sequence[Sample]) -> list[Sample]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return [dict(zip(names, session.run(None, sample), strict=True)) for sample in samples]


def _key(name: str) -> str:
    """onnx2tf and the TFLite converter rewrite punctuation in names; compare on the rest."""
    return re.sub(r"[^0-9a-zA-Z]", "", name).lower()


class TfliteRunner:
    """LiteRT interpreter addressed by source tensor names, in the source layout."""

    def __init__(self, model: bytes, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        # The builtin kernels without the XNNPACK delegate: verification measures the conversion,
        # and XNNPACK's packed-weight cache has been seen to refuse a second model in one process.
        self._model = model  # the interpreter reads from this buffer; keep it alive
        self.interpreter = Interpreter(
            model_content=model,
            num_threads=1,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        self.runner = self.interpreter.get_signature_runner()
        signature = self.interpreter.get_signature_list()
        (entry,) = signature.values()
        self.input_keys = self._match(inputs, entry["inputs"])
        self.output_keys = self._match(outputs, entry["outputs"])
        self.inputs, self.outputs = list(inputs), list(outputs)
        details = self.runner.get_input_details()
        self.input_dtypes = {key: details[key]["dtype"] for key in details}

    @staticmethod
    def _match(specs: Sequence[TensorSpec], keys: Sequence[str]) -> dict[str, str]:
        by_key = {_key(k): k for k in keys}
        matched = {}
        for spec in specs:
            for candidate in (spec.name, signature_name(spec.name)):
                if _key(candidate) in by_key:
                    matched[spec.name] = by_key[_key(candidate)]
                    break
        if len(matched) != len(specs):
            if len(specs) == len(keys) == 1:
                return {specs[0].name: keys[0]}
            missing = [s.name for s in specs if s.name not in matched]
            raise RuntimeError(f"TFLite signature has no tensors for {missing} (has {list(keys)})")
        return matched

    def tensor_names(self) -> dict[str, str]:
        """Source tensor name -> the .tflite tensor name that holds it."""
        names = {}
        for details, keys in (
            (self.runner.get_input_details(), self.input_keys),
            (self.runner.get_output_details(), self.output_keys),
        ):
            for source_name, key in keys.items():
                names[source_name] = details[key]["name"]
        return names

    def run(self, sample: Sample) -> Sample:
        feed = {}
        for spec in self.inputs:
            key = self.input_keys[spec.name]
            value = sample[spec.name]
            if spec.channels_last:
                value = to_channels_last(value)
            feed[key] = np.ascontiguousarray(value.astype(self.input_dtypes[key]))
        raw = self.runner(**feed)
        result = {}
        for spec in self.outputs:
            value = raw[self.output_keys[spec.name]]
            result[spec.name] = to_channels_first(value) if spec.channels_last else value
        return result


def run_tflite(
    model: bytes, samples: Sequence[Sample], inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]
) -> list[Sample]:
    runner = TfliteRunner(model, inputs, outputs)
    return [runner.run(sample) for sample in samples]


def compare(stage: str, reference: Sequence[Sample], candidate: Sequence[Sample]) -> list[StageError]:
    """Worst absolute and relative error per output over all samples."""
    errors = []
    for name in reference[0]:
        worst_abs, scale = 0.0, 0.0
        for ref, got in zip(reference, candidate, strict=True):
            r = np.asarray(ref[name], dtype=np.float64)
            g = np.asarray(got[name], dtype=np.float64)
            if r.shape != g.shape:
                worst_abs = float("inf")
                break
            worst_abs = max(worst_abs, float(np.max(np.abs(r - g))) if r.size else 0.0)
            scale = max(scale, float(np.max(np.abs(r))) if r.size else 0.0)
        rel = worst_abs / scale if scale > 0 else worst_abs
        errors.append(StageError(stage=stage, output=name, max_abs_error=worst_abs, max_rel_error=rel))
    return errors
