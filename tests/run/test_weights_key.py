"""`weights = "ckpt.pt:KEY"` in an `edgeport run` config: the file is found under the config's folder and
its bytes, with the key, are in the conversion's cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeport.run.config import ConfigError, load_config
from edgeport.run.execute import convert_key

MODEL = "import torch\n\ndef build():\n    return torch.nn.Linear(4, 2)\n"
TOOLS = {"edgeport-code": "fixed for this test", "onnx2tf": "test"}


def _config(tmp_path: Path, weights: str) -> Path:
    (tmp_path / "net.py").write_text(MODEL)
    path = tmp_path / "edgeport.toml"
    path.write_text(
        f'[model]\nsource = "net.py:build"\ninput-shape = "1,4"\nweights = "{weights}"\n'
        '[targets.cortex-m]\nboard = "nucleo-h743zi2"\n'
    )
    return path


def test_weights_key_resolves_under_the_config_folder(tmp_path: Path) -> None:
    (tmp_path / "ckpt.pt").write_bytes(b"one")
    (variant,) = load_config(_config(tmp_path, "ckpt.pt:train/ema")).variants
    assert str(variant.options.weights) == f"{tmp_path / 'ckpt.pt'}:train/ema"
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, "absent.pt:ema"))
    assert caught.value.problems == [
        "[model] weights: absent.pt does not exist (paths are relative to the config's folder)"
    ]


def test_the_cache_key_follows_the_files_bytes_and_the_key(tmp_path: Path) -> None:
    (tmp_path / "ckpt.pt").write_bytes(b"one")

    def key(weights: str) -> str:
        (variant,) = load_config(_config(tmp_path, weights)).variants
        return convert_key(variant.options, TOOLS)

    before = key("ckpt.pt:ema")
    assert key("ckpt.pt:ema") == before
    assert key("ckpt.pt:model") != before
    (tmp_path / "ckpt.pt").write_bytes(b"two")
    assert key("ckpt.pt:ema") != before
