"""What the accelerators take of each variant: XNNPACK measured on this host, the GPU by its rules.

XNNPACK (LiteRT's default CPU delegate on Android): the model is allocated in LiteRT with its default
delegate in a child process (XNNPACK's weight cache has refused a second model in one process, and a
native abort must not end the package) and the nodes the delegate replaced are counted
(edgeport.runtimes.litert.delegated_nodes).

Integer-only: every tensor inside the graph int8/int32 (float only at the model's inputs and outputs),
which NPUs and DSPs behind NNAPI need to take the whole graph.

GPU: what TFLite's GPU delegate would take, from TensorFlow's own rules for it, ported in
gpu_compat.py. TensorFlow's model analyzer (`tf.lite.experimental.Analyzer`, `gpu_compatibility=True`)
lost its GPU checks in TensorFlow 2.19 and prints "compatible" for any model (GATHER_ND, TOPK_V2 and 5-D
tensors included, checked here; tensorflow/tensorflow#77042), and no installed tool runs the GPU
delegate on this host, so the rules are checked statically: no phone GPU runs here.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from edgeport.manifest import Record
from edgeport.targets.android import gpu_compat
from edgeport.tflite_file import parse_tflite, type_name

GPU_NOTE = (
    "GPU delegate: checked against TensorFlow's own static rules for it (TF 2.19-era gpu_compatibility.cc "
    "and the delegate's model builder, ported by edgeport; TF's analyzer no longer checks them), not run "
    "on a phone GPU, where a driver or memory limit can still refuse a node; "
    "`edgeport bench OUTDIR:float16 --on adb --delegate gpu` measures it on a device"
)
INTEGER_TYPES = ("int8", "uint8", "int4", "int16", "int32", "int64", "bool")
CHILD_TIMEOUT_S = 300

# Allocates the model (argv[1]) with LiteRT's default delegate and prints the delegated node count.
_XNNPACK = (
    "import json, sys\n"
    "from edgeport.runtimes.litert import delegated_nodes, interpreter\n"
    "interp = interpreter(open(sys.argv[1], 'rb').read(), delegates=True)\n"
    "interp.allocate_tensors()\n"
    "taken, total = delegated_nodes(interp._get_ops_details())\n"
    "print(json.dumps({'taken': taken, 'total': total}))\n"
)


class GpuFallback(Record):
    node: int  # index in the main subgraph's execution order
    op: str
    rule: str  # the GPU delegate's rule this node fails


class GpuReport(Record):
    OPTIONAL = ("build_problem",)

    supported_nodes: int  # nodes that pass every rule
    partitions: int  # GPU partitions the delegate's greedy partitioner cuts the graph into
    taken_nodes: int  # what it takes with its default options: one partition, the largest
    fallbacks: list[GpuFallback]  # the nodes left to the CPU by a rule
    build_problem: str | None = None  # why the delegate would fail to build its graph (taken_nodes 0)


class DelegateReport(Record):
    OPTIONAL = ("xnnpack_problem",)

    nodes: int
    xnnpack_nodes: int | None  # None: XNNPACK could not be measured (xnnpack_problem says why)
    xnnpack_problem: str | None = None
    float_tensors_inside: int  # float tensors that are neither a model input nor output
    integer_only: bool  # NPU-ready: no float tensor inside the graph
    gpu: GpuReport


def xnnpack_nodes(model: bytes) -> tuple[int | None, str | None]:
    """(nodes XNNPACK takes, None) or (None, why it could not be measured)."""
    with tempfile.NamedTemporaryFile(suffix=".tflite") as file:
        file.write(model)
        file.flush()
        try:
            done = subprocess.run(
                [sys.executable, "-c", _XNNPACK, file.name],
                capture_output=True,
                text=True,
                timeout=CHILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            return None, f"LiteRT with XNNPACK did not finish preparing it in {CHILD_TIMEOUT_S} s"
    if done.returncode != 0:
        if done.returncode < 0:
            return None, f"LiteRT with XNNPACK crashed (signal {-done.returncode}) preparing it"
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        return None, f"LiteRT with XNNPACK failed: {lines[-1] if lines else done.returncode}"
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return int(found["taken"]), None


def float_tensors_inside(model: bytes) -> int:
    """Float tensors of the main subgraph other than its inputs and outputs."""
    graph = parse_tflite(model).raw.subgraphs[0]
    boundary = set(graph.inputs) | set(graph.outputs)
    return sum(
        1
        for index, tensor in enumerate(graph.tensors)
        if index not in boundary and type_name(tensor.type) not in INTEGER_TYPES
    )


def gpu_report(model: bytes) -> GpuReport:
    found = gpu_compat.analyse(parse_tflite(model).raw)
    return GpuReport(
        supported_nodes=len(found.supported),
        partitions=len(found.partitions),
        taken_nodes=len(found.taken),
        fallbacks=[GpuFallback(node=f.node, op=f.op, rule=f.rule) for f in found.fallbacks],
        build_problem=found.build_problem,
    )


def delegate_report(model: bytes) -> DelegateReport:
    taken, problem = xnnpack_nodes(model)
    inside = float_tensors_inside(model)
    return DelegateReport(
        nodes=len(parse_tflite(model).ops),
        xnnpack_nodes=taken,
        xnnpack_problem=problem,
        float_tensors_inside=inside,
        integer_only=inside == 0,
        gpu=gpu_report(model),
    )
