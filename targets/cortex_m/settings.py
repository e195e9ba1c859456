"""`model_settings.h` (arena size, I/O shapes and quantization) and `test_data.h/.cc` (the self-test).

The test input is deterministic (arena.make_test_inputs) and the expected output is what the
TFLite Micro runtime produced for it on the host; the firmware runs the same input and compares.
CMSIS-NN and the reference kernels round differently in places, so int8 outputs may differ by one
quantization step and float outputs by a small relative error: the tolerances below say how much.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeport.manifest import TensorInfo
from edgeport.targets.cortex_m.arena import ArenaReport

INT_TOLERANCE = 1  # quantization steps
FLOAT_TOLERANCE = 1e-3  # relative to the output's largest magnitude

_C_TYPES = {
    "float32": "float",
    "int8": "int8_t",
    "uint8": "uint8_t",
    "int16": "int16_t",
    "int32": "int32_t",
    "int64": "int64_t",
    "bool": "bool",
}


def c_float(value: float) -> str:
    """A C/C++ float literal for `value`: `1.0f`, not `1f` (which does not compile); inf/nan spelled out."""
    value = float(value)
    if np.isnan(value):
        return '__builtin_nanf("")'
    if np.isinf(value):
        return "__builtin_inff()" if value > 0 else "(-__builtin_inff())"
    text = f"{value:.9g}"
    if not any(c in text for c in ".e"):
        text += ".0"
    return text + "f"


def _c_int(value: int, dtype: np.dtype) -> str:
    # -2^63 has no literal (the literal is 2^63, then negated): spell it as an expression.
    if dtype == np.int64 and value == np.iinfo(np.int64).min:
        return "(-9223372036854775807LL - 1)"
    return str(value)


def _c_array(name: str, array: np.ndarray, per_line: int = 16) -> list[str]:
    ctype = _C_TYPES[str(array.dtype) if array.dtype != np.bool_ else "bool"]
    flat = array.ravel()
    if array.dtype == np.float32:
        values = [c_float(v) for v in flat]
    elif array.dtype == np.bool_:
        values = ["true" if v else "false" for v in flat]
    else:
        values = [_c_int(int(v), array.dtype) for v in flat]
    lines = [f"alignas(16) const {ctype} {name}[{max(len(values), 1)}] = {{"]
    for start in range(0, len(values), per_line):
        lines.append("  " + ", ".join(values[start : start + per_line]) + ",")
    lines.append("};")
    return lines


def render_model_settings_h(
    arena: ArenaReport, inputs: list[TensorInfo], outputs: list[TensorInfo], banner: str
) -> str:
    lines = [
        f"// {banner}",
        "#ifndef EDGEPORT_MODEL_SETTINGS_H_",
        "#define EDGEPORT_MODEL_SETTINGS_H_",
        "",
        "#include <stddef.h>",
        "",
        "// Tensor arena: the smallest arena the TFLite Micro interpreter accepts for this model on the",
        f"// host, {arena.measured_bytes} bytes (its allocator records {arena.recorded_bytes}: "
        f"head {arena.head_bytes} +",
        f"// tail {arena.tail_bytes}; planning borrows temporary memory on top), plus",
        f"// {arena.alignment_margin} bytes for an arena start that is not 16-byte aligned and",
        f"// {arena.cmsis_nn_scratch} bytes for the largest CMSIS-NN scratch buffer (estimate).",
        f"constexpr size_t kTensorArenaMeasured = {arena.measured_bytes};",
        f"constexpr size_t kTensorArenaSize = {arena.arena_size};",
        "",
        f"constexpr int kModelInputCount = {len(inputs)};",
        f"constexpr int kModelOutputCount = {len(outputs)};",
    ]
    for kind, tensors in (("Input", inputs), ("Output", outputs)):
        for index, info in enumerate(tensors):
            shape = ", ".join(str(d) for d in info.shape)
            lines.append(f"// {kind.lower()} {index} {info.name!r}: {info.dtype}[{shape}]")
            if info.quantization is not None and len(info.quantization.scale) == 1:
                lines.append(
                    f"constexpr float kModel{kind}{index}Scale = {c_float(info.quantization.scale[0])};"
                )
                lines.append(
                    f"constexpr int kModel{kind}{index}ZeroPoint = {info.quantization.zero_point[0]};"
                )
    lines += ["", "#endif  // EDGEPORT_MODEL_SETTINGS_H_", ""]
    return "\n".join(lines)


def write_test_data(arena: ArenaReport, outdir: Path, banner: str) -> tuple[Path, Path]:
    header = outdir / "test_data.h"
    source = outdir / "test_data.cc"
    h = [
        f"// {banner}",
        "// Self-test vectors: a deterministic input and the output the TFLite Micro runtime gave for it.",
        "#ifndef EDGEPORT_TEST_DATA_H_",
        "#define EDGEPORT_TEST_DATA_H_",
        "",
        "#include <stddef.h>",
        "#include <stdint.h>",
        "",
        f"constexpr int kTestIntTolerance = {INT_TOLERANCE};  // int outputs: quantization steps",
        f"constexpr float kTestFloatTolerance = {c_float(FLOAT_TOLERANCE)};  // float outputs: vs max |y|",
    ]
    c = [f"// {banner}", '#include "test_data.h"', ""]
    for kind, arrays in (("input", arena.inputs), ("expected_output", arena.outputs)):
        for index, array in enumerate(arrays):
            ctype = _C_TYPES[str(array.dtype) if array.dtype != np.bool_ else "bool"]
            name = f"g_test_{kind}_{index}"
            h.append(f"alignas(16) extern const {ctype} {name}[{max(array.size, 1)}];")
            h.append(f"constexpr size_t {name}_bytes = {array.nbytes};")
            c += _c_array(name, array) + [""]
    h += ["", "#endif  // EDGEPORT_TEST_DATA_H_", ""]
    header.write_text("\n".join(h))
    source.write_text("\n".join(c))
    return header, source
