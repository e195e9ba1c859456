"""`edgeport run` and the files its options name: their bytes are in the key of the stage that reads them,
and the android package's own host timing is off in a run unless the config asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.pipeline.state import ConvertOptions
from edgeport.quant.modes import QuantOptions
from edgeport.run import load_config, run
from edgeport.run.config import TargetSpec, check_targets, config_path, file_option, split_file
from edgeport.run.execute import convert_key, package_key
from edgeport.targets import get_target

TOOLS = {"edgeport-code": "fixed for this test", "onnx2tf": "test"}
KWS = Path(__file__).resolve().parents[2] / "examples" / "kws_dscnn.py"
LABELS = [f"word{i}" for i in range(12)]  # the KWS example has 12 classes


def _android(labels: list[str]) -> TargetSpec:
    options = get_target("android").options.model_validate({"labels": [str(p) for p in labels]})
    return TargetSpec("android", "android", options)


def test_file_options_are_found_from_the_option_models():
    android = get_target("android").options.model_fields
    assert file_option(android["labels"]) == "text" and file_option(android["calibration"]) == "path"
    assert file_option(android["mean"]) is None and file_option(android["latency"]) is None
    assert file_option(QuantOptions.model_fields["calibration"]) == "path"
    assert split_file("logits=a=b/labels.txt", "text") == ("logits=a=", "b/labels.txt")
    assert split_file("x=y.npz", "path") == ("", "x=y.npz")


def test_a_config_path_is_relative_to_the_configs_folder_and_checked(tmp_path, monkeypatch):
    (tmp_path / "here.txt").write_text("x")
    monkeypatch.setenv("HOME", str(tmp_path))
    problems: list[str] = []
    assert config_path("here.txt", tmp_path, "[model] a", problems) == tmp_path / "here.txt"
    assert config_path("~/here.txt", Path("/elsewhere"), "[model] b", problems) == tmp_path / "here.txt"
    assert config_path(str(tmp_path / "here.txt"), Path("/elsewhere"), "c", problems) == tmp_path / "here.txt"
    assert not problems
    assert config_path("gone.txt", tmp_path, "[targets.android] labels", problems) == tmp_path / "gone.txt"
    assert problems == [
        "[targets.android] labels: gone.txt does not exist (paths are relative to the config's folder)"
    ]


def test_a_package_key_follows_its_files_bytes_not_their_folder(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        (tmp_path / folder / "labels.txt").write_text("yes\nno\n")
    key = package_key("c0", _android([tmp_path / "a/labels.txt"]))
    assert package_key("c0", _android([tmp_path / "b/labels.txt"])) == key
    assert package_key("c0", _android([f"out={tmp_path / 'a/labels.txt'}"])) != key  # another output
    (tmp_path / "a/labels.txt").write_text("yes\nmaybe\n")  # same name, new content
    assert package_key("c0", _android([tmp_path / "a/labels.txt"])) != key


def test_a_convert_key_follows_nested_file_options(tmp_path):
    """Calibration of the quantization and pruning's finetune data, both in nested options models."""
    (tmp_path / "m.py").write_text("def build(): pass\n")
    data = tmp_path / "cal.npy"
    data.write_bytes(b"one")

    def key(**quantize: object) -> str:
        options = ConvertOptions(
            source=f"{tmp_path / 'm.py'}:build", outdir=Path("."), quantize=QuantOptions(**quantize)
        )
        return convert_key(options, TOOLS)

    before = key(mode="int8", calibration=data)
    assert key(mode="int8", calibration=data) == before
    data.write_bytes(b"two")
    assert key(mode="int8", calibration=data) != before

    from edgeport.quant.prune.options import PruneOptions

    data.write_bytes(b"one")
    options = ConvertOptions(
        source=f"{tmp_path / 'm.py'}:build",
        outdir=Path("."),
        prune=PruneOptions(ratio=0.5, finetune_data=data),
    )
    pruned = convert_key(options, TOOLS)
    data.write_bytes(b"two")
    assert convert_key(options, TOOLS) != pruned


def test_android_latency_is_off_in_a_run_unless_the_config_sets_it():
    (default,), problems = check_targets({"android": {}})
    assert not problems and default.options.latency is False
    (asked,), problems = check_targets({"android": {"latency": True}})
    assert not problems and asked.options.latency is True
    assert get_target("android").options().latency is True  # `edgeport package` keeps timing by default


def _config(folder: Path, labels: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    config = folder / "edgeport.toml"
    config.write_text(
        f'[model]\nsource = "{KWS.as_posix()}:build"\ninput-shape = "1,1,49,10"\n\n'
        '[recipe]\nquantize = "none"\n\n'
        '[targets.android]\nlabels = "labels.txt"\nvariants = "float32"\nbundle = false\n'
    )
    return config


@pytest.fixture
def fixed_tools(monkeypatch):
    # Other work in a shared checkout must not change the code digest between the runs below.
    monkeypatch.setattr("edgeport.run.execute.tools_digest", lambda: TOOLS)


def _package(result) -> tuple[bool, Path]:
    (variant,) = result.variants
    (stage,) = [s for s in variant.stages if s.stage == "package:android"]
    assert not stage.error, stage.error
    return stage.cached, result.outdir / stage.path


def test_editing_a_labels_file_repackages_and_an_unchanged_one_is_cached(tmp_path, fixed_tools):
    cache = tmp_path / "cache"
    config = _config(tmp_path / "project", LABELS)
    cached, _ = _package(run(load_config(config), tmp_path / "out1", jobs=1, cache_dir=cache, quiet=True))
    assert not cached
    cached, _ = _package(run(load_config(config), tmp_path / "out2", jobs=1, cache_dir=cache, quiet=True))
    assert cached

    _config(tmp_path / "project", ["edited", *LABELS[1:]])  # same file name, new first label
    result = run(load_config(config), tmp_path / "out3", jobs=1, cache_dir=cache, quiet=True)
    cached, package = _package(result)
    assert not cached
    convert = [s for s in result.variants[0].stages if s.stage == "convert"]
    assert convert and convert[0].cached  # the labels are read by the package stage only
    texts = [p.read_text() for p in package.rglob("*.txt") if "word1" in p.read_text()]
    assert texts and all(t.splitlines()[0] == "edited" for t in texts)


def test_the_example_config_needs_no_latency_line():
    config = load_config(Path(__file__).resolve().parents[2] / "examples" / "kws_dscnn.toml")
    (android,) = [t for t in config.targets if t.target == "android"]
    assert android.options.latency is False
