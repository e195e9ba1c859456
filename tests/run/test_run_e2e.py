"""`edgeport run` end to end on the bundled KWS example: float + int8 x cortex-m, benched on the host.

One run's output (module fixture) serves every test; the reruns take their stages from its cache, and one
uncached run of the int8 variant checks that the same config gives the same bytes.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgeport.manifest import MANIFEST_NAME, Manifest
from edgeport.run import load_config, run
from edgeport.run.init import write_example

# The stages' keys include edgeport's own code digest; other work in a shared checkout must not turn the
# reruns below into misses, so the run's tool digest is fixed here (cache keys are tested in test_cache.py).
TOOLS = {"edgeport-code": "fixed for this test", "onnx2tf": "test"}


def _config(folder: Path, board: str = "nucleo-h743zi2", quantize: str = '["none", "int8"]') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "edgeport.toml"
    write_example("kws_dscnn", config, force=True)
    text = config.read_text()
    assert 'quantize = ["none", "int8"]' in text and 'board = "nucleo-h743zi2"' in text
    text = text.replace('quantize = ["none", "int8"]', f"quantize = {quantize}")
    text = text.replace('board = "nucleo-h743zi2"', f'board = "{board}"')
    config.write_text(text.replace("runs = 20", "runs = 5").replace("warmup = 2", "warmup = 1"))
    return config


@pytest.fixture(scope="module")
def fixed_tools():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("edgeport.run.execute.tools_digest", lambda: TOOLS)
        yield


@pytest.fixture(scope="module")
def first(tmp_path_factory, fixed_tools):
    root = tmp_path_factory.mktemp("run")
    config = _config(root / "project")
    result = run(load_config(config), root / "out", jobs=2, quiet=True)
    return config, root / "out", result


def _files(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_every_variant_is_converted_and_packaged(first):
    _, out, result = first
    document = json.loads((out / "run.json").read_text())
    assert [v["name"] for v in document["variants"]] == ["float", "int8"]
    for variant, model in zip(
        document["variants"], ("model_float32.tflite", "model_int8.tflite"), strict=True
    ):
        assert (out / variant["model"] / model).is_file()
        package = out / variant["targets"]["cortex-m"]["package"]
        section = Manifest.read(package).sections["cortex_m"]
        assert section["model"] == model and section["board"] == "nucleo-h743zi2"
        assert (package / "model_data.cc").is_file() and (package / "firmware").is_dir()
    assert not any(s.cached for v in result.variants for s in v.stages)
    assert (out / "edgeport.toml").read_text() == first[0].read_text()


def test_report_has_a_row_per_variant_and_target(first):
    _, out, _ = first
    report = (out / "report.md").read_text()
    lines = [line for line in report.splitlines() if line.startswith("| float") or line.startswith("| int8")]
    cells = [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]
    # The example packages every variant for both targets.
    assert [(row[0], row[1]) for row in cells] == [
        ("float", "cortex-m"),
        ("float", "android"),
        ("int8", "cortex-m"),
        ("int8", "android"),
    ]
    assert cells[1][2] == "model_float32.tflite" and cells[3][2] == "model_int8.tflite"
    float_row, int8_row = cells[0], cells[2]
    assert "model_int8.tflite" in int8_row and "fits" in int8_row and "fits" in float_row
    # SQNR vs float: the int8 variant's measured value, nothing for the float one.
    assert int8_row[9].endswith(" dB") and float_row[9] == "-"
    # MACs: the same float model under both variants (precision does not change them).
    assert int8_row[4] == float_row[4] and float_row[4].endswith(" M") and float(float_row[4][:-2]) > 0
    bench = json.loads((out / "bench" / "host.json").read_text())
    assert [r["model"]["name"] for r in bench["results"]] == ["float", "int8"]
    assert all(r["stats"]["count"] == 5 for r in bench["results"])
    assert int8_row[10] == float_row[10] == "-"  # no validation set: no accuracy
    assert int8_row[11].endswith(" ms") and float_row[11].endswith(" ms")
    assert (
        "the same as `edgeport convert kws_dscnn.py:build --input-shape 1,1,49,10 --quantize int8" in report
    )


def test_an_existing_outdir_is_not_replaced_without_force(first, run_cli):
    config, out, _ = first
    before = (out / "run.json").read_bytes()
    code, _, err = run_cli("run", config, "-o", out)
    assert code == 1 and "exists and is not empty" in err and "--force" in err
    assert (out / "run.json").read_bytes() == before


def test_a_rerun_takes_every_stage_from_the_cache_and_says_so(first, tmp_path, capfd, fixed_tools):
    from edgeport.cli import main

    config, out, _ = first
    target = tmp_path / "again"
    (target / "old").mkdir(parents=True)
    assert main(["run", str(config), "-o", str(target), "--cache-dir", str(out / ".cache"), "-j", "1"]) == 1
    code = main(
        ["run", str(config), "-o", str(target), "--cache-dir", str(out / ".cache"), "--force", "-j", "1"]
    )
    err = capfd.readouterr().err
    assert code == 0, err
    assert "converting" not in err
    for line in ("float: convert cached", "int8: convert cached", "int8: package cortex-m cached"):
        assert line in err
    assert not (target / "old").exists()  # --force replaced it
    assert json.loads((target / "run.json").read_text())["run"]["stages"]["int8/convert"]["cached"]


def test_editing_only_the_target_repackages_without_converting(first, tmp_path, fixed_tools):
    _, out, _ = first
    config = _config(tmp_path / "project", board="stm32f746g-disco")
    result = run(load_config(config), tmp_path / "out", jobs=1, cache_dir=out / ".cache", quiet=True)
    stages = {f"{v.variant}/{s.stage}": s for v in result.variants for s in v.stages}
    assert stages["float/convert"].cached and stages["int8/convert"].cached
    assert not stages["int8/package:cortex-m"].cached
    assert "ran in" in stages["int8/package:cortex-m"].line("int8")
    assert Manifest.read(tmp_path / "out" / "variants/int8/cortex-m").sections["cortex_m"]["board"] == (
        "stm32f746g-disco"
    )


def _same_artifacts(old_dir: Path, new_dir: Path) -> None:
    """The same files with the same bytes; manifests alike apart from their `run` block (seconds, paths)."""
    old, new = _files(old_dir), _files(new_dir)
    assert list(old) == list(new)
    for name, path in old.items():
        if Path(name).name == MANIFEST_NAME:
            assert Manifest.read(path.parent).reproducible() == Manifest.read(new[name].parent).reproducible()
        else:
            assert path.read_bytes() == new[name].read_bytes(), name


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray is not installed (edgeport[ray])")
def test_a_ray_sweep_gives_the_bytes_of_the_process_pool(first, tmp_path, fixed_tools):
    """Both variants as tasks on a local Ray instance, cache off: the artifacts of the worker processes."""
    config, out, _ = first
    result = run(load_config(config), tmp_path / "out", jobs=2, use_cache=False, executor="ray", quiet=True)
    assert not result.failed and not any(s.cached for v in result.variants for s in v.stages)
    _same_artifacts(out / "variants", tmp_path / "out" / "variants")


def test_the_same_config_gives_the_same_bytes(first, tmp_path, fixed_tools):
    """The int8 variant converted again without the cache, in this process (the first run used workers)."""
    _, out, _ = first
    config = _config(tmp_path / "project", quantize='"int8"')
    run(load_config(config), tmp_path / "out", jobs=1, use_cache=False, quiet=True)
    _same_artifacts(out / "variants" / "int8", tmp_path / "out" / "variants" / "int8")


def test_an_interrupted_run_leaves_the_previous_results_intact(first, tmp_path):
    """SIGTERM while a variant converts (cache off): OUTDIR as it was, no staging folder left behind."""
    import os
    import signal
    import sys

    config, out, _ = first
    previous = tmp_path / "out"
    shutil.copytree(out, previous, ignore=shutil.ignore_patterns(".cache"))
    before = {name: path.read_bytes() for name, path in _files(previous).items()}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, "-m", "edgeport", "run", str(config), "-o", str(previous), "--force"]
    child = subprocess.Popen(
        [*command, "--no-cache", "-j", "1"], stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        seen = []
        for line in child.stderr:
            seen.append(line)
            if "converting" in line:
                break
        assert any("converting" in line for line in seen), seen
        child.send_signal(signal.SIGTERM)
        rest = child.communicate(timeout=120)[1]
    finally:
        child.kill()
    assert child.returncode == 1 and "interrupted" in rest, rest
    assert {name: path.read_bytes() for name, path in _files(previous).items()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_html_report_is_self_contained(first):
    import re

    _, out, _ = first
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 5  # header + 2 variants x 2 targets
    # Size/SQNR, latency, and the int8 variant's worst layers.
    assert page.count("<svg") == 3
    assert "Pareto front" in page and "int8: worst layers" in page
    # Nothing to fetch: no scripts, stylesheets, images or fonts (url(#id) is a clip path in the same page);
    # the only addresses are XML namespaces.
    assert not re.search(r"<script|<link|<img|src=|url\((?!#)|@import", page)
    assert set(re.findall(r"https?://[^\"' <)]*", page)) <= {
        "http://www.w3.org/2000/svg",
        "http://www.w3.org/1999/xlink",
    }
    assert "the same as <code>edgeport package variants/int8/model --target cortex-m" in page


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
QUIET_BROWSER = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _page_requests(page: Path, folder: Path) -> tuple[set[str], str]:
    """The addresses `page` itself asked for (the browser's own service traffic is keyed to its own sites,
    a page's to file://), read from Chromium's network log; and the DOM after rendering."""
    netlog = folder / f"{page.stem}.netlog.json"
    url = page.resolve().as_uri()
    subprocess.run(
        [CHROMIUM, *QUIET_BROWSER, f"--log-net-log={netlog}", "--window-size=1280,2000",
         f"--screenshot={folder / (page.stem + '.png')}", url],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    dom = subprocess.run(
        [CHROMIUM, *QUIET_BROWSER, "--dump-dom", url], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    events = json.loads(netlog.read_text())["events"]
    asked = {
        e["params"]["url"]
        for e in events
        if str(e.get("params", {}).get("network_isolation_key", "")).startswith("file://")
        and "url" in e["params"]
    }
    return {u for u in asked if not u.startswith("file:")}, dom


@pytest.mark.skipif(CHROMIUM is None, reason="chromium (Debian package `chromium`) is not installed")
def test_the_html_report_renders_offline_in_a_browser(first, tmp_path):
    import numpy as np
    from matplotlib.image import imread

    _, out, _ = first
    requests, dom = _page_requests(out / "report.html", tmp_path)
    assert requests == set()
    assert dom.count("<svg") == 3 and dom.count("<tr>") == 5 and "Pareto front" in dom
    shot = imread(tmp_path / "report.png")
    assert shot.shape[:2] == (2000, 1280)
    # Not a blank page: the table, text and plots put dark pixels in many rows of the screenshot.
    dark_rows = (shot[..., :3].mean(axis=2) < 0.5).any(axis=1)
    assert np.count_nonzero(dark_rows) > 300
    # The check sees a page that fetches something (a local address: nothing leaves the machine).
    leaky = tmp_path / "leaky.html"
    leaky.write_text(
        (out / "report.html").read_text().replace("</body>", '<img src="http://127.0.0.1:9/x.png"></body>')
    )
    assert _page_requests(leaky, tmp_path)[0] == {"http://127.0.0.1:9/x.png"}


def test_a_validation_set_gives_each_variant_its_accuracy(first, tmp_path, fixed_tools):
    """Labels made by the float32 model itself: the float variant scores exactly 100 %, the int8 one what
    its own predictions on the same samples give; conversions come from the first run's cache."""
    import numpy as np

    from edgeport.run.evaluate import top1

    _, out, _ = first
    rng = np.random.default_rng(0)
    mfcc = rng.normal(0, 1, (24, 1, 49, 10)).astype(np.float32)
    samples = [{"mfcc": mfcc[i : i + 1]} for i in range(len(mfcc))]
    labels = top1(out / "variants/float/model", "float32", samples)
    int8 = top1(out / "variants/int8/model", "int8", samples)
    config = _config(tmp_path / "project")
    np.savez(tmp_path / "project" / "val.npz", mfcc=mfcc, labels=labels)
    config.write_text(config.read_text() + '\n[validation]\ndata = "val.npz"\n')
    result = run(load_config(config), tmp_path / "out", jobs=1, cache_dir=out / ".cache", quiet=True)
    stages = {f"{v.variant}/{s.stage}": s for v in result.variants for s in v.stages}
    assert stages["int8/convert"].cached and not stages["int8/evaluate"].cached
    measured = {
        name: json.loads((tmp_path / "out" / f"variants/{name}/evaluation/evaluation.json").read_text())
        for name in ("float", "int8")
    }
    assert measured["float"] == {
        "metric": "top-1",
        "value": 1.0,
        "samples": 24,
        "model": "model_float32.tflite",
    }
    assert measured["int8"]["value"] == float(np.mean(int8 == labels))
    assert "| 100.0% top-1 |" in (tmp_path / "out" / "report.md").read_text()
    assert "Accuracy against size" in (tmp_path / "out" / "report.html").read_text()


def test_a_folder_of_images_is_a_validation_set(first, tmp_path):
    """The KWS input (1 x 49 x 10) read as a gray image: labels from the float32 model's own predictions on
    the images as the folder reader makes them, so the float variant scores exactly 100 %."""
    import numpy as np
    from PIL import Image

    from edgeport.run.evaluate import ValidationOptions, evaluate, load_validation, model_specs, top1

    _, out, _ = first
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (49, 10), dtype=np.uint8)).save(tmp_path / f"s{i}.png")
    (tmp_path / "labels.txt").write_text("".join(f"s{i}.png 0\n" for i in range(6)))
    options = ValidationOptions(data=tmp_path, mean=0.5, std=0.25)
    model_dir = out / "variants/float/model"
    _, inputs, _ = model_specs(Manifest.read(model_dir), "float32")
    samples, _ = load_validation(options, inputs)
    labels = top1(model_dir, "float32", samples)
    (tmp_path / "labels.txt").write_text("".join(f"s{i}.png {label}\n" for i, label in enumerate(labels)))
    assert evaluate(model_dir, options) == {
        "metric": "top-1",
        "value": 1.0,
        "samples": 6,
        "model": "model_float32.tflite",
    }
    int8 = evaluate(out / "variants/int8/model", options)
    assert int8["samples"] == 6 and int8["model"] == "model_int8.tflite"
