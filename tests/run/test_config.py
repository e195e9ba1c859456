"""The `edgeport run` config: keys from the options models, variants, and every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgeport.errors import EdgeportError
from edgeport.run.config import ConfigError, axes, convert_keys, expand, load_config, safe_name, token
from edgeport.run.execute import inside
from edgeport.run.init import example_names, write_example

MODEL = "import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n"


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "net.py").write_text(MODEL)
    path = tmp_path / "edgeport.toml"
    path.write_text(text)
    return path


GOOD = """
[model]
source = "net.py:build"
input-shape = "1,4"
[recipe]
quantize = ["none", "int8"]
calibration-method = "input-stats"
[targets.cortex-m]
board = "nucleo-h743zi2"
"""


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_keys_are_the_flags_without_dashes():
    keys = convert_keys()
    # QuantOptions.mode is --quantize, ranges --activation-ranges; ConvertOptions' own fields alike.
    assert keys["quantize"].field == "mode" and keys["quantize"].main
    assert keys["activation-ranges"].field == "ranges" and not keys["activation-ranges"].main
    assert keys["input-shape"].field == "input_shapes" and keys["input-shape"].many
    assert keys["fold-bn"].field == "fold_bn"
    assert not {"outdir", "force", "debug"} & {k.field for k in keys.values()}


def test_a_good_config_gives_its_variants_and_targets(tmp_path):
    config = load_config(write(tmp_path, GOOD))
    assert [v.name for v in config.variants] == ["float", "int8"]
    float_, int8 = config.variants
    assert float_.options.quantize is None
    # The calibration method applies to the int8 variant only; the float one goes without it.
    assert int8.options.quantize.mode == "int8" and int8.options.quantize.method == "input-stats"
    assert int8.options.input_shapes == [[1, 4]]
    assert Path(int8.options.source.rpartition(":")[0]) == tmp_path / "net.py"
    assert [(t.name, t.options.board) for t in config.targets] == [("cortex-m", "nucleo-h743zi2")]


def test_every_kind_of_problem_is_reported_at_once(tmp_path):
    path = write(
        tmp_path,
        """
