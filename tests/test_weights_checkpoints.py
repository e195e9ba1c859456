"""--weights finds the model's state dict inside common checkpoint layouts, and names keys on a mismatch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgeport.converters.sources import load_source
from edgeport.errors import EdgeportError
from tests.conftest import ROOT
from tests.fixtures.tiny_models import SequenceHead

SOURCE = f"{ROOT / 'tests' / 'fixtures' / 'tiny_models.py'}:SequenceHead"


def _trained() -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    net = SequenceHead()
    for p in net.parameters():
        p.data.normal_()
    return net.state_dict()


def _load(tmp_path: Path, checkpoint: object) -> torch.nn.Module:
    torch.save(checkpoint, tmp_path / "w.pt")
    return load_source(SOURCE, tmp_path / "w.pt").module


@pytest.mark.parametrize(
    "layout",
    [
        lambda sd: sd,
        lambda sd: {"model_state": sd, "epoch": 12, "best_acc": torch.tensor(0.9)},
        lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {"lr": 0.1}},
        lambda sd: {"checkpoint": {"net": {f"model.{k}": v for k, v in sd.items()}}},
    ],
    ids=["plain", "model_state", "state_dict_dataparallel", "nested_net_prefixed"],
)
def test_weights_found_in_common_checkpoint_layouts(tmp_path: Path, layout) -> None:
    trained = _trained()
    loaded = _load(tmp_path, layout(trained)).state_dict()
    assert loaded.keys() == trained.keys()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_mismatch_names_the_keys_and_the_nesting(tmp_path: Path) -> None:
    other = {"encoder.weight": torch.zeros(8, 16), "encoder.bias": torch.zeros(8)}
    with pytest.raises(EdgeportError) as info:
        _load(tmp_path, {"model_state": other, "epoch": 3})
    message = str(info.value)
    assert "closest: checkpoint['model_state']" in message
    assert "missing 2 key(s): fc.bias, fc.weight" in message
    assert "unexpected 2 key(s): encoder.bias, encoder.weight" in message


def test_shape_mismatch_names_the_tensor(tmp_path: Path) -> None:
    sd = _trained()
    sd["fc.weight"] = torch.zeros(3, 16)
    with pytest.raises(EdgeportError, match=r"fc\.weight \(3, 16\) \(model \(8, 16\)\)"):
        _load(tmp_path, {"model": sd})


def test_two_fitting_state_dicts_are_ambiguous(tmp_path: Path) -> None:
    sd = _trained()
    with pytest.raises(EdgeportError, match="several state dicts.*'model'.*'ema'"):
        _load(tmp_path, {"model": sd, "ema": sd})


def test_a_checkpoint_without_tensors_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EdgeportError, match="holds no tensors under string keys"):
        _load(tmp_path, [1, 2, 3])


def _safetensors(tensors: dict[str, torch.Tensor]) -> bytes:
    """The format as its specification writes it: header size (u64 LE), JSON header, raw bytes."""
    header, body = {"__metadata__": {"format": "pt"}}, b""
    for name, tensor in tensors.items():
        raw = tensor.contiguous().numpy().tobytes()
        header[name] = {
            "dtype": "F32",
            "shape": list(tensor.shape),
            "data_offsets": [len(body), len(body) + len(raw)],
        }
        body += raw
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + body


def test_weights_from_safetensors(tmp_path: Path) -> None:
    trained = _trained()
    (tmp_path / "w.safetensors").write_bytes(_safetensors({f"model.{k}": v for k, v in trained.items()}))
    loaded = load_source(SOURCE, tmp_path / "w.safetensors").module.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_damaged_safetensors_is_a_user_error(tmp_path: Path) -> None:
    data = bytearray(_safetensors(_trained()))
    (tmp_path / "w.safetensors").write_bytes(bytes(data[:-40]))  # cut short
    with pytest.raises(EdgeportError, match="damaged safetensors file"):
        load_source(SOURCE, tmp_path / "w.safetensors")


def test_a_state_dict_given_as_source_points_to_weights(tmp_path: Path, run_cli) -> None:
    torch.save({"model_state": _trained(), "epoch": 3}, tmp_path / "ckpt.pth")
    code, _, err = run_cli("convert", tmp_path / "ckpt.pth", "-o", tmp_path / "out")
    assert code == 1, err
    assert "holds weights (a state_dict or checkpoint), not a model" in err
    assert f"--weights {tmp_path / 'ckpt.pth'}" in err and "--trust-pickle" not in err


def _with_training_only(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """resemblyzer's pretrained.pt: the model's tensors plus a loss's parameters it never uses."""
    return {**sd, "similarity_weight": torch.tensor([10.0]), "similarity_bias": torch.tensor([-5.0])}


def test_training_only_keys_are_ignored_with_a_warning(tmp_path: Path) -> None:
    trained = _trained()
    torch.save({"model_state": _with_training_only(trained), "step": 3}, tmp_path / "w.pt")
    source = load_source(SOURCE, tmp_path / "w.pt")
    loaded = source.module.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)
    (warning,) = source.warnings
    assert "w.pt: ignored 2 checkpoint key(s) the model does not have" in warning
    assert "(similarity_bias, similarity_weight)" in warning


def test_an_exact_state_dict_wins_over_one_with_extra_keys(tmp_path: Path) -> None:
    trained = _trained()
    torch.save({"model": trained, "training": _with_training_only(trained)}, tmp_path / "w.pt")
    assert load_source(SOURCE, tmp_path / "w.pt").warnings == []


