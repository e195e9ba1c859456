"""Acceptance tests on every real model in ../shared/models/tflite: bytes, ops, arena, compilation."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgeport.targets.cortex_m.op_resolver import TFLM_BUILTINS
from edgeport.tflite_file import read_tflite
from tests.conftest import SHARED, shared_path
from tests.targets.conftest import SHARED_MODELS, arm_gxx, parse_c_array

pytestmark = pytest.mark.skipif(not SHARED_MODELS, reason="../shared/models/tflite is absent")


@pytest.mark.parametrize("model_name", SHARED_MODELS)
def test_array_bytes_equal_the_file(packaged, model_name):
    result = packaged(model_name)
    source = (result.outdir / "model_data.cc").read_text()
    model_bytes = shared_path("models", "tflite", model_name).read_bytes()
    assert parse_c_array(source, "g_model") == model_bytes
    header = (result.outdir / "model_data.h").read_text()
    assert f"g_model_len = {len(model_bytes)}u" in header
    import zlib

    assert f"g_model_crc32 = 0x{zlib.crc32(model_bytes):08x}u" in header
    assert "alignas(16)" in header and "alignas(16)" in source
    assert "#ifndef EDGEPORT_G_MODEL_MODEL_DATA_H_" in header


@pytest.mark.parametrize("model_name", SHARED_MODELS)
def test_resolver_registers_exactly_the_models_ops(packaged, model_name):
    result = packaged(model_name)
    text = (result.outdir / "model_ops.h").read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(", text)
    by_method = {method: op for op, method in TFLM_BUILTINS.items()}
    registered = [by_method[m] for m in methods]
    model_ops = set(read_tflite(shared_path("models", "tflite", model_name)).ops)
    assert sorted(registered) == sorted(model_ops)  # each op once, none missing, none extra
    assert f"kModelOpCount = {len(model_ops)};" in text
    assert "tflite::MicroMutableOpResolver<kModelOpCount>" in text


def test_int8_models_get_int8_kernels_and_float_models_do_not(packaged):
    int8 = (packaged("tflm_hello_world_int8.tflite").outdir / "model_ops.h").read_text()
    flt = (packaged("tflm_hello_world_float.tflite").outdir / "model_ops.h").read_text()
    assert "AddFullyConnected(tflite::Register_FULLY_CONNECTED_INT8())" in int8
    assert "AddFullyConnected()" in flt and "INT8" not in flt


def _run_tflm(path: Path, arena_size: int) -> None:
    # Its own TFLM interpreter, not edgeport.runtimes.tflm: it cross-checks the arena that was measured there.
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_file(str(path), arena_size=arena_size)
    details = interpreter.get_input_details(0)
    interpreter.set_input(np.zeros(details["shape"], details["dtype"]), 0)
    interpreter.invoke()


@pytest.mark.parametrize("model_name", SHARED_MODELS)
def test_measured_arena_is_exactly_what_tflm_allocates(packaged, model_name):
    """TFLM runs with the measured arena and refuses one 16-byte allocation unit less."""
    result = packaged(model_name)
    path = shared_path("models", "tflite", model_name)
    measured = result.arena.measured_bytes
    assert measured % 16 == 0
    _run_tflm(path, measured)
    with pytest.raises(RuntimeError):
        _run_tflm(path, measured - 16)
    assert result.arena.arena_size >= measured + result.arena.alignment_margin
    assert (
        f"kTensorArenaSize = {result.arena.arena_size};" in (result.outdir / "model_settings.h").read_text()
    )


def _readme_arenas() -> dict[str, int]:
    """file -> arena bytes from the table in ../shared/README.md ('a / b' rows are int8 / float)."""
    text = shared_path("README.md").read_text()
    found = {}
    for row in re.findall(
        r"^\|\s*(\w+\.tflite)(?:\s*/\s*(_\w+))?\s*\|.*\|\s*([\d,]+)(?:\s*/\s*([\d,]+))?\s*\|$", text, re.M
    ):
        first, alt_suffix, arena1, arena2 = row
        found[first] = int(arena1.replace(",", ""))
        if alt_suffix and arena2:
            found[first.rsplit("_", 1)[0] + alt_suffix + ".tflite"] = int(arena2.replace(",", ""))
    return found


def test_recorded_arena_matches_the_shared_readme():
    """The allocator's recorded total equals the reference, or is under it by the bytes the reference
    lost at the arena end: it used the runtime's default
    arena (10x the model size), and when that size is not a multiple of 16 TFLM's tail allocations
    lose the odd bytes at the arena end to alignment (hello_world_float: 31,640 bytes -> +8)."""
    from edgeport.targets.cortex_m.arena import measure
    from edgeport.tflite_file import verify_tflite

    reference = _readme_arenas()
    assert set(reference) == set(SHARED_MODELS)
    for name, expected in reference.items():
        path = SHARED / "models" / "tflite" / name
        report = measure(path, verify_tflite(path.read_bytes(), path))
        measured = report.recorded_bytes
        assert report.measured_bytes >= measured  # the working minimum includes planning scratch
        lost_at_end = (10 * path.stat().st_size) % 16
        assert measured == expected or expected - measured == lost_at_end, (name, measured, expected)


CORTEX_M4_FLAGS = ["-mcpu=cortex-m4", "-mthumb", "-Wall", "-Wextra", "-Werror", "-std=c++17"]


@pytest.mark.parametrize("model_name", SHARED_MODELS)
def test_model_data_compiles_for_cortex_m4_with_bytes_in_rodata(packaged, model_name, tmp_path):
    gxx = arm_gxx()
    result = packaged(model_name)
    flags = [*CORTEX_M4_FLAGS, "-I", str(result.outdir)]
    obj = tmp_path / "model_data.o"
    subprocess.run([gxx, *flags, "-c", str(result.outdir / "model_data.cc"), "-o", str(obj)], check=True)
    user = tmp_path / "user.cc"
    user.write_text(
        '#include "model_data.h"\n#include "model_data.h"\n'
        "unsigned int checksum_input() { return g_model_len + g_model_crc32 + g_model[4]; }\n"
    )
    subprocess.run([gxx, *flags, "-c", str(user), "-o", str(tmp_path / "user.o")], check=True)
    rodata = tmp_path / "rodata.bin"
    subprocess.run(
        ["arm-none-eabi-objcopy", "-O", "binary", "--only-section=.rodata", str(obj), str(rodata)], check=True
    )
    assert shared_path("models", "tflite", model_name).read_bytes() in rodata.read_bytes()


@pytest.mark.parametrize("model_name", SHARED_MODELS)
def test_settings_and_test_data_compile_for_cortex_m4(packaged, model_name, tmp_path):
    """model_settings.h and test_data.h/.cc need no TFLM: they compile on their own, warning-free (a scale of
    exactly 1.0 once came out as `1f`, which is not a C++ literal: ic_resnet8's input)."""
    gxx = arm_gxx()
    result = packaged(model_name)
    user = tmp_path / "user.cc"
    user.write_text(
        '#include "model_settings.h"\n#include "test_data.h"\n'
        "unsigned long sizes() { return kTensorArenaSize + g_test_input_0_bytes + kModelInputCount; }\n"
    )
    flags = [*CORTEX_M4_FLAGS, "-I", str(result.outdir)]
    for source in (user, result.outdir / "test_data.cc"):
        subprocess.run([gxx, *flags, "-c", str(source), "-o", str(tmp_path / "x.o")], check=True)