outptu = "x"
[model]
source = "missing.py:build"
input-shape = "1,a"
[recipe]
quantise = "int8"
fold-bn = "yes"
weight-clusters = 16
[targets.cortex-n]
board = "x"
[targets.cortex-m]
bord = "nucleo-h743zi2"
""",
    )
    found = problems(path)
    expected = [
        "unknown key 'outptu'; did you mean 'output'?",
        "[recipe] unknown key 'quantise'; did you mean 'quantize'?",
        "[recipe] fold-bn: Input should be a valid boolean",
        "[model] source: missing.py does not exist",
        "[model] input-shape '1,a' is not a shape",
        "[recipe] weight-clusters was given without quantize",
        "[targets] unknown target 'cortex-n'; did you mean 'cortex-m'?",
        "[targets.cortex-m] unknown key 'bord'; did you mean 'board'?",
    ]
    for line in expected:
        assert sum(p.startswith(line) for p in found) == 1, (line, found)
    assert len(found) == len(expected), found
    message = ConfigError(path, found).one_line()
    assert message.startswith(f"{path} has {len(expected)} problems:\n") and message.count("\n") == len(
        expected
    )


def test_a_key_in_the_wrong_section_is_named_with_its_section(tmp_path):
    text = GOOD.replace(
        'input-shape = "1,4"', 'input-shape = "1,4"\nopset = 17\ncalibration-method = "gaussian"'
    )
    text = text.replace('calibration-method = "input-stats"\n', "opset2 = 1\n")
    found = problems(write(tmp_path, text))
    assert "[model] unknown key 'calibration-method'; 'calibration-method' belongs in [recipe]" in found
    assert any(
        p.startswith("[recipe] unknown key 'opset2'; did you mean 'opset' (in [model])?") for p in found
    ), found


def test_an_option_that_applies_to_no_variant_is_refused(tmp_path):
    # weight-clusters is an int8 option: with w4a8 only it applies nowhere.
    text = GOOD.replace('quantize = ["none", "int8"]', 'quantize = "w4a8"\nweight-clusters = 16')
    (line,) = problems(write(tmp_path, text))
    assert line.startswith("[recipe] weight-clusters applies to int8 weights, but quantize is w4a8")
    assert "in every variant" in line


def test_a_companion_applies_to_the_variants_it_means_something_for(tmp_path):
    text = GOOD.replace('quantize = ["none", "int8"]', 'quantize = ["int8", "w4a8"]\nweight-clusters = 16')
    config = load_config(write(tmp_path, text))
    int8, w4a8 = config.variants
    assert int8.options.quantize.weight_clusters == 16 and w4a8.options.quantize.weight_clusters is None


def test_a_bad_value_in_a_variant_list_is_one_line(tmp_path):
    (line,) = problems(write(tmp_path, GOOD.replace('"none", "int8"', '"none", "int9"')))
    assert line.startswith("[recipe] unknown quantize mode 'int9'")


def test_no_target_and_a_bad_bench_are_problems(tmp_path):
    text = GOOD.replace('[targets.cortex-m]\nboard = "nucleo-h743zi2"\n', "")
    text += '[bench]\non = ["hots", "qemu:mps2-an386"]\nruns = 0\n'
    found = problems(write(tmp_path, text))
    assert any(p.startswith("[bench] unknown runner 'hots'") for p in found), found
    assert any("qemu:mps2-an386 measures a cortex-m package" in p for p in found), found
    assert any(p.startswith("[bench] runs:") for p in found), found


def test_toml_syntax_error_is_one_line(tmp_path):
    with pytest.raises(EdgeportError, match="is not valid TOML"):
        load_config(write(tmp_path, "[model\n"))


def test_variants_are_the_cartesian_product_in_the_order_given():
    keys = convert_keys()
    given = {"source": "m.py:build", "quantize": ["none", "int8"], "opset": [13, 17], "input-shape": ["1,4"]}
    varied = axes(given, keys)
    # input-shape takes a list of its own: not a variant axis.
    assert [name for name, _ in varied] == ["quantize", "opset"]
    points = expand(given, varied)
    assert [(p["quantize"], p["opset"]) for p in points] == [
        ("none", 13),
        ("none", 17),
        ("int8", 13),
        ("int8", 17),
    ]
    assert all(p["input-shape"] == ["1,4"] for p in points)


def test_variant_names_are_path_components():
    keys = convert_keys()
    assert token("quantize", "none", keys["quantize"]) == "float"
    assert token("quantize", "w4a8", keys["quantize"]) == "w4a8"
    assert token("opset", 13, keys["opset"]) == "opset13"
    assert safe_name("../../etc") == "etc" and "/" not in safe_name("a/b")


def test_output_paths_cannot_leave_the_output_directory(tmp_path):
    assert inside(tmp_path, "variants/int8") == tmp_path / "variants/int8"
    with pytest.raises(EdgeportError, match="leaves the output directory"):
        inside(tmp_path, "../elsewhere")


def test_init_writes_a_config_that_validates(tmp_path, run_cli):
    assert "kws_dscnn" in example_names()
    code, out, _ = run_cli("init", "-o", tmp_path / "edgeport.toml")
    assert code == 0 and (tmp_path / "kws_dscnn.py").is_file()
    config = load_config(tmp_path / "edgeport.toml")
    assert [v.name for v in config.variants] == ["float", "int8"] and config.targets
    assert config.output == tmp_path / "out" / "kws"
    code, out, _ = run_cli("run", tmp_path / "edgeport.toml", "--check")
    assert code == 0 and "variants: float, int8" in out
    # Nothing is overwritten without --force.
    code, _, err = run_cli("init", "-o", tmp_path / "edgeport.toml")
    assert code == 1 and "already exist" in err
    assert write_example("kws_dscnn", tmp_path / "edgeport.toml", force=True)


def test_run_reports_every_problem_through_the_cli(tmp_path, run_cli):
    path = write(tmp_path, GOOD.replace("[recipe]", "[recipe]\nquantise = 1\nfold-bn = 2"))
    code, out, err = run_cli("run", path, "-o", tmp_path / "out")
    assert code == 1 and not (tmp_path / "out").exists()
    assert err.startswith(f"edgeport: error: {path} has 2 problems:\n")
    assert "Traceback" not in err


def test_each_variant_is_the_convert_command_it_names(tmp_path, run_cli, monkeypatch):
    """The keys are the flags: `edgeport convert` given a variant's command builds the same options."""
    import edgeport.pipeline

    text = GOOD.replace("[recipe]", '[recipe]\nfold-bn = false\nactivation-ranges = "percentile"')
    config = load_config(write(tmp_path, text))
    seen = []

    def capture(options, observer=None):
        seen.append(options)
        raise EdgeportError("captured")

    monkeypatch.setattr(edgeport.pipeline, "convert_model", capture)
    monkeypatch.chdir(tmp_path)
    for variant in config.variants:
        code, _, err = run_cli(*variant.command[1:], "-o", "out")
        assert code == 1 and "captured" in err, err
        expected = variant.options.model_dump(exclude={"source", "outdir"})
        assert seen[-1].model_dump(exclude={"source", "outdir", "debug"}) == {
            k: v for k, v in expected.items() if k != "debug"
        }
    assert "--no-fold-bn" in config.variants[0].command
    assert "--activation-ranges" not in config.variants[0].command  # the float variant goes without it


