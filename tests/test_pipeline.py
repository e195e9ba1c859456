"""The convert pipeline's spine: pass registries, stage boundaries, process-wide state, progress."""

from __future__ import annotations

import io
import os
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from edgeport.converters.rewrites import REWRITES
from edgeport.converters.sources import LoadedSource
from edgeport.errors import EdgeportError
from edgeport.manifest import MANIFEST_NAME
from edgeport.pipeline import ConvertOptions, convert_model, onnx_passes, stages, where_the_time_went
from edgeport.pipeline.passes import ChangedReport, Pass, run_passes
from edgeport.pipeline.state import ConvertState
from edgeport.pipeline.torch_passes import TorchModel


def chain_model(path: Path) -> Path:
    """x[1,16] -> Relu -> Sigmoid -> Tanh: three nodes with float outputs for the bisection to probe."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="act_relu"),
        helper.make_node("Sigmoid", ["r"], ["s"], name="act_sigmoid"),
        helper.make_node("Tanh", ["s"], ["y"], name="act_tanh"),
    ]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _counting(name: str) -> Pass:
    return Pass(name, f"adds {name}", lambda m: (m + [name], ChangedReport(name=name, applied=True)))


def test_run_passes_in_order_skipping_by_name() -> None:
    registry = [_counting("a"), _counting("b"), _counting("c")]
    model, reports, skipped = run_passes(registry, [], ["b"], "test")
    assert model == ["a", "c"]
    assert [r.name for r in reports] == ["a", "c"] and [p.name for p in skipped] == ["b"]
    assert reports[0].entry() == {"name": "a", "applied": True}


def test_a_raising_pass_is_a_conversion_error_naming_it() -> None:
    def broken(_model: list) -> tuple:
        raise KeyError("x.1")

    with pytest.raises(
        EdgeportError, match=r"pass 'broken' failed .*KeyError: 'x.1'.*--skip-pass broken"
    ) as err:
        run_passes([_counting("a"), Pass("broken", "", broken)], [], [], "ONNX")
    assert isinstance(err.value.__cause__, KeyError)


def test_list_passes_shows_every_registered_pass_in_order(run_cli) -> None:
    code, out, _ = run_cli("convert", "--list-passes")
    assert code == 0
    names = [p.name for p in onnx_passes.ONNX_PASSES]
    assert names[:5] == [
        "fold_fixed_inputs",
        "dequantize_qdq",
        "fold_batch_norms",
        "onnxsim",
        "index_inputs_int32",
    ]
    assert names[5:] == [name for name, _ in REWRITES]
    positions = [out.index(f"  {name} ") for name in names]
    assert positions == sorted(positions)
    assert "PyTorch passes" in out and out.index("  prune ") < out.index("ONNX passes")


def test_unknown_skip_pass_is_one_line_naming_the_known_ones(run_cli, tmp_path: Path) -> None:
    code, _, err = run_cli("convert", "m.onnx", "-o", tmp_path / "o", "--skip-pass", "fold_bn")
    assert code == 1 and "'fold_bn'" in err and "fold_batch_norms" in err and "erf_gelu_to_gelu" in err
    assert err.strip().count("\n") == 0 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def _state_after_export(tmp_path: Path, **options: object) -> ConvertState:
    state = ConvertState(options=ConvertOptions(source="m.onnx", outdir=tmp_path / "o", **options))
    state.stage_dir = tmp_path
    state.exported = onnx.load(str(chain_model(tmp_path / "m.onnx")))
    return state


def test_onnx_pass_stage_skips_and_reports(tmp_path: Path) -> None:
    state = _state_after_export(tmp_path, skip_passes=["onnxsim"], fold_bn=False)
    before = state.exported.SerializeToString()
    stages.onnx_passes(state)
    assert state.exported.SerializeToString() == before, "the unfolded export stays as it was"
    assert state.skipped_passes == ["fold_batch_norms", "onnxsim"]
    entries = {p.name: p.model_dump() for p in state.manifest.passes}
    assert entries["fold_batch_norms"] == {"name": "fold_batch_norms", "skipped": True}
    assert entries["onnxsim"] == {"name": "onnxsim", "skipped": True}
    # Both skipped passes would be redone by onnx2tf's own onnxsim run: it is turned off.
    assert entries["onnx2tf_rewrites"]["onnx2tf_options"] == {"not_use_onnxsim": True}
    assert (tmp_path / "model.onnx").exists()


def test_onnx_pass_stage_turns_a_raising_rewrite_into_an_error(tmp_path: Path, monkeypatch) -> None:
    def broken(_model: onnx.ModelProto) -> tuple:
        raise ValueError("unexpected attribute")

    monkeypatch.setattr(stages, "ONNX_PASSES", [*onnx_passes.ONNX_PASSES, Pass("late_rewrite", "", broken)])
    with pytest.raises(EdgeportError, match="'late_rewrite' failed .*ValueError: unexpected attribute"):
        stages.onnx_passes(_state_after_export(tmp_path))


def test_pytorch_passes_work_on_a_copy(tmp_path: Path, monkeypatch) -> None:
    def zero(model: TorchModel) -> tuple:
        with torch.no_grad():
            model.module.weight.zero_()
        return model, ChangedReport(name="zero", applied=True)

    monkeypatch.setattr(stages, "TORCH_PASSES", [Pass("zero", "zero the weights in place", zero)])
    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 2)
    original = reference.weight.detach().clone()
    state = ConvertState(options=ConvertOptions(source="m.py:build", outdir=tmp_path, input_shapes=[[1, 4]]))
    state.source = LoadedSource(kind="python", path=tmp_path / "m.py", module=reference)
    state.reference = state.module = reference
    assert stages._torch_passes_to_run(state)
    stages.torch_passes(state)
    assert torch.equal(reference.weight, original), "the verification reference must not change"
    assert not state.module.weight.any() and state.module is not reference
    assert [r.name for r in state.pass_reports] == ["zero"]
    state.options.skip_passes = ["zero"]
    assert not stages._torch_passes_to_run(state)


def test_onnx2tf_failure_names_the_onnx_node(tmp_path: Path, monkeypatch) -> None:
    """An exception inside onnx2tf is a conversion error naming the node bisection finds; nothing written."""
    import onnx2tf

    real = onnx2tf.convert

    def fails_on_sigmoid(**options: object) -> object:
        graph = onnx.load(str(options["input_onnx_file_path"])).graph
        if any(node.op_type == "Sigmoid" for node in graph.node):
            raise ValueError("Dimensions must be equal (simulated BatchMatMul mismatch)")
        return real(**options)

    monkeypatch.setattr(onnx2tf, "convert", fails_on_sigmoid)
    cwd = os.getcwd()
    out = tmp_path / "out"
    with pytest.raises(EdgeportError) as err:
        convert_model(ConvertOptions(source=str(chain_model(tmp_path / "m.onnx")), outdir=out))
    message = err.value.one_line()
    assert "at ONNX node act_sigmoid (Sigmoid)" in message, message
    assert "ValueError: Dimensions must be equal" in message and "--debug" in message
    assert not out.exists() and os.getcwd() == cwd


@pytest.mark.parametrize("failure", [RuntimeError("boom"), SystemExit(1)])
def test_a_failed_onnx2tf_run_restores_cwd_and_patched_modules(tmp_path: Path, monkeypatch, failure) -> None:
    import onnx2tf
    import onnx2tf.onnx2tf as onnx2tf_main
    import onnx2tf.utils.common_functions as onnx2tf_common
    import requests

    from edgeport.converters.onnx_to_tflite import ConversionFailed, onnx_to_keras

    def raising(**_options: object) -> None:
        assert onnx2tf_main.download_test_image_data is not before[0], "patched while onnx2tf runs"
        assert Path.cwd() == (tmp_path / "work").resolve()
        raise failure

    before = (
        onnx2tf_main.download_test_image_data,
        onnx2tf_common.download_test_image_data,
        requests.get,
        requests.Session.request,
    )
    monkeypatch.setattr(onnx2tf, "convert", raising)
    (tmp_path / "work").mkdir()
    cwd = os.getcwd()
    with pytest.raises(ConversionFailed):
        onnx_to_keras(chain_model(tmp_path / "m.onnx"), tmp_path / "work", [])
    assert os.getcwd() == cwd
    after = (
        onnx2tf_main.download_test_image_data,
        onnx2tf_common.download_test_image_data,
        requests.get,
        requests.Session.request,
    )
    assert all(a is b for a, b in zip(after, before, strict=True))


class _Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def started(self, stage: str) -> None:
        self.events.append(("started", stage))

    def finished(self, stage: str, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("finished", stage))


def test_api_convert_reports_each_stage_and_leaves_stdout_stderr_alone(tmp_path: Path, monkeypatch) -> None:
    redirected: list[int] = []
    real_dup2 = os.dup2

    def watching_dup2(fd: int, fd2: int, inheritable: bool = True) -> int:
        redirected.append(fd2)
        return real_dup2(fd, fd2, inheritable)

    monkeypatch.setattr(os, "dup2", watching_dup2)
    recorder = _Recorder()
    result = convert_model(
        ConvertOptions(source=str(chain_model(tmp_path / "m.onnx")), outdir=tmp_path / "out"), recorder
    )
    assert not {1, 2} & set(redirected), "the Python API must not capture the caller's fd 1/2"
    # Every stage in STAGES order, except those with nothing to do (no PyTorch pass, no --quantize).
    ran = [stage.name for stage in stages.STAGES if stage.name not in ("pytorch passes", "quantize")]
    assert {"load", "export", "onnx passes", "tflite", "verify", "manifest"} <= set(ran)
    assert recorder.events == [(event, name) for name in ran for event in ("started", "finished")]
    assert list(result.timings) == ran
    assert "most time: " in result.summary()
    manifest = (tmp_path / "out" / MANIFEST_NAME).read_text()
    assert '"stage tflite"' in manifest  # stage seconds go to the manifest's run block


def test_where_the_time_went_names_the_slowest_stages() -> None:
    timings = {"load": 0.1, "export": 1.0, "tflite": 5.25, "quantize": 140.0, "manifest": 0.01}
    assert where_the_time_went(timings) == "most time: quantize 140.0s, tflite 5.2s, export 1.0s"


def test_stage_display_prints_each_finished_stage_unless_quiet() -> None:
    from edgeport.cli.progress import StageDisplay

    shown = io.StringIO()
    display = StageDisplay(shown)
    display.started("tflite")
    display.finished("tflite", 12.34)
    display.close()
    assert "tflite" in shown.getvalue() and "12.3s" in shown.getvalue()
    silent = io.StringIO()
    quiet = StageDisplay(silent, enabled=False)
    quiet.started("tflite")
    quiet.finished("tflite", 1.0)
    assert silent.getvalue() == ""


def test_stage_display_writes_a_stages_steps_into_a_log_at_most_every_log_every_seconds() -> None:
    """Into a log (not a terminal) a long stage's steps are lines, the first at once, then one per
    LOG_EVERY seconds (a fake clock: no timing), each written whole however long."""
    from edgeport.cli.progress import LOG_EVERY, StageDisplay

    now = [0.0]
    log = io.StringIO()
    display = StageDisplay(log, clock=lambda: now[0])
    display.started("prune")
    long_step = "prune: recovery: step 1/400, loss " + "0.123 " * 30
    display.started(long_step)
    now[0] += LOG_EVERY / 2
    display.started("prune: recovery: step 2/400")
    now[0] += LOG_EVERY
    display.started("prune: recovery: step 3/400")
    display.finished("prune", 61.0)
    display.started("tflite")
    display.started("tflite: converting")
    lines = log.getvalue().splitlines()
    assert lines == [
        f"  {long_step}",
        "  prune: recovery: step 3/400",
        f"  {'prune':<16}{61.0:7.1f}s",
        "  tflite: converting",
    ]


def test_tflite_converter_error_with_a_printed_tensor_is_not_a_missing_kernel(monkeypatch) -> None:
    """`tf.Tensor(` inside an ordinary converter error is a value, not an op without a builtin kernel."""
    import tensorflow as tf

    from edgeport.converters.onnx_to_tflite import ConversionFailed, keras_to_tflite

    class Converter:
        target_spec = type("Spec", (), {})()

        def convert(self) -> bytes:
            raise ValueError("Shapes tf.Tensor([1 2], shape=(2,), dtype=int32) and (3,) are incompatible")

    monkeypatch.setattr(tf.lite.TFLiteConverter, "from_keras_model", lambda _model: Converter())
    with pytest.raises(ConversionFailed, match="TFLite converter failed: Shapes") as err:
        keras_to_tflite(object())
    assert "builtin kernel" not in str(err.value)


def test_the_quantize_stage_shows_its_steps(tmp_path: Path) -> None:
    from edgeport.quant.modes import QuantOptions

    recorder = _Recorder()
    convert_model(
        ConvertOptions(
            source=str(chain_model(tmp_path / "m.onnx")),
            outdir=tmp_path / "out",
            quantize=QuantOptions(mode="int8", method="gaussian"),
        ),
        recorder,
    )
    steps = [name for event, name in recorder.events if name.startswith("quantize: ")]
    assert steps == [
        "quantize: calibrating activation ranges",
        "quantize: quantizing",
        "quantize: checking in TFLite Micro",
        "quantize: measuring fidelity",
    ]
    assert recorder.events[-2:] == [("started", "manifest"), ("finished", "manifest")]
