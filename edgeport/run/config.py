"""The `edgeport run` config: one TOML file naming the model, the compression recipe, the targets and the
bench, checked as a whole before any work starts.

Its keys are the options models' fields, spelled like their CLI flags without the dashes (`--input-shape`
is `input-shape`, `--quantize` is `quantize`): ConvertOptions and the options models nested in it
(QuantOptions, and any later one such as pruning) for [model] and [recipe], each registered target's options
for [targets.NAME], BenchSettings and RunnerOptions for [bench]. Nothing is declared twice, so a new convert
option, target or runner is a config key as soon as it exists.

A list given to a single-valued recipe (or model, or target) key makes variants: `quantize = ["none",
"int8"]` and `prune = [0, 0.3]` give four, and every variant goes to every target. "none" (or 0 for a
number) turns a nested group (quantize, prune) off for that variant; its companion options apply to the
variants they mean something for.

Every problem is found at once: unknown keys (with the closest valid one), wrong types, missing files,
options that apply to no variant. `load_config` raises one ConfigError listing them, one line each.
"""

from __future__ import annotations

import difflib
import itertools
import os
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.fields import FieldInfo

from edgeport.errors import EdgeportError
from edgeport.options import (
    Spell,
    config_relative,
    extra,
    flag_name,
    nested_model,
    refuse_without,
    split_weights,
    unoptional,
    validate_options,
)
from edgeport.pipeline.state import ConvertOptions

CONFIG_NAME = "edgeport.toml"
# ConvertOptions fields that say what the model is and what its inputs look like ([model]); every other
# convert option is part of the recipe ([recipe]).
MODEL_FIELDS = (
    "source",
    "input_shapes",
    "input_names",
    "weights",
    "opset",
    "keep_nchw",
    "trust_pickle",
    "input_range",
    "mean",
    "std",
    "input_values",
)
# Set by the run itself, never by a config.
RUN_FIELDS = ("outdir", "force", "debug")
# The value that turns a nested options group (quantize, prune) off for a variant.
OFF = "none"
# What to write where a required table or key is missing.
MISSING_FIX = {
    "model": '; add a [model] table with source = "model.py:build" (or a .pt, .pt2, .onnx file)',
    "source": '; add source = "model.py:build" (or a .pt, .pt2, .onnx file) to [model]',
}
# Runners that measure a firmware package rather than a .tflite, and the target whose package they build.
PACKAGE_RUNNERS = {"qemu": "cortex-m", "serial": "cortex-m"}
# [bench] paths that must name an existing file: the adb runner refuses a missing benchmark_model only
# when it measures the first model, after every conversion. (tflm-root, a directory, is checked by the
# qemu runner when the config is read, with its own message.)
BENCH_FILES = ("benchmark_binary",)


class ConfigError(EdgeportError):
    """Every problem found in a config, one line each."""

    def __init__(self, config: Path, problems: list[str]) -> None:
        self.config = config
        self.problems = problems
        fix = f"fix {'it' if len(problems) == 1 else 'them'} in {config.name}"
        super().__init__(f"{config} has {len(problems)} problem{'s' if len(problems) > 1 else ''}", fix)

    def one_line(self) -> str:
        if len(self.problems) == 1:
            return f"{self.config}: {self.problems[0]}"
        return f"{self.config} has {len(self.problems)} problems:\n" + "\n".join(
            f"  {p}" for p in self.problems
        )


# ---------------------------------------------------------------------------------------------------------
# Keys: the options models' fields, spelled as their flags.


def key_name(field_name: str, info: FieldInfo | None = None) -> str:
    """The config key of an options field: its CLI flag without the leading dashes."""
    return flag_name(field_name, info).lstrip("-")


def _has_flag(info: FieldInfo) -> bool:
    return bool(extra(info).get("cli", True))


@dataclass(frozen=True)
class Key:
    """One config key: the field it sets, in which model (a group's model for quantize and its companions)."""

    name: str  # as written in the config
    field: str
    info: FieldInfo
    group: str | None = None  # the ConvertOptions field of its nested model, None for ConvertOptions' own
    main: bool = False  # the group's main option (quantize, prune): "none" turns the group off

    @property
    def many(self) -> bool:
        """True when the option itself takes several values (a list is its value, not variants)."""
        kind = unoptional(self.info.annotation)
        return typing.get_origin(kind) in (list, dict) or bool(extra(self.info).get("multiple"))


