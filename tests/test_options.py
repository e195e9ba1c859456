"""Options defined once (edgeport/options.py): flags made from the fields (edgeport/cli/options.py) and
validation errors naming the option as its user spelled it (a flag, or a config key)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from pydantic import Field
from pydantic.fields import FieldInfo

from edgeport.cli.options import option_from_field, options_from_model, spell_flags
from edgeport.errors import EdgeportError
from edgeport.options import Options, refuse_without, validate_options
from edgeport.pipeline import ConvertOptions
from edgeport.quant.modes import QuantOptions, quant_options


class _Fields(Options):
    names: list[str] = Field(default_factory=list, description="repeatable")
    where: list[Path] = Field(default_factory=list)
    span: tuple[float, float] | None = Field(None, json_schema_extra={"text": True, "needs": "on"})
    level: int = Field(2, json_schema_extra={"flag": "--lvl", "show_default": False, "needs": "on"})
    hidden: int = Field(0, json_schema_extra={"cli": False})


def key(field: str) -> str:
    return f"[quant] {field}"


def test_list_fields_become_repeatable_flags_and_text_fields_take_text() -> None:
    flags = options_from_model(_Fields)
    assert list(flags) == ["names", "where", "span", "level"]  # API-only fields get no flag
    assert flags["names"].multiple and flags["names"].type is click.STRING
    assert flags["where"].multiple and isinstance(flags["where"].type, click.Path)
    assert not flags["span"].multiple and flags["span"].type is click.STRING
    assert flags["level"].opts == ["--lvl"] and "default" not in (flags["level"].help or "")
    assert spell_flags(flags)("level") == "--lvl"
    with pytest.raises(TypeError, match="pairs"):
        option_from_field("pairs", FieldInfo(annotation=dict[str, int]))


def test_errors_name_the_option_as_the_caller_spelled_it() -> None:
    with pytest.raises(
        EdgeportError, match=r"^unknown \[quant\] ranges 'mse2'\. Use one of minmax, percentile"
    ):
        quant_options({"mode": "int8", "ranges": "mse2"}, key)
    with pytest.raises(
        EdgeportError, match=r"^\[quant\] rounding nearest applies to 4-bit weights, but \[quant\] mode"
    ):
        quant_options({"mode": "int8", "rounding": "nearest"}, key)
    with pytest.raises(EdgeportError, match=r"^\[quant\] mean 'a' is not valid"):
        validate_options(ConvertOptions, {"source": "m", "outdir": "o", "mean": "a"}, key)
    with pytest.raises(
        EdgeportError, match=r"^\[quant\] weight_clusters: Input should be a valid integer.*got 'x'"
    ):
        quant_options({"mode": "int8", "weight_clusters": "x"}, key)
    # Python callers read the flags.
    with pytest.raises(EdgeportError, match="^unknown --weight-rounding 'up'"):
        QuantOptions(mode="w4a8", rounding="up")
    with pytest.raises(EdgeportError, match="^--lvl: Input should be a valid integer"):
        validate_options(_Fields, {"level": "x"})


def test_text_values_are_parsed_by_the_model() -> None:
    opts = quant_options({"mode": "w8a8", "flash_budget": None})
    assert opts is not None and opts.mode == "int8"
    assert quant_options({"mode": "w4a8", "flash_budget": "2KB"}).flash_budget == 2048  # type: ignore[union-attr]
    given = {"source": "m", "outdir": "o", "input_range": "0,255", "mean": "1, 2,3"}
    convert = validate_options(ConvertOptions, given)
    assert convert.input_range == {"*": (0.0, 255.0)} and convert.mean == [1.0, 2.0, 3.0]
    # A Python caller's (lo, hi) is the range of every input, as on the command line.
    assert ConvertOptions(source="m", outdir="o", input_range=[0, 1]).input_range == {"*": (0.0, 1.0)}


def test_companion_options_without_their_main_option_are_refused_unless_default() -> None:
    assert quant_options({}) is None
    assert quant_options({"rounding": "squant", "io": "int8"}) is None  # the defaults change nothing
    with pytest.raises(
        EdgeportError, match=r"^\[quant\] io was given without \[quant\] mode\. Add \[quant\] mode int8"
    ):
        quant_options({"io": "float"}, key)
    refuse_without(_Fields, "on", {"level": 2})
    with pytest.raises(EdgeportError, match="--lvl was given without --on"):
        refuse_without(_Fields, "on", {"level": 3})


def test_convert_options_parse_shapes_and_name_them_as_spelled(tmp_path: Path) -> None:
    from edgeport.cli.convert import CONVERT_FLAGS

    shapes = CONVERT_FLAGS["input_shapes"]
    assert shapes.opts == ["--input-shape"] and shapes.multiple and shapes.type is click.STRING
    assert CONVERT_FLAGS["fold_bn"].opts == ["--no-fold-bn"] and CONVERT_FLAGS["fold_bn"].flag_value is False
    assert not {"source", "outdir", "debug", "quantize"} & set(CONVERT_FLAGS)
    opts = ConvertOptions(source="m.onnx", outdir=tmp_path, input_shapes=["1,3x8", "scalar", [2]])
    assert opts.input_shapes == [[1, 3, 8], [], [2]] and opts.quantize is None
    with pytest.raises(EdgeportError, match=r"^\[quant\] input_shapes '1,-2' is not a shape"):
        validate_options(ConvertOptions, {"source": "m", "outdir": tmp_path, "input_shapes": ["1,-2"]}, key)
    with pytest.raises(EdgeportError, match="^--opset: Input should be a valid integer"):
        ConvertOptions(source="m", outdir=tmp_path, opset="x")


def test_convert_refuses_bad_quant_flags_before_converting(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for args, message in (
        (("--io", "float"), "--io was given without --quantize. Add --quantize int8"),
        (("--calibration", str(tmp_path)), "--calibration was given without --quantize"),
        (("--quantize", "int8", "--mean", "1,x"), "--mean '1,x' is not valid"),
        (("--quantize", "int8", "--flash-budget", "2KB"), "--flash-budget needs 4-bit weights"),
        (("--input-shape", "1,0"), "--input-shape '1,0' is not a shape"),
    ):
        code, _, stderr = run_cli("convert", "missing.onnx", "-o", out, *args)
        assert code == 1 and message in stderr and "Traceback" not in stderr, stderr
        assert not out.exists()


def test_convert_help_lists_every_flag(run_cli) -> None:
    code, out, _ = run_cli("convert", "--help")
    assert code == 0
    from edgeport.cli.convert import CONVERT_FLAGS, QUANT_FLAGS

    assert list(QUANT_FLAGS) == list(options_from_model(QuantOptions))
    for flag in [*CONVERT_FLAGS.values(), *QUANT_FLAGS.values()]:
        assert flag.opts[0] in out and (flag.help or "")[:20] in " ".join(out.split())


def test_flash_flags_are_made_from_its_options_model(run_cli) -> None:
    from edgeport.cli.flash import FLASH_FLAGS
    from edgeport.targets.cortex_m.flash import PROBES

    assert [f.opts[0] for f in FLASH_FLAGS.values()] == [
        "--board",
        "--probe",
        "--port",
        "--tflm-root",
        "--dry-run",
        "--bench-warmup",
        "--bench-runs",
        "--bench-profile",
    ]
    assert FLASH_FLAGS["board"].required and FLASH_FLAGS["dry_run"].is_flag
    assert list(FLASH_FLAGS["probe"].type.choices) == list(PROBES)
    code, _, err = run_cli("flash", "somewhere")
    assert code == 1 and "Missing option '--board'" in err


@pytest.mark.parametrize("command", ["convert", "package", "flash"])
def test_help_shows_no_default_for_a_required_option(run_cli, command: str) -> None:
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and "Undefined" not in out


def test_optional_annotations_and_nested_options_models_are_seen_through() -> None:
    from edgeport.options import flag_spell, nested_model, unoptional

    assert unoptional(int | None) is int and unoptional(list[int]) == list[int]
    assert unoptional(int | str | None) == int | str | None  # not one type: left alone
    assert nested_model(ConvertOptions.model_fields["quantize"]) is QuantOptions
    assert nested_model(ConvertOptions.model_fields["opset"]) is None
    spell = flag_spell(ConvertOptions)  # a nested model's field is spelled as its own flag
    assert (spell("method"), spell("input_values"), spell("nothing")) == (
        "--calibration-method",
        "--input-value",
        "--nothing",
    )
