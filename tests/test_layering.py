"""Which packages may import which, checked on every module's imports (module level and inside functions).

- the spine (edgeport/*.py, edgeport/runtimes/): errors, manifest, tensors, the runtimes, the .tflite and
  ONNX helpers... imports none of converters, quant, targets, pipeline, cli;
- converters and quant do not import each other (quant works on any .tflite / ONNX graph, whoever made it);
- targets may import the spine and quant (a target packages a quantized model), not converters;
- edgeport/pipeline/, edgeport/run/ (`edgeport run`) and edgeport/cli/ put it all together and may import
  everything.

A known violation in a file whose owner has not moved it yet is listed in ALLOWED with the reason, so
this test still fails on any new one; an entry that is no longer needed fails too, so the list shrinks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Where each part of the installed `edgeport` package lives in the repository (pyproject's package-dir).
SOURCES = {"edgeport": ROOT / "edgeport", "converters": ROOT / "converters", "quant": ROOT / "quant"}
SOURCES["targets"] = ROOT / "targets"
LAYERS = ("spine", "converters", "quant", "targets", "app")
MAY_IMPORT = {
    "spine": {"spine"},
    "converters": {"spine", "converters"},
    "quant": {"spine", "quant"},
    "targets": {"spine", "quant", "targets"},
    "app": set(LAYERS),
}

# (importing file, imported module): why it is still there. Each names the module actually imported.
ALLOWED: dict[tuple[str, str], str] = {}


def layer_of_module(module: str) -> str | None:
    """The layer of an `edgeport...` module name (None for third-party modules)."""
    parts = module.split(".")
    if parts[0] != "edgeport":
        return None
    if len(parts) == 1:
        return "spine"
    if parts[1] in ("converters", "quant", "targets"):
        return parts[1]
    if parts[1] in ("pipeline", "run", "cli", "__main__"):
        return "app"
    return "spine"


def _path_of(module: str) -> Path | None:
    """The file or package folder of an `edgeport...` module, if it is one."""
    parts = module.split(".")
    if parts[0] != "edgeport":
        return None
    folder = SOURCES.get(parts[1], SOURCES["edgeport"]) if len(parts) > 1 else SOURCES["edgeport"]
    rest = parts[2:] if len(parts) > 1 and parts[1] in SOURCES and parts[1] != "edgeport" else parts[1:]
    base = folder.joinpath(*rest) if rest else folder
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return base if (base / "__init__.py").is_file() else None


def _module_name(path: Path) -> str:
    for top, folder in SOURCES.items():
        if path.is_relative_to(folder):
            rel = path.relative_to(folder).with_suffix("")
            parts = ["edgeport"] + ([] if top == "edgeport" else [top]) + list(rel.parts)
            return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    raise AssertionError(f"{path} is outside the package")


def imports_in(source: str, module: str, is_package: bool = False) -> Iterator[tuple[str, str | None]]:
    """(module, name) for every import anywhere in `source` (module `module`), relative ones resolved:
    `import a.b` gives (a.b, None); `from a import b` gives (a.b, None) when a.b is a module of this
    repository, else (a, b)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((alias.name, None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule, None) if _path_of(submodule) is not None else (base, alias.name)


def imports_of(path: Path) -> Iterator[tuple[str, str | None]]:
    return imports_in(path.read_text(), _module_name(path), path.name == "__init__.py")


def source_files() -> Iterator[Path]:
    for folder in SOURCES.values():
        yield from sorted(folder.rglob("*.py"))


def violations() -> dict[tuple[str, str], str]:
    """(file, imported module or module:_name) -> what is wrong, for every import the rules forbid."""
    found = {}
    for path in source_files():
        file = str(path.relative_to(ROOT))
        importer = layer_of_module(_module_name(path))
        assert importer is not None
        for imported, name in imports_of(path):
            layer = layer_of_module(imported)
            if layer is None:
                continue
            if layer not in MAY_IMPORT[importer]:
                found[(file, imported)] = f"{importer} imports {layer}"
            if name is not None and name.startswith("_") and not name.startswith("__"):
                found[(file, f"{imported}:{name}")] = "a private name of another module"
    return found


# .tflite files are read and edited with edgeport.tflite_file (parse_tflite, edit_tflite, serialize_tflite),
# one reader with its own checks, not with TensorFlow's object-tree helpers.
FLATBUFFER_UTILS = "tensorflow.lite.tools.flatbuffer_utils"


# The generated TFLite schema bindings are imported by edgeport.tflite_file alone and reached through it
# (`from edgeport.tflite_file import schema`): one module decides which copy of the schema the package reads
# (TensorFlow ships its own, whose object classes are not tflite_micro's).
SCHEMA_BINDINGS = (
    "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
    "tensorflow.lite.python.schema_py_generated",
)
SCHEMA_READER = SOURCES["edgeport"] / "tflite_file.py"


def imports_of_module(imports: Iterable[tuple[str, str | None]], module: str) -> list[str]:
    """Those of `imports` (imports_in's pairs) that import `module` or a name from it, as dotted names."""
    dotted = (imported if name is None else f"{imported}.{name}" for imported, name in imports)
    return [d for d in dotted if d == module or d.startswith(f"{module}.")]


def test_layering_rules_hold() -> None:
    new = {key: what for key, what in violations().items() if key not in ALLOWED}
    assert not new, "imports across layers (see tests/test_layering.py for the rules):\n" + "\n".join(
        f"  {file}: {module} ({what})" for (file, module), what in sorted(new.items())
    )


def test_every_allowed_violation_still_exists() -> None:
    stale = set(ALLOWED) - set(violations())
    assert not stale, f"no longer needed, remove from ALLOWED: {sorted(stale)}"


def test_no_module_imports_tensorflow_s_flatbuffer_utils() -> None:
    found = [
        f"  {path.relative_to(ROOT)}: {imported}"
        for path in source_files()
        for imported in imports_of_module(imports_of(path), FLATBUFFER_UTILS)
    ]
    assert not found, "read and edit .tflite with edgeport.tflite_file instead:\n" + "\n".join(found)


def test_only_tflite_file_imports_the_schema_bindings() -> None:
    found = [
        f"  {path.relative_to(ROOT)}: {imported}"
        for path in source_files()
        if path != SCHEMA_READER
        for module in SCHEMA_BINDINGS
        for imported in imports_of_module(imports_of(path), module)
    ]
    assert not found, "import the schema as `from edgeport.tflite_file import schema`:\n" + "\n".join(found)


def test_the_schema_rule_sees_the_reader_s_own_import() -> None:
    # The one exempt file does import the bindings, so the rule above looks at the form actually used.
    assert imports_of_module(imports_of(SCHEMA_READER), SCHEMA_BINDINGS[0]) == [SCHEMA_BINDINGS[0]]


def test_layer_of_module() -> None:
    assert layer_of_module("numpy") is None
    assert layer_of_module("edgeport.runtimes.tflm") == "spine"
    assert layer_of_module("edgeport.tensors") == "spine"
    assert layer_of_module("edgeport.quant.int8") == "quant"
    assert layer_of_module("edgeport.targets.cortex_m.arena") == "targets"
    assert layer_of_module("edgeport.pipeline.stages") == "app"
    assert layer_of_module("edgeport.__main__") == "app"


def test_imports_inside_functions_and_relative_ones_are_seen() -> None:
    source = "import numpy\ndef f():\n    from edgeport.converters import verify\n    from .int8 import _x\n"
    found = set(imports_in(source, "edgeport.quant.modes"))
    assert found == {("numpy", None), ("edgeport.converters.verify", None), ("edgeport.quant.int8", "_x")}
    assert set(imports_in("from . import int8", "edgeport.quant", is_package=True)) == {
        ("edgeport.quant.int8", None)
    }


def test_an_import_of_a_module_is_seen_in_every_form() -> None:
    source = (
        "from tensorflow.lite.tools import flatbuffer_utils\n"
        "def f():\n    import tensorflow.lite.tools.flatbuffer_utils as fu\n"
        "from tensorflow.lite.tools.flatbuffer_utils import read_model\n"
        "from tensorflow.lite.tools import visualize\n"
    )
    found = imports_of_module(imports_in(source, "edgeport.quant.int8"), FLATBUFFER_UTILS)
    assert sorted(found) == [FLATBUFFER_UTILS, FLATBUFFER_UTILS, f"{FLATBUFFER_UTILS}.read_model"]