def convert_keys() -> dict[str, Key]:
    """Every [model] and [recipe] key, from ConvertOptions and the options models nested in it."""
    keys: dict[str, Key] = {}
    for name, info in ConvertOptions.model_fields.items():
        if name in RUN_FIELDS:
            continue
        group = nested_model(info)
        if group is not None:
            for sub, sub_info in group.model_fields.items():
                if _has_flag(sub_info):
                    main = "needs" not in extra(sub_info)
                    keys[key_name(sub, sub_info)] = Key(key_name(sub, sub_info), sub, sub_info, name, main)
        elif _has_flag(info) or name == "source":
            keys[key_name(name, info)] = Key(key_name(name, info), name, info)
    return keys


def groups() -> dict[str, type[BaseModel]]:
    """ConvertOptions' nested options groups: field -> model (quantize -> QuantOptions)."""
    found = {}
    for name, info in ConvertOptions.model_fields.items():
        model = nested_model(info)
        if model is not None and name not in RUN_FIELDS:
            found[name] = model
    return found


def section_of(key: Key) -> str:
    return "model" if key.group is None and key.field in MODEL_FIELDS else "recipe"


def spell_keys(keys: Iterable[Key]) -> Callable[[str], str]:
    """Field name -> its config key (an unknown field keeps its name)."""
    names = {k.field: k.name for k in keys}
    return lambda name: names.get(name, name.replace("_", "-"))