def test_a_package_runner_measures_the_package_for_its_board(tmp_path):
    from edgeport.run.execute import package_for

    text = GOOD.replace('board = "nucleo-h743zi2"', 'board = ["nucleo-h743zi2", "mps2-an386"]')
    targets = load_config(write(tmp_path, text)).targets
    assert [t.name for t in targets] == ["cortex-m-nucleo-h743zi2", "cortex-m-mps2-an386"]
    assert package_for(targets, "cortex-m", "mps2-an386") == "cortex-m-mps2-an386"
    assert package_for(targets, "cortex-m", "corstone-300") == "cortex-m-nucleo-h743zi2"
    assert package_for(targets, None, None) == "model"


def test_outdir_rules_are_checked_before_any_work(tmp_path):
    from edgeport.run import run

    config = load_config(write(tmp_path, GOOD))
    out = tmp_path / "out"
    with pytest.raises(EdgeportError, match="--cache-dir .* is inside the output directory"):
        run(config, out, cache_dir=out / "cache")
    (out / "results").mkdir(parents=True)
    with pytest.raises(EdgeportError, match="exists and is not empty"):
        run(config, out)
    assert sorted(p.name for p in out.iterdir()) == ["results"]


def test_bench_paths_are_relative_to_the_config(tmp_path):
    text = GOOD + '[bench]\non = ["host"]\nruns = 3\ntflm-root = "tflm"\n'
    bench = load_config(write(tmp_path, text)).bench
    assert bench.runners == ["host"] and bench.settings == {"runs": 3}
    assert bench.runner_options.tflm_root == tmp_path / "tflm"


def test_a_config_path_is_relative_to_the_configs_folder_unless_absolute(tmp_path, monkeypatch):
    from edgeport.options import config_relative

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    base = tmp_path / "project"
    assert config_relative("data/val.npz", base) == base / "data/val.npz"
    assert config_relative(str(tmp_path / "x.npz"), base) == tmp_path / "x.npz"
    assert config_relative("~/x.npz", base) == tmp_path / "home/x.npz"


def test_output_is_relative_to_the_config_and_expands_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert load_config(write(tmp_path, 'output = "out"\n' + GOOD)).output == tmp_path / "out"
    assert load_config(write(tmp_path, 'output = "~/runs/a"\n' + GOOD)).output == tmp_path / "home/runs/a"