def test_extra_keys_do_not_excuse_a_missing_key(tmp_path: Path) -> None:
    partial = _with_training_only(_trained())
    del partial["fc.bias"]
    with pytest.raises(EdgeportError) as info:
        _load(tmp_path, {"model_state": partial})
    message = str(info.value)
    assert "missing 1 key(s): fc.bias" in message
    assert "unexpected 2 key(s): similarity_bias, similarity_weight" in message


def test_extra_keys_do_not_excuse_a_shape_mismatch(tmp_path: Path) -> None:
    sd = _with_training_only(_trained())
    sd["fc.weight"] = torch.zeros(3, 16)
    with pytest.raises(EdgeportError, match=r"fc\.weight \(3, 16\) \(model \(8, 16\)\)"):
        _load(tmp_path, sd)


def test_the_warning_reaches_the_manifest_and_the_summary(tmp_path: Path) -> None:
    from edgeport.manifest import Artifact, Manifest
    from edgeport.pipeline import ConvertOptions, ConvertResult, stages
    from edgeport.pipeline.state import ConvertState

    torch.save(_with_training_only(_trained()), tmp_path / "w.pt")
    state = ConvertState(
        options=ConvertOptions(source=SOURCE, outdir=tmp_path / "out", weights=tmp_path / "w.pt")
    )
    stages.load(state)
    (warning,) = state.manifest.source.warnings
    assert "similarity_bias, similarity_weight" in warning and str(tmp_path) not in warning
    manifest = Manifest(
        artifacts=[Artifact(path="model_float32.tflite", kind="tflite", sha256="0", size_bytes=1)]
    )
    summary = ConvertResult(
        outdir=tmp_path / "out", manifest=manifest, seconds=1.0, warnings=[warning]
    ).summary()
    assert summary.splitlines()[1] == f"warning: {warning}"


# --- --weights FILE:KEY ---------------------------------------------------------------------------


def _two_fitting(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A checkpoint with the model's weights twice (a training run's and its EMA), the EMA's distinct."""
    trained = _trained()
    ema = {k: v + 1.0 for k, v in trained.items()}
    torch.save({"model": trained, "ema": ema, "epoch": 12}, tmp_path / "ckpt.pt")
    return tmp_path / "ckpt.pt", ema


def test_weights_key_picks_one_of_several_fitting_state_dicts(tmp_path: Path, run_cli) -> None:
    import onnx
    from onnx import numpy_helper

    ckpt, ema = _two_fitting(tmp_path)
    code, _, err = run_cli(
        "convert", SOURCE, "--weights", ckpt, "--input-shape", "1,4,16", "-o", tmp_path / "a"
    )
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "several state dicts" in err and f"--weights {ckpt}:KEY, KEY one of ema, model" in err
    code, _, err = run_cli(
        "convert", SOURCE, "--weights", f"{ckpt}:ema", "--input-shape", "1,4,16", "-o", tmp_path / "b"
    )
    assert code == 0, err
    stored = [numpy_helper.to_array(t) for t in onnx.load(tmp_path / "b" / "model.onnx").graph.initializer]
    assert any(np.array_equal(a, ema["fc.bias"].numpy()) for a in stored)


def test_unknown_weights_key_lists_the_keys_there_are(tmp_path: Path, run_cli) -> None:
    ckpt, _ = _two_fitting(tmp_path)
    for key, listed in [
        ("emma", "checkpoint has no key 'emma'; its keys: model, ema, epoch"),
        ("ema/net", "checkpoint['ema'] has no key 'net'; its keys: fc.weight, fc.bias"),
        ("epoch/x", "checkpoint['epoch'] is of type int, not a dict with a key 'x'"),
    ]:
        out = tmp_path / key.replace("/", "_")
        code, _, err = run_cli(
            "convert", SOURCE, "--weights", f"{ckpt}:{key}", "--input-shape", "1,4,16", "-o", out
        )
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert listed in err and "internal" not in err and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]


def test_weights_key_reaches_deeper_than_the_search(tmp_path: Path) -> None:
    trained = _trained()
    deep = {"run": {"stages": {"last": {"weights": {"student": trained}}}}}  # below the 3 levels searched
    with pytest.raises(EdgeportError, match="holds no tensors"):
        _load(tmp_path, deep)
    for key in ("run/stages/last/weights/student", "run/stages/last"):
        loaded = load_source(SOURCE, Path(f"{tmp_path / 'w.pt'}:{key}")).module.state_dict()
        assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_weights_key_of_a_missing_file_and_a_file_named_with_a_colon(tmp_path: Path) -> None:
    with pytest.raises(
        EdgeportError, match=r"weights file \S+absent\.pt does not exist \(--weights .*:ema read"
    ):
        load_source(SOURCE, tmp_path / "absent.pt:ema")
    trained = _trained()
    torch.save(trained, tmp_path / "run:3.pt")  # the whole name is a file: no key
    loaded = load_source(SOURCE, tmp_path / "run:3.pt").module.state_dict()
    assert all(torch.equal(loaded[k], trained[k]) for k in trained)


def test_split_weights(tmp_path: Path) -> None:
    from edgeport.options import split_weights

    (tmp_path / "a:b.pt").write_bytes(b"")
    assert split_weights("w.pt") == ("w.pt", None)
    assert split_weights("w.pt:ema") == ("w.pt", "ema")
    assert split_weights("dir/w.pt:train/ema") == ("dir/w.pt", "train/ema")
    assert split_weights("a:b.pt", tmp_path) == ("a:b.pt", None)  # an existing file (under `base`)
    assert split_weights("a:b.pt") == ("a", "b.pt")
    assert split_weights(":ema") == (":ema", None) and split_weights("w.pt:") == ("w.pt:", None)