def closest(word: str, choices: Iterable[str]) -> str:
    """`; did you mean X?` for the closest of `choices`, else ``."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


# ---------------------------------------------------------------------------------------------------------
# The one config model, made from the options models.


def _widened(key: Key) -> Any:
    """A key's type in the config: the option's own type (text options as the model parses them), or a
    list of its values (variants) for a single-valued option."""
    if extra(key.info).get("text") or key.many or key.main:
        return Any  # parsed (and its type checked) by the option's own model, per variant
    kind = str | None if _is_path(key) else key.info.annotation  # a path is written as a string
    return kind | list[kind]  # type: ignore[operator]


def _section_model(name: str, keys: Iterable[Key]) -> type[BaseModel]:
    # Strict: TOML has real booleans and numbers, so "yes" for a flag is a mistake, not a truthy string.
    fields: dict[str, Any] = {
        k.name: (_widened(k), Field(None, description=k.info.description)) for k in keys
    }
    return create_model(name, __config__=ConfigDict(extra="forbid", strict=True), **fields)


def _is_path(key: Key) -> bool:
    return unoptional(key.info.annotation) is Path


def _options_model(name: str, models: Iterable[type[BaseModel]], skip: Iterable[str] = ()) -> type[BaseModel]:
    """A config section whose keys are the fields of `models`; a list of values makes variants."""
    fields: dict[str, Any] = {}
    for model in models:
        for fname, info in model.model_fields.items():
            if fname in skip or not _has_flag(info):
                continue
            fields[key_name(fname, info)] = (Any, Field(None, description=info.description))
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def bench_models() -> tuple[type[BaseModel], type[BaseModel]] | None:
    """BenchSettings and RunnerOptions, None when this edgeport has no bench."""
    try:
        from edgeport.bench.runner import RunnerOptions
        from edgeport.bench.schema import BenchSettings
    except ImportError:
        return None
    return BenchSettings, RunnerOptions


def config_model() -> type[BaseModel]:
    """The config document as one pydantic model (its JSON Schema documents the file)."""
    keys = list(convert_keys().values())
    bench = bench_models()
    bench_section = (
        create_model(
            "BenchConfig",
            __base__=_options_model("BenchOptions", bench, skip=("runner",)),
            on=(
                list[str],
                Field(default_factory=list, description="Runners to measure on (edgeport bench --on)."),
            ),
        )
        if bench
        else dict[str, Any]
    )
    return create_model(
        "RunConfig",
        __config__=ConfigDict(extra="forbid"),
        output=(str | None, Field(None, description="Output directory, relative to the config (-o wins).")),
        model=(_section_model("ModelConfig", [k for k in keys if section_of(k) == "model"]), ...),
        recipe=(
            _section_model("RecipeConfig", [k for k in keys if section_of(k) == "recipe"]),
            Field(default_factory=dict),
        ),
        targets=(dict[str, dict[str, Any]], Field(default_factory=dict)),
        bench=(bench_section | None, None),
        validation=(
            dict[str, Any] | None,
            Field(None, description="Validation set (edgeport/run/evaluate.py)."),
        ),
    )


# ---------------------------------------------------------------------------------------------------------
# What a validated config holds.


@dataclass(frozen=True)
class Variant:
    """One point of the recipe sweep: its name (a directory under variants/) and its convert options."""

    name: str
    values: dict[str, Any]  # the varied keys and the value each takes here
    options: ConvertOptions  # outdir is a placeholder: the run sets it
    command: list[str] = field(default_factory=list)  # the `edgeport convert` it is equivalent to, sans -o


@dataclass(frozen=True)
class TargetSpec:
    """One target to package every variant for (a list in a target option gives several)."""

    name: str  # directory under each variant: the target's name, plus the varied option values
    target: str  # registered target name
    options: BaseModel


@dataclass(frozen=True)
class BenchSpec:
    runners: list[str]
    settings: dict[str, Any]  # BenchSettings fields (runner set per runner)
    runner_options: BaseModel | None


@dataclass
class RunConfig:
    path: Path
    text: str  # the config as written (copied into OUTDIR)
    output: Path | None
    variants: list[Variant]
    targets: list[TargetSpec]
    bench: BenchSpec | None
    files: dict[str, Path] = field(default_factory=dict)  # key -> input file the run reads (hashed)
    validation: Any = None  # evaluate.ValidationOptions: the validation set, None without one


# ---------------------------------------------------------------------------------------------------------
# Checking: each function returns its problems, one line each.


def _pydantic_problems(
    err: ValidationError, all_keys: Mapping[str, Iterable[str]], bad: set[str]
) -> list[str]:
    """Unknown keys (with the closest known one) and wrong types, one line each; `bad` gets the keys."""
    problems = []
    for item in err.errors():
        loc = [str(p) for p in item["loc"]]
        section = loc[0] if len(loc) > 1 else ""
        key = loc[-1] if section != "targets" else ".".join(loc[1:])
        where = f"[{section}] " if section else ""
        bad.add(loc[1] if len(loc) > 1 else loc[0])
        if item["type"] == "extra_forbidden":
            hint = closest(loc[-1], all_keys.get(section, all_keys[""]))
            other = [s for s, names in all_keys.items() if s != section and loc[-1] in names]
            if not hint and not other:  # a near miss of a key that lives in another section
                near = [(s, closest(loc[-1], names)) for s, names in all_keys.items() if s != section]
                hint = next((f"{h[:-1]} (in [{s}])?" for s, h in near if h and s), "")
            if other:
                hint = f"; {loc[-1]!r} belongs in [{other[0]}]" if other[0] else "; it is a top-level key"
            problems.append(f"{where}unknown key {loc[-1]!r}{hint}")
        elif item["type"] == "missing":
            problems.append(f"{where}{key!r} is missing{MISSING_FIX.get(key, '')}")
        else:
            # A union's branches report one error each; one line per key is enough.
            line = f"{where}{loc[1] if len(loc) > 1 else key}: {item['msg']} (got {item['input']!r})"
            if not any(p.startswith(f"{where}{loc[1] if len(loc) > 1 else key}:") for p in problems):
                problems.append(line)
    return problems


def _as_list(key: Key, value: Any) -> Any:
    """The option's value as its model takes it: one text of a repeatable option becomes a list of one,
    a flat list of sizes one shape."""
    if not key.many:
        return value
    kind = unoptional(key.info.annotation)
    text = extra(key.info).get("text")
    if isinstance(value, str) and (extra(key.info).get("multiple") or not text):
        return [value]
    inner = typing.get_args(kind)[0] if typing.get_origin(kind) is list and typing.get_args(kind) else None
    nested = typing.get_origin(unoptional(inner)) is list if inner is not None else False
    if nested and isinstance(value, list) and value and not any(isinstance(v, list | str) for v in value):
        return [value]
    return value


def axes(given: Mapping[str, Any], keys: Mapping[str, Key]) -> list[tuple[str, list[Any]]]:
    """The varied keys in the order given, each with its values: a list given to a single-valued key."""
    return [
        (name, list(value))
        for name, value in given.items()
        if name in keys and not keys[name].many and isinstance(value, list)
    ]


def expand(given: Mapping[str, Any], varied: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """The cartesian product of the varied keys over the fixed ones (first key slowest), each a dict."""
    names = [name for name, _ in varied]
    points = itertools.product(*(values for _, values in varied)) if varied else [()]
    return [{**given, **dict(zip(names, point, strict=True))} for point in points]


def is_off(key: Key, value: Any) -> bool:
    """A group's main option set to turn the group off: "none", or 0 for a number (prune = 0)."""
    if value is None or (isinstance(value, str) and value.lower() == OFF):
        return True
    return not isinstance(value, bool) and isinstance(value, int | float) and value == 0


