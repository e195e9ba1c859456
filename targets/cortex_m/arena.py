"""The tensor arena, measured: run the model once in the TFLite Micro interpreter and read its allocator.

`tflite_micro`'s Python runtime uses a RecordingMicroAllocator; after one inference its report
("Arena allocation total N bytes", head and tail) is what stays allocated. It is not always enough:
while planning, TFLM borrows temporary memory between head and tail (the planner's per-buffer
lists), which for models with tiny activations and many tensors exceeds the head (hello_world,
the MLPerf anomaly-detection autoencoder). So the arena is measured as the smallest size with
which the interpreter allocates and invokes (bisection in TFLM's 16-byte units) on the host
build (x86-64); one unit less fails. On a 32-bit
Cortex-M the tail (TfLiteEvalTensor, node structs and kernels' persistent data, which hold
pointers) is smaller, and the head (the planned activation buffers) is identical, so the host
number is an upper bound for the reference kernels. What the host build cannot see is added as
documented margins: the arena start alignment and the scratch buffers CMSIS-NN kernels request.

The same run (edgeport.runtimes.tflm) produces the reference output for the firmware self-test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeport.errors import EdgeportError
from edgeport.runtimes import tflm
from edgeport.runtimes.result import ArenaUsage
from edgeport.tflite_file import TfliteModel, op_name, schema

# TFLM aligns the arena start up to 16 bytes (MicroArenaBufferAlignment); an unaligned static buffer
# loses up to 15 bytes to that.
ALIGNMENT_MARGIN = 16
TEST_INPUT_SEED = 20240611
PROBE_TIMEOUT_S = 600

_NUMPY_TYPES = {
    "float32": np.float32,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


@dataclass
class ArenaReport(ArenaUsage):
    """What the host run measured (ArenaUsage: measured_bytes, recorded_bytes, ...), the margins the
    board build adds, and the self-test's inputs and reference outputs."""

    alignment_margin: int
    cmsis_nn_scratch: int  # estimate of the scratch buffers CMSIS-NN kernels add
    inputs: list[np.ndarray] = field(repr=False, default_factory=list)
    outputs: list[np.ndarray] = field(repr=False, default_factory=list)

    @property
    def arena_size(self) -> int:
        """kTensorArenaSize: measured + margins, rounded up to the 16-byte allocation unit."""
        total = self.measured_bytes + self.alignment_margin + self.cmsis_nn_scratch
        return (total + 15) // 16 * 16


def make_test_inputs(model: TfliteModel) -> list[np.ndarray]:
    """Deterministic inputs spanning each input's value range (seeded, so packaging is reproducible)."""
    rng = np.random.default_rng(TEST_INPUT_SEED)
    arrays = []
    for info in model.inputs:
        shape = [d if d > 0 else 1 for d in info.shape]
        dtype = _NUMPY_TYPES.get(info.dtype)
        if dtype is None:
            raise EdgeportError(
                f"{model.path.name}: input {info.name!r} has type {info.dtype}, "
                "which the firmware self-test cannot feed",
                "use float32 or int8/uint8/int16 inputs",
            )
        if dtype == np.float32:
            arrays.append(rng.uniform(-1.0, 1.0, size=shape).astype(np.float32))
        elif dtype in (np.int8, np.uint8, np.int16):
            limits = np.iinfo(dtype)
            arrays.append(rng.integers(limits.min, limits.max, size=shape, endpoint=True, dtype=dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 1, size=shape, endpoint=True).astype(np.bool_))
        else:  # int32/int64 inputs are usually indices: zeros are always in range
            arrays.append(np.zeros(shape, dtype=dtype))
    return arrays


def _aligned4(n: int) -> int:
    return (n + 3) // 4 * 4


# CMSIS-NN's depthwise kernel for MVE works on blocks of this many channels (CH_IN_BLOCK_MVE).
CH_IN_BLOCK_MVE = 124
MVE_CORES = ("cortex-m55", "cortex-m85")


def has_mve(tflm_arch: str) -> bool:
    """True for the Helium (MVE) cores, whose CMSIS-NN kernels ask for other scratch sizes than DSP ones."""
    return tflm_arch.split("+")[0] in MVE_CORES


def _round16(n: int) -> int:
    return (n + 15) // 16 * 16


