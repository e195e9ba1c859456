"""`edgeport init`: the bundled examples (examples/NAME.toml and the model file each names) copied where the
user wants them, so that the config runs as it is."""

from __future__ import annotations

from pathlib import Path

import edgeport
from edgeport.errors import EdgeportError
from edgeport.outdir import write_files
from edgeport.run.config import CONFIG_NAME, read_toml, source_file

# A source checkout (and an editable install) keeps the examples beside the package.
EXAMPLES = Path(edgeport.__file__).resolve().parent.parent / "examples"


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.toml")) if EXAMPLES.is_dir() else []


def example_files(name: str) -> tuple[Path, Path]:
    """The example's config and the model source file it names."""
    config = EXAMPLES / f"{name}.toml"
    if not config.is_file():
        known = ", ".join(example_names()) or "none (this installation has no examples/ folder)"
        raise EdgeportError(f"no bundled example {name!r}", f"use --example with one of: {known}")
    _, data = read_toml(config)
    return config, config.parent / source_file(str(data["model"]["source"]))


def write_example(name: str, config: Path, force: bool = False) -> list[Path]:
    """Copy example `name` to `config` and its model file beside it; existing files need `force`."""
    example, model = example_files(name)
    config = Path(config)
    targets = [(config, example), (config.parent / model.name, model)]
    folders = [str(path) for path, _ in targets if path.is_dir()]
    if folders:
        raise EdgeportError(
            f"{folders[0]} is a directory", f"give -o a file path, e.g. -o {Path(folders[0]) / CONFIG_NAME}"
        )
    existing = [str(path) for path, _ in targets if path.exists()]
    if existing and not force:
        raise EdgeportError(
            f"{' and '.join(existing)} already exist{'s' * (len(existing) == 1)}",
            "pass --force to overwrite, or -o another file",
        )
    write_files({path: source.read_bytes() for path, source in targets}, make_parents=True)
    return [path for path, _ in targets]