def token(name: str, value: Any, key: Key | None = None) -> str:
    """A variant's name part for one varied key: the value for the group's main option ("int8"; "float"
    when quantization is off), else key and value (`prune0.3`, `opset13`); only [A-Za-z0-9._-]."""
    if key is not None and key.main and is_off(key, value):
        text = "float" if key.group == "quantize" else f"no-{name}"
    elif key is not None and key.main and key.group == "quantize":
        text = str(value)
    else:
        text = f"{name}{value}"
    return safe_name(text) or "variant"


def safe_name(text: str) -> str:
    """`text` as one path component: letters, digits and `._-` only, no leading dot or dash (so a value
    such as `../x` cannot name a path outside the output directory)."""
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in text).strip(".-")


def variant_name(
    point: Mapping[str, Any], varied: list[tuple[str, list[Any]]], keys: Mapping[str, Key]
) -> str:
    if not varied:
        main = main_key(keys, "quantize")
        return token(main.name, point.get(main.name), main) if main else "model"
    return "_".join(token(name, point[name], keys.get(name)) for name, _ in varied)


def main_key(keys: Mapping[str, Key], group: str) -> Key | None:
    """The main option of a nested group (quantize for QuantOptions, prune for PruneOptions)."""
    return next((k for k in keys.values() if k.group == group and k.main), None)


def applies(
    key: Key, value: Any, main: Key, main_value: Any, model: type[BaseModel], spell: Callable[[str], str]
) -> str:
    """'' when the companion option `key` = `value` means something with the group's main option `main`
    set to `main_value`, else why not (the group's own refusal)."""
    try:
        validate_options(model, {main.field: main_value}, spell)
    except EdgeportError:
        return ""  # a bad main value is reported as such, not as every companion not applying
    try:
        validate_options(model, {main.field: main_value, key.field: value}, spell)
    except EdgeportError as err:
        return err.one_line()
    return ""


def build_options(
    point: Mapping[str, Any], keys: Mapping[str, Key], spell: Callable[[str], str], source: str
) -> tuple[ConvertOptions | None, list[str]]:
    """One variant's ConvertOptions from its keys (companions that do not apply to its group setting
    dropped), or the problems (one per bad option where they can be told apart)."""
    problems: list[str] = []
    top: dict[str, Any] = {"source": source, "outdir": Path("."), "force": False}
    by_group: dict[str, dict[str, Any]] = {}
    for name, value in point.items():
        key = keys[name]
        if key.field == "source":
            continue
        if key.group is None:
            top[key.field] = _as_list(key, value)
        else:
            by_group.setdefault(key.group, {})[key.field] = _as_list(key, value)
    for group, model in groups().items():
        values = by_group.get(group, {})
        main = main_key(keys, group)
        if main is None:
            continue
        if main.field not in values or is_off(main, values[main.field]):
            companions = {f: v for f, v in values.items() if f != main.field}
            try:
                refuse_without(model, main.field, companions, spell)
            except EdgeportError as err:
                problems.append(err.one_line())
            top[group] = None
            continue
        try:
            top[group] = validate_options(model, values, spell)
        except EdgeportError as err:
            problems.append(err.one_line())
    if problems:
        return None, problems
    # One option at a time first, so that each bad one is named; then all together for combinations.
    for fname, value in top.items():
        if fname in ("source", "outdir", "force") or fname in groups():
            continue
        try:
            validate_options(ConvertOptions, {"source": source, "outdir": Path("."), fname: value}, spell)
        except EdgeportError as err:
            problems.append(err.one_line())
    if problems:
        return None, problems
    try:
        return validate_options(ConvertOptions, top, spell), []
    except EdgeportError as err:
        return None, [err.one_line()]


