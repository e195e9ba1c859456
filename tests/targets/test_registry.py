"""The target registry and `edgeport package` dispatch: unknown targets, foreign flags, the board rule."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import click
import pytest
from pydantic import BaseModel, ConfigDict, Field

from edgeport.errors import EdgeportError
from edgeport.manifest import Manifest
from edgeport.targets import TARGETS, Target, get_target, parse_options, target_names
from edgeport.targets.cortex_m.boards import BOARDS
from tests.conftest import shared_path

HELLO = ("models", "tflite", "tflm_hello_world_int8.tflite")


class FakeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class FakePackaged:
    outdir: Path
    manifest: Manifest = field(default_factory=Manifest)

    def summary(self) -> str:
        return f"fake package in {self.outdir}"


class FakeTarget:
    """A second target, registered by the tests only: proves `package` goes through the registry."""

    name = "fake"
    title = "A test target"
    options = FakeOptions
    runners = ("host",)
    calls: list[tuple[Path, Path, BaseModel, bool]] = []

    def boards(self) -> list:
        return []

    def supported_ops(self) -> dict[str, list[str]]:
        return {"builtin": ["ADD"], "custom": []}

    def package(self, model, outdir, options, *, force=False, command=""):
        self.calls.append((model, outdir, options, force))
        return FakePackaged(outdir)


TARGET = FakeTarget()


@pytest.fixture
def fake_target(monkeypatch):
    monkeypatch.setitem(TARGETS, "fake", __name__)
    FakeTarget.calls.clear()
    return TARGET


def test_unknown_target_is_one_line_naming_the_known_ones(run_cli):
    with pytest.raises(EdgeportError) as err:
        get_target("android-tv")
    assert "unknown target 'android-tv'" in str(err.value) and "cortex-m" in str(err.value)
    code, out, err_text = run_cli("package", "m.tflite", "--target", "android-tv", "-o", "out")
    assert code == 1 and out == ""
    assert err_text.startswith("edgeport: error: unknown target") and err_text.strip().count("\n") == 0
    assert "Known targets: cortex-m" in err_text


def test_cortex_m_is_a_registered_target():
    target = get_target("cortex-m")
    assert "cortex-m" in target_names() and isinstance(target, Target)
    assert [b.name for b in target.boards()] == [b.name for b in BOARDS]
    ops = target.supported_ops()
    assert "CONV_2D" in ops["builtin"] and "FULLY_CONNECTED" in ops["builtin"]
    assert target.runners and set(target.options.model_fields) >= {"board", "name", "section", "fit_check"}


def test_package_dispatches_to_the_named_target(run_cli, fake_target, tmp_path):
    code, out, err = run_cli("package", tmp_path / "m.tflite", "--target", "fake", "-o", tmp_path / "o")
    assert code == 0, err
    assert out.strip() == f"fake package in {tmp_path / 'o'}"
    ((model, outdir, options, force),) = fake_target.calls
    assert (model, outdir, force) == (tmp_path / "m.tflite", tmp_path / "o", False)
    assert isinstance(options, FakeOptions)


def test_a_flag_of_another_target_is_refused(run_cli, fake_target, tmp_path):
    code, _, err = run_cli("package", "m.tflite", "--target", "fake", "--board", "nano33ble", "-o", "o")
    assert code == 1 and err.strip().count("\n") == 0
    assert "--board is not an option of target fake" in err
    assert fake_target.calls == []


def test_list_boards_lists_the_chosen_targets_boards(run_cli, fake_target):
    code, out, _ = run_cli("package", "--list-boards")
    assert code == 0
    assert [line.split()[0] for line in out.strip().splitlines()] == [b.name for b in BOARDS]
    code, out, _ = run_cli("package", "--target", "fake", "--list-boards")
    assert code == 0 and out.strip() == "target fake has no boards"


def test_package_without_board_names_boards_and_list_boards(run_cli, tmp_path):
    model = shared_path(*HELLO)
    code, out, err = run_cli("package", model, "-o", tmp_path / "out")
    assert code == 1 and out == ""
    line = err.strip()
    assert "\n" not in line and "needs a board" in line and "--board" in line and "--list-boards" in line
    assert sum(board.name in line for board in BOARDS) >= 2
    assert not (tmp_path / "out").exists()


def test_option_errors_name_the_option_as_written():
    target = get_target("cortex-m")
    with pytest.raises(EdgeportError, match="^fit_check: "):
        parse_options(target, {"board": "nano33ble", "fit_check": "sometimes"})
    with pytest.raises(EdgeportError, match="^--fit-check: "):
        parse_options(target, {"board": "nano33ble", "fit_check": "sometimes"}, spell=lambda f: "--fit-check")
    options = parse_options(target, {"board": "nano33ble"})
    assert (options.board, options.name, options.section, options.fit_check) == (
        "nano33ble",
        "g_model",
        None,
        True,
    )


class _Kinds(BaseModel):
    check: bool = Field(True, description="on by default")
    verbose: bool = Field(False, description="off by default")
    mode: Literal["a", "b"] = "a"
    count: int = 3
    where: Path | None = None
    pairs: dict[str, int] = Field(default_factory=dict)


def test_flags_are_made_from_option_fields():
    from edgeport.cli.package import option_from_field

    fields = _Kinds.model_fields
    check = option_from_field("check", fields["check"])
    assert check.opts == ["--no-check"] and check.is_flag and check.flag_value is False
    verbose = option_from_field("verbose", fields["verbose"])
    assert verbose.opts == ["--verbose"] and verbose.flag_value is True
    mode = option_from_field("mode", fields["mode"])
    assert isinstance(mode.type, click.Choice) and list(mode.type.choices) == ["a", "b"]
    assert option_from_field("count", fields["count"]).type is click.INT and "[default: 3]" in (
        option_from_field("count", fields["count"]).help or ""
    )
    assert isinstance(option_from_field("where", fields["where"]).type, click.Path)
    with pytest.raises(TypeError, match="pairs"):
        option_from_field("pairs", fields["pairs"])


def test_help_shows_examples(run_cli):
    for command in ("package", "flash"):
        code, out, _ = run_cli(command, "--help")
        assert code == 0 and "Examples:" in out
        assert f"\n    edgeport {command} " in out  # \b keeps the example lines unwrapped


class _ClashingOptions(BaseModel):
    board: int = 0  # cortex-m's board is a string: one --board flag cannot be both


def test_targets_sharing_a_field_must_agree_on_its_type(monkeypatch):
    from edgeport.cli.package import target_options

    assert set(target_options()) >= {"board", "name", "section", "fit_check"}
    monkeypatch.setitem(TARGETS, "fake", __name__)
    monkeypatch.setattr(FakeTarget, "options", _ClashingOptions)
    with pytest.raises(TypeError, match="option board is .* in target cortex-m but .* in fake"):
        target_options()


def test_every_targets_runners_are_runtimes_modules():
    import importlib.util

    for name in target_names():
        runners = get_target(name).runners
        assert runners, name
        for runner in runners:
            assert importlib.util.find_spec(f"edgeport.runtimes.{runner}") is not None, (name, runner)
