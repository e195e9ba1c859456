"""The generated firmware project builds against TFLite Micro the way TFLM's own Makefile needs it.

Checked without TFLM sources: the Makefile and CMake project hand TFLM our compiler (else its Makefile
downloads a GCC) and compile our sources with -DCMSIS_NN like the library (else the kernel headers do not
declare the int8-only registrations), model_ops.h includes the headers that declare them, and QEMU's
virtual clock makes the printed cycle count about an instruction count. Against the `tflm_root` tree (the
offline bundle in ../shared/tflm, or EDGEPORT_TFLM_ROOT) the whole project is built and run in QEMU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from edgeport.targets.cortex_m.boards import get_board
from edgeport.targets.cortex_m.flash import build_and_run_qemu, qemu_command, qemu_icount_shift
from edgeport.targets.cortex_m.op_resolver import (
    INT8_KERNEL_HEADERS,
    INT8_KERNELS,
    TFLM_BUILTINS,
    Registration,
    render_model_ops_h,
)
from tests.conftest import shared_path

# A stand-in for TFLM's Makefile: prints what it was asked to build (run through `make -n`).
FAKE_TFLM_MAKEFILE = """
microlite:
\t@echo TFLM TARGET=$(TARGET) TARGET_ARCH=$(TARGET_ARCH) OPTIMIZED_KERNEL_DIR=$(OPTIMIZED_KERNEL_DIR) \\
\t  TARGET_TOOLCHAIN_ROOT=$(TARGET_TOOLCHAIN_ROOT)
"""


def _needs(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install make cmake gcc-arm-none-eabi)")


def _fake_tflm(tmp_path: Path) -> Path:
    root = tmp_path / "tflite-micro"
    make_dir = root / "tensorflow/lite/micro/tools/make"
    make_dir.mkdir(parents=True)
    (make_dir / "Makefile").write_text(FAKE_TFLM_MAKEFILE)
    return root


@pytest.fixture(scope="module")
def hello_package(tmp_path_factory):
    from edgeport.targets.cortex_m import package

    out = tmp_path_factory.mktemp("fw") / "pkg"
    return package(shared_path("models", "tflite", "tflm_hello_world_int8.tflite"), out, board="mps2-an386")


def test_makefile_gives_tflm_our_compiler_and_compiles_with_its_kernel_define(hello_package, tmp_path):
    _needs("make", "arm-none-eabi-gcc")
    root = _fake_tflm(tmp_path)
    firmware = hello_package.outdir / "firmware"
    run = subprocess.run(
        ["make", "-n", "-C", str(firmware), f"TFLM_ROOT={root}"], capture_output=True, text=True, check=True
    )
    toolchain = os.path.dirname(shutil.which("arm-none-eabi-gcc")) + "/"
    assert f"TARGET_TOOLCHAIN_ROOT={toolchain}" in run.stdout, run.stdout  # else TFLM downloads a GCC
    assert "TARGET_ARCH=cortex-m4+fp" in run.stdout and "OPTIMIZED_KERNEL_DIR=cmsis_nn" in run.stdout
    compiles = [line for line in run.stdout.splitlines() if " -c main.cc " in line]
    assert compiles and "-DCMSIS_NN" in compiles[0] and "-DTF_LITE_STATIC_MEMORY" in compiles[0]
    lib = f"{root}/gen/cortex_m_generic_cortex-m4+fp_default_cmsis_nn_gcc/lib/libtensorflow-microlite.a"
    assert any(lib in line and "firmware.elf" in line for line in run.stdout.splitlines())

    reference = subprocess.run(
        ["make", "-n", "-C", str(firmware), f"TFLM_ROOT={root}", "KERNELS="],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-DCMSIS_NN" not in reference.stdout
    assert "cortex_m_generic_cortex-m4+fp_default_gcc/lib" in reference.stdout  # TFLM's gen dir name


def test_cmake_project_gives_tflm_our_compiler_and_its_kernel_define(hello_package, tmp_path):
    _needs("cmake", "make", "arm-none-eabi-gcc", "arm-none-eabi-g++")
    root = _fake_tflm(tmp_path)
    firmware = hello_package.outdir / "firmware"
    build = tmp_path / "build"
    subprocess.run(
        [
            "cmake",
            "-S",
            str(firmware),
            "-B",
            str(build),
            f"-DTFLM_ROOT={root}",
            f"-DCMAKE_TOOLCHAIN_FILE={firmware / 'arm-none-eabi.cmake'}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    flags = (build / "CMakeFiles/firmware.elf.dir/flags.make").read_text()
    assert "-DCMSIS_NN" in flags and "-DTF_LITE_STATIC_MEMORY" in flags
    tflm_rule = (build / "CMakeFiles/tflm.dir/build.make").read_text()
    match = re.search(r"TARGET_TOOLCHAIN_ROOT=(\S+)", tflm_rule)
    assert match and Path(match.group(1), "arm-none-eabi-g++").exists(), tflm_rule


def test_model_ops_includes_the_headers_of_its_int8_registrations():
    # micro_mutable_op_resolver.h does not include pad.h or transpose.h, which declare these two.
    assert set(INT8_KERNEL_HEADERS) == set(INT8_KERNELS)
    regs = [
        Registration(op="PAD", method=TFLM_BUILTINS["PAD"], kernel="Register_PAD_INT8"),
        Registration(op="RESHAPE", method=TFLM_BUILTINS["RESHAPE"]),
        Registration(op="TRANSPOSE", method=TFLM_BUILTINS["TRANSPOSE"], kernel="Register_TRANSPOSE_INT8"),
    ]
    text = render_model_ops_h(SimpleNamespace(ops=["PAD", "RESHAPE", "TRANSPOSE"]), regs, "test")
    includes = re.findall(r'#include "([^"]+)"', text)
    assert includes == [
        "tensorflow/lite/micro/kernels/pad.h",
        "tensorflow/lite/micro/kernels/transpose.h",
        "tensorflow/lite/micro/micro_mutable_op_resolver.h",
    ]
    assert "resolver.AddPad(tflite::Register_PAD_INT8())" in text


@pytest.mark.parametrize(("board", "shift"), [("mps2-an386", 5), ("mps2-an500", 5), ("corstone-300", 5)])
def test_qemu_virtual_time_is_about_one_clock_cycle_per_instruction(board, shift, tmp_path):
    the_board = get_board(board)
    assert qemu_icount_shift(the_board) == shift
    ns_per_cycle = 1e9 / the_board.clock_hz
    assert 0.75 < 2**shift / ns_per_cycle < 1.34  # SysTick cycles per instruction, about 1
    argv = qemu_command(the_board)
    assert argv[argv.index("-icount") + 1] == f"shift={shift}" and argv[-1] == "-kernel"


def test_board_mk_runs_qemu_like_edgeport_flash(hello_package):
    board_mk = (hello_package.outdir / "firmware" / "board.mk").read_text()
    assert f"QEMU_RUN := {' '.join(qemu_command(hello_package.board))}\n" in board_mk


@pytest.mark.parametrize(
    ("model_name", "board"),
    [
        ("tflm_hello_world_int8.tflite", "mps2-an386"),
        ("mlperf_tiny_kws_dscnn_int8.tflite", "mps2-an386"),
        ("mlperf_tiny_kws_dscnn_int8.tflite", "corstone-300"),
        ("mlperf_tiny_ad01_int8.tflite", "corstone-300"),
    ],
)
def test_firmware_builds_against_tflm_and_passes_in_qemu(model_name, board, tmp_path, tflm_root):
    """TFLM's library takes minutes to build the first time per core; the tflm_root tree keeps it."""
    from edgeport.targets.cortex_m import package

    result = package(shared_path("models", "tflite", model_name), tmp_path / "pkg", board=board)
    run = build_and_run_qemu(result.outdir / "firmware", result.board, tflm_root)
    assert "PASS" in run.stdout and run.exit_status == 0, run.stdout + run.stderr
    cycles = int(re.search(r"latency: (\d+) cycles", run.stdout).group(1))
    assert cycles > 100