def drop_inapplicable(
    points: list[dict[str, Any]], keys: Mapping[str, Key], spell: Callable[[str], str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each variant without the companion options that mean nothing for its group setting (a calibration
    file for the float variant); a companion that applies to no variant at all is a problem."""
    problems: list[str] = []
    models = groups()
    kept = [dict(p) for p in points]
    for name in list(points[0]) if points else []:  # every point has the same keys (expand)
        key = keys[name]
        main = main_key(keys, key.group) if key.group is not None and not key.main else None
        if main is None:
            continue
        why = []
        for point in kept:
            main_value = point.get(main.name)
            if main_value is None or is_off(main, main_value):
                why.append(f"{name} was given without {main.name}")
                point.pop(name, None)
                continue
            reason = applies(key, _as_list(key, point[name]), main, main_value, models[key.group], spell)
            if reason:
                why.append(reason)
                point.pop(name, None)
        if len(why) == len(kept):
            problems.append(
                f"[{section_of(key)}] {why[-1].rstrip('.')} (in every variant; drop {name} or add a "
                f"{main.name} it applies to)"
            )
    return kept, problems


def source_file(spec: str) -> str:
    """The file part of a SOURCE (`model.py:build` -> `model.py`)."""
    head, sep, _ = spec.rpartition(":")
    return head if sep and head.endswith(".py") else spec


def file_option(info: FieldInfo) -> str | None:
    """How an option names files: "path" (typed Path or list[Path]), "text" (text whose metavar says FILE,
    as android's `[OUTPUT=]FILE` labels: the file after the last '='), None when it names none. The one
    definition the config's path resolution and the stage cache keys (execute.py) share."""
    kind = unoptional(info.annotation)
    if kind is Path or (typing.get_origin(kind) is list and typing.get_args(kind) == (Path,)):
        return "path"
    return "text" if "FILE" in str(extra(info).get("metavar") or "") else None


def split_file(item: str, kind: str) -> tuple[str, str]:
    """One value of a file option as (prefix, file): `OUTPUT=labels.txt` -> ("OUTPUT=", "labels.txt")."""
    if kind != "text":
        return "", item
    prefix, sep, text = item.rpartition("=")
    return prefix + sep, text


def config_path(text: str, base: Path, label: str, problems: list[str]) -> Path:
    """The file `text` names (config_relative); when it does not exist, a problem naming `label` (the key
    that gave it) is appended to `problems`."""
    path = config_relative(text, base)
    if not path.exists():
        problems.append(f"{label}: {text} does not exist (paths are relative to the config's folder)")
    return path


def resolve_files(
    section: dict[str, Any], keys: Mapping[str, Key], base: Path
) -> tuple[dict[str, Path], list[str]]:
    """Paths in [model] and [recipe] made relative to the config's folder, checked to exist."""
    files: dict[str, Path] = {}
    problems = []
    for name, value in list(section.items()):
        key = keys.get(name)
        if key is None:
            continue
        is_path = key.field == "source" or file_option(key.info) == "path"
        if not is_path or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        resolved = []
        for one in values:
            if not isinstance(one, str):
                continue
            # The file of `model.py:build` and of `weights = "ckpt.pt:ema"`: the rest follows it unchanged.
            text = {"source": source_file(one), "weights": split_weights(one, base)[0]}.get(key.field, one)
            path = config_path(text, base, name, problems)
            files[name if len(values) == 1 else f"{name}[{len(resolved)}]"] = path
            resolved.append(str(path) + one[len(text) :])
        section[name] = resolved if isinstance(value, list) else (resolved[0] if resolved else value)
    return files, problems


def target_files(
    values: dict[str, Any], fields: Mapping[str, FieldInfo], where: str, base: Path
) -> list[str]:
    """A target's file options (a Path, or text whose metavar says FILE: android's `[OUTPUT=]FILE` labels)
    made relative to the config's folder in `values`, and checked to exist, like [model]'s files."""
    problems = []
    for name, value in values.items():
        info = fields[name]
        kind = file_option(info)
        if value is None or kind is None:
            continue
        items = value if isinstance(value, list) else [value]
        resolved = []
        for item in items:
            if not isinstance(item, str):
                resolved.append(item)
                continue
            prefix, text = split_file(item, kind)
            path = config_path(text, base, f"[targets.{where}] {key_name(name, info)}", problems)
            resolved.append(f"{prefix}{path}")
        values[name] = resolved if isinstance(value, list) else resolved[0]
    return problems


# Target options whose default differs inside a run. android's `latency` times every variant on this
# machine for its READMEs: in a run the [bench] runners do the timing, and the package's own timings would
# make the same config give different bytes (the run promises the same artifacts). `latency = true` in the
# config still asks for them.
RUN_TARGET_DEFAULTS: dict[str, dict[str, Any]] = {"android": {"latency": False}}


def check_targets(
    given: Mapping[str, dict[str, Any]], base: Path = Path(".")
) -> tuple[list[TargetSpec], list[str]]:
    """Each [targets.NAME] checked against the registered target's options; lists make several."""
    from edgeport.targets import get_target, parse_options, target_names

    specs: list[TargetSpec] = []
    problems: list[str] = []
    for name, values in given.items():
        if name not in target_names():
            problems.append(
                f"[targets] unknown target {name!r}{closest(name, target_names())} "
                f"(known: {', '.join(target_names())})"
            )
            continue
        target = get_target(name)
        fields = target.options.model_fields
        by_key = {key_name(f, i): f for f, i in fields.items()}
        spell = lambda f, fields=fields: key_name(f, fields.get(f))  # noqa: E731
        bad = [k for k in values if k not in by_key]
        for key in bad:
            problems.append(f"[targets.{name}] unknown key {key!r}{closest(key, by_key)}")
        if bad:
            continue
        options = {**RUN_TARGET_DEFAULTS.get(name, {}), **{by_key[k]: v for k, v in values.items()}}
        missing = target_files(options, fields, name, base)
        if missing:
            problems += missing
            continue
        varied = [
            (k, v)
            for k, v in options.items()
            if isinstance(v, list) and typing.get_origin(fields[k].annotation) is not list
        ]
        for point in expand(options, varied):
            try:
                parsed = parse_options(target, point, spell)
            except EdgeportError as err:
                line = f"[targets.{name}] {err.one_line()}"
                if line not in problems:
                    problems.append(line)
                continue
            suffix = "".join(f"-{token('', point[k])}" for k, _ in varied)
            specs.append(TargetSpec(name + suffix, name, parsed))
    return specs, problems


def check_bench(
    given: Mapping[str, Any] | None, targets: list[TargetSpec], base: Path = Path(".")
) -> tuple[BenchSpec | None, list[str]]:
    """[bench]: its runners (`on`), BenchSettings and RunnerOptions (paths relative to the config)."""
    if not given:
        return None, []
    models = bench_models()
    if models is None:
        return None, [
            "[bench] this edgeport has no bench (edgeport.bench is missing): drop the [bench] section"
        ]
    from edgeport.bench.runner import parse_spec

    settings_model, runner_model = models
    problems: list[str] = []
    values = dict(given)
    runners = values.pop("on", None) or []
    if not runners:
        problems.append("[bench] 'on' names no runner; write e.g. on = [\"host\"]")
    parsed = []  # the specs that name a runner: only these are made below
    for spec in runners:
        try:
            name, _ = parse_spec(spec, config_words)
        except EdgeportError as err:
            problems.append(f"[bench] {err.one_line()}")
            continue
        parsed.append(spec)
        needs = PACKAGE_RUNNERS.get(name)
        if needs and not any(t.target == needs for t in targets):
            problems.append(
                f"[bench] runner {spec} measures a {needs} package; add a [targets.{needs}] section"
            )
    split: dict[str, dict[str, Any]] = {"settings": {}, "runner": {}}
    for model, part in ((settings_model, "settings"), (runner_model, "runner")):
        by_key = {key_name(f, i): f for f, i in model.model_fields.items() if f != "runner"}
        for key in list(values):
            if key in by_key:
                value = values.pop(key)
                if unoptional(model.model_fields[by_key[key]].annotation) is Path and isinstance(value, str):
                    if by_key[key] in BENCH_FILES:
                        value = config_path(value, base, f"[bench] {key}", problems)
                    else:
                        value = config_relative(value, base)
                split[part][by_key[key]] = value
    spell_all = {**{f: key_name(f, i) for m in models for f, i in m.model_fields.items()}}
    spell = lambda f: spell_all.get(f, f)  # noqa: E731
    runner_options = settings = None
    try:
        settings = validate_options(settings_model, {"runner": "host", **split["settings"]}, spell)
    except EdgeportError as err:
        problems.append(f"[bench] {err.one_line()}")
    try:
        runner_options = validate_options(runner_model, split["runner"], spell)
    except EdgeportError as err:
        problems.append(f"[bench] {err.one_line()}")
    if runner_options is not None:
        problems += runner_problems(parsed, runner_options, config_words, settings)
    return BenchSpec(list(runners), split["settings"], runner_options), problems


def config_words(field: str) -> str:
    """How a config's [bench] names an option in the runners' messages: `on =` for the runner (`--on` on
    the command line), else its key (`tflm-root =`)."""
    return "on =" if field == "runner" else f"{key_name(field)} ="


def runner_problems(runners: Iterable[str], options: Any, spell: Spell, settings: Any = None) -> list[str]:
    """Each runner made as the bench will make it, so what it checks up front (a QEMU board, the TFLite
    Micro tree it builds against, a setting it does not use among `settings`) is a config problem, not a
    failure after the conversions; its messages name options as `spell` writes them (`config_words`)."""
    from edgeport.bench.runner import get_runner
    from edgeport.bench.unused import refuse_unused

    problems = []
    for spec in runners:
        try:
            runner = get_runner(spec, options, spell)
            if settings is not None:
                refuse_unused(settings.model_copy(update={"runner": spec}), runner.uses, spell)
        except EdgeportError as err:
            line = f"[bench] {err.one_line()}"
            if line not in problems:
                problems.append(line)
    return problems


# ---------------------------------------------------------------------------------------------------------


def check_validation(given: dict[str, Any], base: Path) -> tuple[Any, list[str]]:
    """[validation]: the data (an .npz or a folder of images with a labels file, relative to the config),
    the metric, and for images their normalisation."""
    from edgeport.run.evaluate import ValidationOptions, data_problems

    if not given:
        return None, []
    fields = ValidationOptions.model_fields
    problems = [f"[validation] unknown key {k!r}{closest(k, fields)}" for k in given if k not in fields]
    if problems:
        return None, problems
    if isinstance(given.get("data"), str):
        given = {**given, "data": config_relative(given["data"], base)}
    try:
        options = validate_options(ValidationOptions, given, lambda f: f)
    except EdgeportError as err:
        return None, [f"[validation] {err.one_line()}"]
    if not options.data.exists():
        return None, [
            f"[validation] data: {options.data} does not exist (paths are relative to the config's folder)"
        ]
    problems = [f"[validation] {p}" for p in options.image_problems()]
    labels = options.data / options.labels_name
    if options.data.is_dir() and not labels.is_file():
        problems.append(
            f"[validation] labels: {labels} does not exist; write one `FILENAME LABEL` line per image there"
        )
    else:
        problems += [f"[validation] {p}" for p in data_problems(options)]
    return (None, problems) if problems else (options, [])


def read_toml(path: Path) -> tuple[str, dict[str, Any]]:
    if path.is_dir():
        inside = path / CONFIG_NAME
        raise EdgeportError(
            f"config {path} is a directory",
            f"give {inside}" if inside.is_file() else "give the path of an edgeport.toml file in it",
        )
    if not path.is_file():
        raise EdgeportError(
            f"config {path} does not exist", "give the path of an edgeport.toml (`edgeport init` writes one)"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EdgeportError(
            f"config {path} cannot be read as text ({type(err).__name__})",
            "give an edgeport.toml (UTF-8 TOML)",
        ) from None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise EdgeportError(f"{path} is not valid TOML: {err}", "fix the syntax at that line") from None


def load_config(path: Path | str) -> RunConfig:
    """The config at `path`, every problem found at once (ConfigError), before any work starts."""
    path = Path(path)
    text, data = read_toml(path)
    return check_config(data, path, text)


def check_config(data: dict[str, Any], path: Path, text: str = "") -> RunConfig:
    keys = convert_keys()
    spell = spell_keys(keys.values())
    problems: list[str] = []
    section_keys = {
        "": ["output", "model", "recipe", "targets", "bench", "validation"],
        "model": [k.name for k in keys.values() if section_of(k) == "model"],
        "recipe": [k.name for k in keys.values() if section_of(k) == "recipe"],
    }
    bench = bench_models()
    if bench:
        section_keys["bench"] = ["on"] + [
            key_name(f, i) for m in bench for f, i in m.model_fields.items() if f != "runner" and _has_flag(i)
        ]
    bad: set[str] = set()
    try:
        config_model().model_validate(data)
    except ValidationError as err:
        problems += _pydantic_problems(err, section_keys, bad)
    # The keys already found wrong are left out of the checks below: one line per mistake.
    model = {k: v for k, v in _table(data, "model").items() if k not in bad}
    recipe = {k: v for k, v in _table(data, "recipe").items() if k not in bad}
    base = path.parent
    files, missing = resolve_files(model, keys, base)
    recipe_files, recipe_missing = resolve_files(recipe, keys, base)
    problems += [f"[model] {p}" for p in missing] + [f"[recipe] {p}" for p in recipe_missing]
    files.update(recipe_files)
    targets_given = data.get("targets") or {}
    targets, target_problems = check_targets(targets_given if isinstance(targets_given, dict) else {}, base)
    problems += target_problems
    if not targets_given and not problems:
        problems.append(
            '[targets] no target given; add e.g. [targets.cortex-m] with board = "nucleo-h743zi2"'
        )
    bench_spec, bench_problems = check_bench(
        data.get("bench") if isinstance(data.get("bench"), dict) else None, targets, base
    )
    problems += bench_problems
    validation, validation_problems = check_validation(_table(data, "validation"), base)
    problems += validation_problems
    variants: list[Variant] = []
    if "source" in model:
        variants, variant_problems = check_variants(model, recipe, keys, spell, base)
        problems += variant_problems
    elif isinstance(data.get("model"), dict) and "source" not in bad:
        problems.append(f"[model] 'source' is missing{MISSING_FIX['source']}")
    shapes = variants[0].options.input_shapes if variants else None
    if validation is not None and shapes and len(shapes) == 1:
        from edgeport.run.evaluate import input_problems

        problems += [f"[validation] {p}" for p in input_problems(validation, shapes[0])]
    if problems:
        raise ConfigError(path, problems)
    output = data.get("output")
    return RunConfig(
        path=path,
        text=text,
        output=config_relative(output, base) if isinstance(output, str) else None,
        variants=variants,
        targets=targets,
        bench=bench_spec,
        files=files,
        validation=validation,
    )


def _table(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name)
    return dict(value) if isinstance(value, dict) else {}


def check_variants(
    model: dict[str, Any],
    recipe: dict[str, Any],
    keys: Mapping[str, Key],
    spell: Callable[[str], str],
    base: Path = Path("."),
) -> tuple[list[Variant], list[str]]:
    given = {k: v for k, v in {**model, **recipe}.items() if v is not None}
    source = given.get("source")
    if isinstance(source, list):
        return [], ["[model] source: one model per config (a list of sources is not supported)"]
    varied = axes(given, keys)
    points, problems = drop_inapplicable(expand(given, varied), keys, spell)
    variants: list[Variant] = []
    seen: set[str] = set()
    for point in points:
        options, bad = build_options(point, keys, spell, str(source))
        for line in bad:
            where = f"[{section_of(keys[_named(line, keys)])}] " if _named(line, keys) else ""
            line = f"{where}{line}"
            if line not in problems:
                problems.append(line)
        if options is not None:
            name = variant_name(point, varied, keys)
            if name in seen:
                problems.append(
                    f"two variants are both called {name!r}; give each varied key distinct values"
                )
            seen.add(name)
            command = convert_command(point, keys, base)
            variants.append(Variant(name, {n: point.get(n) for n, _ in varied}, options, command))
    return variants, problems


def _flag_text(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def convert_command(point: Mapping[str, Any], keys: Mapping[str, Key], base: Path) -> list[str]:
    """The `edgeport convert` words one variant is equivalent to (paths relative to the config's folder):
    each key is its flag, so the command is the config read back."""

    def shown(key: Key, value: Any) -> str:
        if key.field == "source" or _is_path(key):
            text = source_file(str(value)) if key.field == "source" else str(value)
            rest = str(value)[len(text) :] if key.field == "source" else ""
            return os.path.relpath(text, base) + rest
        return _flag_text(value)

    words = ["edgeport", "convert", shown(keys["source"], point["source"])]
    for name, value in point.items():
        key = keys[name]
        if name == "source" or value is None or (key.main and is_off(key, value)):
            continue
        if isinstance(value, bool):
            if value != key.info.default:
                words.append(f"--{name}" if value else f"--no-{name}")
            continue
        value = _as_list(key, value)
        repeated = (
            key.many
            and isinstance(value, list)
            and (extra(key.info).get("multiple") or not extra(key.info).get("text"))
        )
        for one in value if repeated else [value]:
            words += [f"--{name}", shown(key, one)]
    return words


def _named(line: str, keys: Mapping[str, Key]) -> str | None:
    """The first config key a problem line names, to say which section it is in."""
    words = {w.strip(".,:;'\"()") for w in line.split()}
    return next((k for k in keys if k in words), None)