def cmsis_nn_scratch(model: TfliteModel, mve: bool = False) -> int:
    """What CMSIS-NN kernels add to the reference-kernel arena: the largest scratch buffer, plus on MVE
    the kernel sums fully connected layers keep in persistent memory.

    Only one kernel runs at a time and its scratch is planned alongside that op's tensors, so the
    largest one bounds what CMSIS-NN adds to the reference-kernel arena. Formulas follow CMSIS-NN's
    *_get_buffer_size(). For cores with the DSP extension (Cortex-M4/M7/M33): im2col for general
    convolutions, none for 1x1 stride-1 convolutions and 3x3 depthwise ones, a row accumulator for
    average pooling. For MVE (`mve`, Cortex-M55/M85): 4 im2col rows padded to 16 for convolutions,
    4 x CH_IN_BLOCK_MVE x kernel area for every multiplier-1 depthwise convolution (3x3 included),
    nothing for pooling; and each fully connected layer keeps its output channels' int32 kernel sums
    for the whole run (TFLM's speed-optimized CMSIS-NN build: persistent, so they add up).
    """
    largest = 0
    persistent = 0
    for graph in model.raw.subgraphs:
        tensors = graph.tensors or []
        for op in graph.operators or []:
            name = op_name(model.raw.operatorCodes[op.opcodeIndex])
            ins = list(op.inputs if op.inputs is not None else [])
            kind = tensors[ins[0]].type if ins else None
            if kind not in (schema.TensorType.INT8, schema.TensorType.INT16):
                continue
            need = 0
            if name == "CONV_2D" and len(ins) > 1 and kind == schema.TensorType.INT16:
                # arm_convolve_wrapper_s16: an int16 im2col for every convolution, 1x1 included. Its
                # depthwise and average pooling ask for what the int8 kernels do (TFLM sizes the int16
                # depthwise scratch with the s8 function, by filter type).
                _, kh, kw, in_ch = (int(d) for d in (list(tensors[ins[1]].shape) + [1, 1, 1, 1])[:4])
                need = 4 * ((kh * kw * in_ch + 7) // 8) * 8 * 2 if mve else 2 * kh * kw * in_ch * 2
            elif name == "CONV_2D" and len(ins) > 1:
                out_ch, kh, kw, in_ch = (int(d) for d in (list(tensors[ins[1]].shape) + [1, 1, 1, 1])[:4])
                options = op.builtinOptions
                pointwise = kh == 1 and kw == 1 and getattr(options, "strideW", 1) == 1
                pointwise = pointwise and getattr(options, "strideH", 1) == 1
                if not pointwise:
                    need = 4 * _round16(kh * kw * in_ch) if mve else 2 * _aligned4(kh * kw * in_ch) * 2
            elif name == "DEPTHWISE_CONV_2D" and len(ins) > 1:
                _, kh, kw, channels = (int(d) for d in (list(tensors[ins[1]].shape) + [1, 1, 1, 1])[:4])
                in_ch = int((list(tensors[ins[0]].shape) or [1])[-1])
                if mve:
                    if in_ch == channels:
                        need = 4 * CH_IN_BLOCK_MVE * kh * kw
                    elif in_ch == 1:  # run as a convolution
                        need = 4 * _round16(kh * kw)
                elif not (kh == 3 and kw == 3):
                    need = channels * kh * kw * 2
            elif name == "FULLY_CONNECTED" and mve and len(ins) > 1 and kind == schema.TensorType.INT8:
                persistent += _round16(int(tensors[ins[1]].shape[0]) * 4)
            elif name == "AVERAGE_POOL_2D" and not mve:
                need = int(tensors[ins[0]].shape[-1]) * 4
            largest = max(largest, need)
    return int(_round16(largest) + persistent)


def measure(model_path: Path, model: TfliteModel, mve: bool = False) -> ArenaReport:
    """Run the (already verified) model once in TFLite Micro and report its arena; `mve`: the CMSIS-NN
    scratch estimate is for a Helium core (see cmsis_nn_scratch)."""
    inputs = make_test_inputs(model)
    # The runtime needs an upper bound up front; the recorded total does not depend on it.
    generous = max(64 * 1024 * 1024, 10 * model.size_bytes)
    run = tflm.run_tflm(
        model_path.read_bytes(),
        [inputs],
        model.path.name,
        arena_size=generous,
        measure_arena=True,
        timeout=PROBE_TIMEOUT_S,
    )
    assert run.arena is not None  # measure_arena=True
    return ArenaReport(
        **vars(run.arena),
        alignment_margin=ALIGNMENT_MARGIN,
        cmsis_nn_scratch=cmsis_nn_scratch(model, mve),
        inputs=inputs,
        outputs=run.raw_outputs[0],
    )