def test_tflm_error_messages_reach_the_serial_port(hello_package, tmp_path):
    """main.cc hands platform_write to TFLM's DebugLog, so "arena too small" says by how much."""
    main_cc = (hello_package.outdir / "firmware" / "main.cc").read_text()
    assert "RegisterDebugLogCallback(platform_write);" in main_cc
    _needs("make", "arm-none-eabi-gcc")
    run = subprocess.run(
        ["make", "-n", "-C", str(hello_package.outdir / "firmware"), f"TFLM_ROOT={_fake_tflm(tmp_path)}"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "-DEDGEPORT_TFLM_DEBUG_LOG_CALLBACK" in run.stdout


def test_mve_arena_has_room_for_helium_kernel_buffers():
    """On Cortex-M55 (MVE) CMSIS-NN's 3x3 depthwise kernel wants 4 x 124 x 9 bytes of scratch (none on
    Cortex-M4), and fully connected layers keep int32 kernel sums per output channel in persistent memory:
    kws_dscnn and ad01 failed AllocateTensors in QEMU mps3-an547 with the DSP-only estimate."""
    from edgeport.targets.cortex_m.arena import cmsis_nn_scratch, has_mve
    from edgeport.tflite_file import op_name, read_tflite

    assert has_mve("cortex-m55") and has_mve("cortex-m55+nofp") and has_mve("cortex-m85")
    assert not has_mve("cortex-m4+fp") and not has_mve("cortex-m33")
    kws = read_tflite(shared_path("models", "tflite", "mlperf_tiny_kws_dscnn_int8.tflite"))
    assert cmsis_nn_scratch(kws, mve=True) >= 4 * 124 * 9 > cmsis_nn_scratch(kws, mve=False)
    ad01 = read_tflite(shared_path("models", "tflite", "mlperf_tiny_ad01_int8.tflite"))
    fc_outputs = sum(
        int(graph.tensors[op.inputs[1]].shape[0])
        for graph in ad01.raw.subgraphs
        for op in graph.operators
        if op_name(ad01.raw.operatorCodes[op.opcodeIndex]) == "FULLY_CONNECTED"
    )
    assert fc_outputs > 0 and cmsis_nn_scratch(ad01, mve=True) >= 4 * fc_outputs


def test_package_for_corstone_300_sizes_the_arena_for_mve(tmp_path):
    from edgeport.targets.cortex_m import package

    model = shared_path("models", "tflite", "mlperf_tiny_kws_dscnn_int8.tflite")
    m4 = package(model, tmp_path / "m4", board="mps2-an386")
    m55 = package(model, tmp_path / "m55", board="corstone-300")
    assert m55.arena.arena_size >= m4.arena.arena_size + 4 * 124 * 9 - m4.arena.cmsis_nn_scratch
