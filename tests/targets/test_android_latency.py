"""Host LiteRT latency in an Android package (targets/android/latency.py): every variant timed once by the
host bench runner, the numbers in the manifest's run block and a README column, nothing of it in the
reproducible part of the manifest; --no-latency skips it; a variant LiteRT cannot time gets a reason.

No timing thresholds: the numbers are checked for structure and sign only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgeport.errors import EdgeportError
from edgeport.manifest import Artifact, Manifest, sha256_of
from edgeport.targets.android import latency
from edgeport.targets.android.bench_host import HostRunner
from tests.targets.test_android_package import _convert

VARIANTS = ["float32", "dynamic", "int8"]
READMES = ("README.md", "android/README.md")


@pytest.fixture(scope="module")
def kws_convert(tmp_path_factory) -> Path:
    # With --quantize dynamic, so the package takes dynamic from the conversion (no child conversion).
    return _convert(
        tmp_path_factory.mktemp("kws") / "convert", "ds_cnn_kws", [[1, 1, 49, 10]], mode="dynamic"
    )


def _package(model: Path, out: Path, **options) -> Path:
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    package(model, out, AndroidOptions(variants=VARIANTS, **options))
    return out


@pytest.fixture(scope="module")
def timed(kws_convert, tmp_path_factory) -> tuple[Path, Path]:
    """The same package made twice, latency measured in both."""
    root = tmp_path_factory.mktemp("timed")
    return _package(kws_convert, root / "a"), _package(kws_convert, root / "b")


def _measured(outdir: Path) -> dict | None:
    return json.loads((outdir / "edgeport.json").read_text())["run"].get("measured", {}).get("android")


def _table_column(readme: str, header: str) -> list[str]:
    """The cells of the table column whose header starts with `header`, one per row."""
    rows = [line.split(" | ") for line in readme.splitlines() if line.startswith("| ")]
    at = next(i for i, cell in enumerate(rows[0]) if cell.strip(" |").startswith(header))
    return [row[at].strip(" |") for row in rows[1:]]


def test_every_variant_is_timed_into_the_run_block(timed):
    out = timed[0]
    found = _measured(out)
    assert found["runner"] == "host" and found["device"] and found["interleaved"] is True
    assert found["tools"]["ai-edge-litert"]
    assert list(found["variants"]) == VARIANTS
    for entry in found["variants"].values():
        assert entry["median_ms"] > 0 and entry["p90_ms"] >= entry["median_ms"]
        assert entry["runs"] == latency.RUNS and entry["threads"] == 1
        assert entry["delegate"] == "xnnpack" and entry["time_kind"] == "host-wall-clock"
        assert "problem" not in entry
    section = json.loads((out / "edgeport.json").read_text())["sections"]["android"]
    assert all("latency" not in v for v in section["variants"])
    assert "median_ms" not in json.dumps(section)


def test_the_summary_line_gives_the_medians():
    entry = latency.VariantLatency(median_ms=0.021948, runs=20, threads=1, delegate="xnnpack",
                                   time_kind="host-wall-clock")  # fmt: skip
    assert latency.summary(entry) == " 0.0219 ms"
    assert latency.summary(entry.model_copy(update={"median_ms": None, "problem": "x"})) == " not timed"
    assert latency.summary(None) == ""


def test_readmes_show_it_and_their_hashes_are_in_the_run_block(timed):
    out = timed[0]
    found = _measured(out)
    medians = [f"{found['variants'][name]['median_ms']:.3g}" for name in VARIANTS]
    readme = (out / "README.md").read_text()
    assert _table_column(readme, latency.COLUMN) == medians
    assert "host LiteRT" in readme and "--on adb" in readme
    bundle = (out / "android" / "README.md").read_text()
    shipped = _table_column(bundle, latency.COLUMN)
    assert shipped and set(shipped) <= set(medians)
    manifest = Manifest.read(out)
    for path in READMES:
        art = manifest.artifact(path)
        assert (art.sha256, art.size_bytes) == ("", 0)
        assert found["files"][path] == {
            "sha256": sha256_of(out / path),
            "size_bytes": (out / path).stat().st_size,
        }
    assert manifest.artifact("model_int8.tflite").sha256 == sha256_of(out / "model_int8.tflite")


def test_two_identical_packages_differ_only_in_the_run_block(timed):
    first, second = (Manifest.read(out) for out in timed)
    assert first.reproducible() == second.reproducible()
    for name in ("model_float32.tflite", "model_int8.tflite", "metadata.json"):
        assert (timed[0] / name).read_bytes() == (timed[1] / name).read_bytes()


def test_no_latency_and_force_over_a_timed_package(timed, kws_convert, tmp_path, run_cli):
    out = tmp_path / "pkg"
    shutil.copytree(timed[0], out)
    code, out_text, err = run_cli(
        "package", kws_convert, "--target", "android", "-o", out, "--force", "--no-latency",
        "--variants", ",".join(VARIANTS),
    )  # fmt: skip
    assert code == 0, err
    assert "KB, " in out_text and " ms" not in out_text
    assert _measured(out) is None
    readme = (out / "README.md").read_text()
    assert latency.COLUMN not in readme and latency.COLUMN not in (out / "android" / "README.md").read_text()
    assert "edgeport bench OUTDIR:float32" in readme
    manifest = Manifest.read(out)
    for path in READMES:
        assert manifest.artifact(path).sha256 == sha256_of(out / path)
    assert manifest.reproducible().count('"sha256": ""') == 0


class _Refusing:
    """The host runner, with the variants named in `refuse` refused by its check and those in `crash`
    ending their LiteRT process at the first timed run."""

    def __init__(self, refuse: tuple[str, ...] = (), crash: tuple[str, ...] = ()) -> None:
        self.inner = HostRunner()
        self.name, self.time_kind, self.interleaves = self.inner.name, self.inner.time_kind, True
        self.uses = self.inner.uses
        self.refuse, self.crash = refuse, crash

    def device(self):
        return self.inner.device()

    def tools(self):
        return self.inner.tools()

    def check(self, model):
        if any(model.info.name == f"model_{n}.tflite" for n in self.refuse):
            raise EdgeportError(f"{model.info.name}: LiteRT cannot run the model (refused | here)", "fix")
        self.inner.check(model)

    def open(self, model, settings):
        session = self.inner.open(model, settings)
        crashes = any(model.info.name == f"model_{n}.tflite" for n in self.crash)
        return _Crashing(session, model.info.name) if crashes else session


class _Crashing:
    def __init__(self, session, name: str) -> None:
        self.session, self.name = session, name
        self.init_ms, self.first_ms = session.init_ms, session.first_ms

    def run(self, count: int) -> list[float]:
        raise EdgeportError(f"{self.name}: LiteRT crashed (signal 11) running the model", "fix")

    def finish(self):
        return self.session.finish()

    def close(self) -> None:
        self.session.close()


@pytest.fixture(scope="module")
def kws_files(kws_convert) -> dict[str, Path]:
    # A convert output names its files model_<precision>.tflite, as a package does.
    return {"float32": kws_convert / "model_float32.tflite", "dynamic": kws_convert / "model_dynamic.tflite"}


@pytest.mark.parametrize(
    ("runner", "expected"),
    [
        (_Refusing(refuse=("dynamic",)), "LiteRT cannot run the model (refused | here)"),
        (_Refusing(crash=("dynamic",)), "LiteRT crashed (signal 11) running the model"),
    ],
)
def test_a_variant_that_cannot_be_timed_gets_a_reason(kws_files, runner, expected):
    found = latency.measure(kws_files, runner)
    assert found.variants["float32"].median_ms > 0 and found.variants["float32"].runs == latency.RUNS
    failed = found.variants["dynamic"]
    assert failed.problem == expected and failed.runs == 0 and failed.median_ms is None
    assert latency.cell(failed) == "not timed: " + expected.replace("|", "\\|")


def test_every_variant_failing_still_packages(kws_convert, tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "host_runner", lambda: _Refusing(crash=("float32", "int8")))
    out = tmp_path / "pkg"
    from edgeport.targets.android.packager import package
    from edgeport.targets.android.target import AndroidOptions

    result = package(kws_convert, out, AndroidOptions(variants=["float32", "int8"]))
    assert "float32" in result.summary() and result.summary().count(" not timed") == 2
    found = _measured(out)
    assert {n: v["problem"] for n, v in found["variants"].items()} == {
        "float32": "LiteRT crashed (signal 11) running the model",
        "int8": "LiteRT crashed (signal 11) running the model",
    }
    cells = _table_column((out / "README.md").read_text(), latency.COLUMN)
    assert cells == ["not timed: LiteRT crashed (signal 11) running the model"] * 2
    assert found["interleaved"] is False


def test_record_moves_the_shown_hashes_and_clears_an_old_measurement():
    manifest = Manifest()
    manifest.artifacts = [
        Artifact(path="README.md", kind="other", sha256="ab", size_bytes=3),
        Artifact(path="model.tflite", kind="tflite", sha256="cd", size_bytes=5),
    ]
    timings = latency.PackageLatency(runner="host", device="here", warmup=1, interleaved=False, variants={})
    latency.record(manifest, "android", timings, ["README.md", "android/README.md"])
    assert manifest.run.measured["android"]["files"] == {"README.md": {"sha256": "ab", "size_bytes": 3}}
    assert [(a.sha256, a.size_bytes) for a in manifest.artifacts] == [("", 0), ("cd", 5)]
    latency.record(manifest, "android", None)
    assert "android" not in manifest.run.measured


def test_cell():
    timed = latency.VariantLatency(median_ms=0.021948, p90_ms=0.03, runs=20, threads=1, delegate="xnnpack",
                                   time_kind="host-wall-clock")  # fmt: skip
    assert latency.cell(timed) == "0.0219"
    assert latency.cell(None) == ""