def test_a_missing_benchmark_binary_is_a_config_problem(tmp_path):
    """It must exist; without this the adb runner would refuse it only after every conversion."""
    text = GOOD + '[bench]\non = ["host"]\nbenchmark-binary = "bin/benchmark_model"\n'
    (line,) = problems(write(tmp_path, text))
    assert line == (
        "[bench] benchmark-binary: bin/benchmark_model does not exist "
        "(paths are relative to the config's folder)"
    )
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/benchmark_model").write_bytes(b"\x7fELF")
    options = load_config(write(tmp_path, text)).bench.runner_options
    assert options.benchmark_binary == tmp_path / "bin/benchmark_model"


def test_the_package_command_names_the_options_as_flags(tmp_path):
    from edgeport.run.execute import VariantJob, package_command

    text = GOOD.replace('board = "nucleo-h743zi2"', 'board = "mps2-an386"\nfit-check = false\nname = "kws"')
    config = load_config(write(tmp_path, text))
    job = VariantJob(config.variants[0], config.targets, tmp_path, None, {})  # type: ignore[arg-type]
    command = package_command(tmp_path / "variants/float/model", config.targets[0], "variants/float/cm", job)
    assert command == (
        "edgeport package variants/float/model --target cortex-m --board mps2-an386 --name kws "
        "--no-fit-check -o variants/float/cm"
    )


def test_validation_problems_are_reported_with_the_rest(tmp_path):
    text = GOOD + '[validation]\ndata = "val.npz"\nmetrik = "top-1"\n'
    assert problems(write(tmp_path, text)) == ["[validation] unknown key 'metrik'; did you mean 'metric'?"]
    (line,) = problems(write(tmp_path, GOOD + '[validation]\ndata = "val.npz"\n'))
    assert line.startswith("[validation] data:") and "does not exist" in line
    (tmp_path / "val.npz").write_bytes(b"")  # a file, but not an .npz: refused before any work
    (line,) = problems(write(tmp_path, GOOD + '[validation]\ndata = "val.npz"\n'))
    assert line.startswith("[validation] validation data") and "is not a readable .npz" in line
    np.savez(tmp_path / "val.npz", x=np.zeros((2, 4), np.float32))
    assert load_config(write(tmp_path, GOOD + '[validation]\ndata = "val.npz"\n')).validation.data == (
        tmp_path / "val.npz"
    )


def test_bench_runner_problems_name_the_options_as_the_config_writes_them(tmp_path, monkeypatch):
    """The runners' own messages take the wording as a parameter: `on =` and `tflm-root =` in a config,
    `--on` and `--tflm-root` on the command line, from the same raise sites."""
    from edgeport.bench.runner import RunnerOptions, cli_words
    from edgeport.run.config import config_words, runner_problems

    monkeypatch.delenv("TFLM_ROOT", raising=False)
    specs = ["host:x", "qemu:nosuch", "qemu:mps2-an386"]
    in_config = runner_problems(specs, RunnerOptions(), config_words)
    assert len(in_config) == 3
    assert in_config[0] == "[bench] on = host takes no argument (got host:x). Write on = host."
    assert "unknown board 'nosuch'" in in_config[1] and "Use on = qemu:BOARD with one of: " in in_config[1]
    assert "pass tflm-root = DIR or set TFLM_ROOT" in in_config[2]
    on_cli = runner_problems(specs, RunnerOptions(), cli_words)
    assert on_cli[0] == "[bench] --on host takes no argument (got host:x). Write --on host."
    assert "Use --on qemu:BOARD" in on_cli[1] and "pass --tflm-root DIR or set TFLM_ROOT" in on_cli[2]
    # A spec that names no runner is one problem (check_bench's), not one more from making it.
    found = problems(write(tmp_path, GOOD + '[bench]\non = ["qemu:", "hots"]\n'))
    assert "[bench] on = qemu:: nothing after the colon. Write on = qemu:BOARD." in found
    assert sum("nothing after the colon" in p for p in found) == 1
    assert sum("unknown runner 'hots'" in p for p in found) == 1
