"""The typed `quantization` manifest section: written with the keys (and key order) the stage always
wrote, read back as fields."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.quant.section import LayerSqnr, QuantSection


def _fidelity() -> dict[str, Any]:
    return {
        "reference": "model_float32.tflite",
        "inputs": "held-out distill samples",
        "samples": 16,
        "outputs": [{"name": "logits", "sqnr_db": 25.04}, {"name": "aux", "sqnr_db": None}],
        "layers_compared": 7,
        "worst_layers": [
            {"source_name": "/conv/Conv", "module": "conv", "tflite_name": "model/conv;1", "sqnr_db": 18.2},
            {"tflite_name": "model/add", "sqnr_db": None},
        ],
    }


def _int8_section() -> dict[str, Any]:
    """As quant/modes.py builds it for int8 with data calibration (the method's detail inline)."""
    return {
        "mode": "int8",
        "io": "int8",
        "weights": "int8 per-channel (symmetric)",
        "activations": "int8 per-tensor (asymmetric)",
        "activation_ranges": {"method": "minmax", "recorded": 12, "set": 12},
        "calibration": {
            "method": "data",
            "data_free": False,
            "samples": 60,
            "input_stats": {"x": {"source": "user", "mean": [0.5], "std": [0.29], "range": [0.0, 1.0]}},
            "data": "cal.npy",
            "local_path": "/home/me/cal.npy",
            "sha256": "ab" * 32,
            "notes": ["n"],
        },
        "tensor_types": {"int32": 3, "int8": 20},
        "kept_float": [{"op": "LOG", "node": "/log/Log", "reason": "no int8 kernel"}],
        "tflm_vs_litert": {
            "kernels": "TFLite reference (BUILTIN_REF, TensorFlow 2.19)",
            "samples": 4,
            "max_diff_steps": 0,
            "max_abs_diff": 0.0,
            "exact_fraction": 1.0,
        },
        "litert_optimized_vs_tflm": {
            "samples": 4,
            "max_diff_steps": 2,
            "max_abs_diff": 0.03,
            "exact_fraction": 0.998,
        },
        "fidelity": _fidelity(),
        "seconds": 12.5,
    }


def _dynamic_section() -> dict[str, Any]:
    return {
        "mode": "dynamic",
        "io": "float",
        "weights": "int8 per-channel (symmetric) for layers with >= 1024 weights, else float32",
        "activations": "float32 (hybrid kernels quantize them on the fly, per inference)",
        "tensor_types": {"float32": 9, "int8": 2},
        "fidelity": _fidelity(),
        "seconds": 1.25,
    }


@pytest.mark.parametrize("build", [_int8_section, _dynamic_section])
def test_the_section_is_written_with_the_same_keys_in_the_same_order(build) -> None:
    section = QuantSection.model_validate(build())
    manifest = Manifest()
    section.record(manifest)
    assert json.dumps(manifest.sections["quantization"]) == json.dumps(build())


def test_the_written_section_reads_back_as_fields(tmp_path) -> None:
    manifest = Manifest()
    QuantSection.model_validate(_int8_section()).record(manifest)
    manifest.write(tmp_path)
    section = QuantSection.of(Manifest.read(tmp_path), "out")
    assert section.seconds is None  # wall-clock time lives in the run block
    assert section.calibration is not None and section.calibration.method == "data"
    assert section.calibration.detail == {"data": "cal.npy", "sha256": "ab" * 32}  # local_path: run block
    assert section.tflm_vs_litert is not None and section.tflm_vs_litert.max_diff_steps == 0
    assert section.kept_float is not None and section.kept_float[0].op == "LOG"
    assert section.int4 is None and section.clustering is None
    assert section.fidelity.worst_layers[0] == LayerSqnr(
        source_name="/conv/Conv", module="conv", tflite_name="model/conv;1", sqnr_db=18.2
    )
    assert section.fidelity.worst_output_db() == 25.04
    again = Manifest()
    section.record(again)
    assert (
        again.sections["quantization"]
        == json.loads((tmp_path / "edgeport.json").read_text())["sections"]["quantization"]
    )


def test_summary_line_names_the_calibration_and_the_worst_output() -> None:
    data = _int8_section()
    data["mode"] = "w4a8"
    data["calibration"] = {**data["calibration"], "method": "distill", "via": "ONNX graph via onnx_torch"}
    data["fidelity"]["outputs"] = [{"name": "a", "sqnr_db": 25.04}, {"name": "b", "sqnr_db": 19.5}]
    text = QuantSection.model_validate(data).describe()
    assert text == "w4a8 (calibration distill on the ONNX graph, SQNR vs float 19.5 dB); note: n"
    assert QuantSection.model_validate(_dynamic_section()).describe() == "dynamic (SQNR vs float 25.0 dB)"


def test_a_missing_or_foreign_section_is_one_error() -> None:
    assert QuantSection.find(Manifest()) is None
    with pytest.raises(EdgeportError, match="has no quantization section"):
        QuantSection.of(Manifest(), "out")
    with pytest.raises(EdgeportError, match="not one this edgeport reads") as err:
        QuantSection.find(Manifest(sections={"quantization": {"mode": "int8"}}))
    assert "--quantize" in err.value.fix
