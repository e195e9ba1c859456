"""Load what the user points at: a PyTorch module (file.py:callable, TorchScript, torch.export .pt2)
or an ONNX model. Every failure is an EdgeportError naming the file and the fix.

Pickled whole-model files are refused by default: unpickling runs arbitrary code from the file.
"""

from __future__ import annotations

import copy
import importlib.util
import inspect
import json
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import torch

from edgeport.converters.onnx_prepare import check_translatable, unique_node_names
from edgeport.errors import EdgeportError
from edgeport.onnx_graph import opset_version
from edgeport.options import split_weights


@dataclass
class LoadedSource:
    kind: str  # "python" | "torchscript" | "exported_program" | "pickle" | "onnx"
    path: Path
    module: Any = None  # torch.nn.Module (or ScriptModule) for PyTorch sources
    onnx_model: onnx.ModelProto | None = None
    example_shapes: list[list[int]] = field(default_factory=list)  # shapes stored in the source itself
    forward_arg_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what loading left out that the user must know

    @property
    def is_torch(self) -> bool:
        return self.kind != "onnx"


def load_source(source: str, weights: Path | None = None, trust_pickle: bool = False) -> LoadedSource:
    """Dispatch on the SOURCE syntax and file contents."""
    path_text, _, attr = source.rpartition(":") if ".py:" in source else (source, "", "")
    if attr:
        return _load_python(Path(path_text), attr, weights, trust_pickle)
    path = Path(source)
    if not path.exists():
        raise EdgeportError(f"model file {path} does not exist", "check the SOURCE path")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise EdgeportError(
                f"{path} is a TensorFlow SavedModel; edgeport converts PyTorch and ONNX models",
                "convert it to ONNX first (python -m tf2onnx.convert --saved-model DIR) and give the .onnx",
            )
        raise EdgeportError(f"{path} is a directory", "give a model file (.py:callable, .pt, .pt2 or .onnx)")
    if path.suffix == ".py":
        raise EdgeportError(
            f"{path} is a Python file without a callable",
            f"write SOURCE as {path}:build_model, naming the function or class that returns the nn.Module",
        )
    if weights is not None:
        raise EdgeportError("--weights only applies to a file.py:callable SOURCE", "drop --weights")
    if path.suffix == ".onnx":
        return _load_onnx(path)
    if path.suffix == ".pt2":
        return _load_exported_program(path)
    with path.open("rb") as f:
        head = f.read(16)
    # torch.save and torch.jit.save write zip archives (or, long ago, a bare pickle: protocol byte 0x80).
    if head[:2] == b"PK" or head[:1] == b"\x80" or not head:
        return _load_torch_file(path, trust_pickle)
    return _load_other(path, head)


def _load_other(path: Path, head: bytes) -> LoadedSource:
    """A file that is no PyTorch file: an ONNX model without the .onnx suffix, or a clear refusal."""
    if head[4:8] == b"TFL3":
        raise EdgeportError(
            f"{path} is already a TFLite model", "give the PyTorch or ONNX model it was converted from"
        )
    if head[:8] == b"\x89HDF\r\n\x1a\n" or path.suffix in (".h5", ".keras", ".pb"):
        raise EdgeportError(
            f"{path} is a TensorFlow / Keras model; edgeport converts PyTorch and ONNX models",
            "convert it to ONNX first (e.g. python -m tf2onnx.convert) and give the .onnx file",
        )
    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception:  # noqa: BLE001 - not ONNX either: refused below
        model = None
    if model is not None and model.graph.node:
        return _load_onnx(path)
    raise EdgeportError(
        f"{path} is not a model file edgeport knows (not PyTorch, TorchScript, torch.export or ONNX)",
        "give file.py:callable, a .pt (TorchScript), a .pt2 (torch.export) or a .onnx file",
    )


def _load_onnx(path: Path) -> LoadedSource:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise EdgeportError(
            f"{path} is not a valid ONNX model ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})",
            "re-export it (torch.onnx.export) or check that the file was copied whole",
        ) from exc
    model = unique_node_names(_readable_ir(model, path))
    return LoadedSource(kind="onnx", path=path, onnx_model=check_translatable(model))


# onnxruntime 1.23 (the verifier) reads ONNX IR versions up to 11 (onnx 1.19 writes 12 by default) and
# the standard opsets up to 23 (onnx 1.19 defines 24).
_RUNTIME_MAX_IR = 11
_RUNTIME_MAX_OPSET = 23


def _readable_ir(model: onnx.ModelProto, path: Path) -> onnx.ModelProto:
    """Lower a newer IR version stamp to what onnxruntime reads, when the model's opsets allow it."""
    opset = opset_version(model)
    if opset > _RUNTIME_MAX_OPSET:
        raise EdgeportError(
            f"{path} uses ONNX opset {opset}; onnxruntime here (which verifies the conversion) runs "
            f"opsets up to {_RUNTIME_MAX_OPSET}",
            f"re-export the model with opset {_RUNTIME_MAX_OPSET} or lower (e.g. opset_version=17)",
        )
    if model.ir_version <= _RUNTIME_MAX_IR:
        return model
    needed = onnx.helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if needed > _RUNTIME_MAX_IR:
        raise EdgeportError(
            f"{path} uses opsets that need ONNX IR version {needed}; onnxruntime here reads up to "
            f"{_RUNTIME_MAX_IR}",
            "re-export the model with an older opset (e.g. 17)",
        )
    lowered = onnx.ModelProto()
    lowered.CopyFrom(model)
    lowered.ir_version = _RUNTIME_MAX_IR
    return lowered


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise EdgeportError(f"model file {path} does not exist", "check the SOURCE path before the ':'")
    name = f"_edgeport_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EdgeportError(f"cannot import {path}", "give a .py file")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, as a normal import would be: @dataclass and pickling look the
    # defining module up in sys.modules.
    sys.modules[name] = module
    # The user's file may import siblings (e.g. a models/ package beside it).
    sys.path.insert(0, str(path.resolve().parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise EdgeportError(
            f"importing {path} failed: {type(exc).__name__}: {exc}",
            "fix the error in that file (run it with python to see the traceback)",
        ) from exc
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _load_python(path: Path, attr: str, weights: Path | None, trust_pickle: bool) -> LoadedSource:
    module = _import_file(path)
    if not hasattr(module, attr):
        callables = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise EdgeportError(
            f"{path} has no callable named {attr!r}",
            f"pick one of: {', '.join(callables[:8]) or '(none defined)'}",
        )
    factory = getattr(module, attr)
    try:
        net = factory()
    except Exception as exc:
        raise EdgeportError(
            f"calling {path.name}:{attr}() failed: {type(exc).__name__}: {exc}",
            "the callable must build the model with no arguments",
        ) from exc
    if not isinstance(net, torch.nn.Module):
        raise EdgeportError(
            f"{path.name}:{attr}() returned {type(net).__name__}, not a torch.nn.Module",
            "point SOURCE at a function or class that returns the model",
        )
    warnings = _load_weights(net, weights, trust_pickle) if weights is not None else []
    return LoadedSource(
        kind="python", path=path, module=net.eval(), forward_arg_names=_forward_args(net), warnings=warnings
    )


def _load_weights(net: Any, spec: Path, trust_pickle: bool) -> list[str]:
    """Load `spec` (--weights FILE[:KEY]) into `net`; returns the warnings (checkpoint keys the model has
    no use for)."""
    text, key = split_weights(str(spec))
    weights = Path(text)
    if not weights.is_file():
        read_as = f" (--weights {spec} read as FILE:KEY)" if key is not None else ""
        raise EdgeportError(f"weights file {weights} does not exist{read_as}", "check the --weights path")
    checkpoint = read_safetensors(weights)
    try:
        if checkpoint is None:
            checkpoint = torch.load(weights, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        raise EdgeportError(
            f"{weights} is not a plain state_dict file (loading it safely failed: {type(exc).__name__})",
            "save it with torch.save(model.state_dict(), path), or pass --trust-pickle if you trust the file",
        ) from exc
    expected = net.state_dict()
    root = tuple(key.split("/")) if key is not None else ()
    found, ignored = find_state_dict(
        select_key(checkpoint, root, str(weights)),
        {k: tuple(v.shape) for k, v in expected.items()},
        str(weights),
        root,
    )
    # Checkpoints from before BatchNorm counted batches lack num_batches_tracked: the model's own stays.
    try:
        net.load_state_dict({**expected, **found}, strict=True)
    except RuntimeError as exc:
        raise EdgeportError(
            f"{weights} does not load into the model ({str(exc).strip().splitlines()[-1][:160]})",
            "check that the weights belong to this model",
        ) from exc
    return [_ignored_keys_warning(weights.name, ignored)] if ignored else []


def _ignored_keys_warning(label: str, ignored: list[str]) -> str:
    return (
        f"{label}: ignored {len(ignored)} checkpoint key(s) the model does not have ({_first(ignored)}); "
        "fine for training-only parameters (a loss's, an auxiliary head's), "
        "else check the model's configuration"
    )


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}  # fmt: skip


def read_safetensors(path: Path) -> dict[str, Any] | None:
    """The tensors of a .safetensors file (Hugging Face's pickle-free format), or None if `path` is
    not one: an 8-byte little-endian header size, a JSON header, then the raw tensor bytes."""
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    if not 2 <= size <= len(data) - 8 or data[8:9] != b"{":
        return None
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError:
        return None
    body = data[8 + size :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _SAFETENSORS_DTYPES.get(info.get("dtype") if isinstance(info, dict) else None)
        if dtype is None:
            raise EdgeportError(
                f"{path}: tensor {name!r} has safetensors dtype {info.get('dtype')!r}, "
                "which edgeport cannot read",
                "save the weights in float32",
            )
        try:
            start, end = info["data_offsets"]
            raw = bytearray(body[start:end])
            flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
            tensors[name] = flat.reshape(info["shape"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise EdgeportError(
                f"{path} is a damaged safetensors file (tensor {name!r}: {type(exc).__name__})",
                "save the weights again, or check that the file was copied whole",
            ) from exc
    return tensors


def _where(keys: tuple[Any, ...]) -> str:
    """How a place in a checkpoint is written in messages: checkpoint['model_state']['net']."""
    return "checkpoint" + "".join(f"[{k!r}]" for k in keys)


@dataclass
class _Candidate:
    keys: tuple[Any, ...]  # the keys leading to it from the top of the checkpoint, e.g. ("model_state",)
    prefix: str  # key prefix removed, e.g. "module." (DataParallel)
    tensors: dict[str, Any]

    @property
    def where(self) -> str:
        return _where(self.keys)

    def describe(self) -> str:
        removed = f" with the prefix {self.prefix!r} removed" if self.prefix else ""
        return f"{self.where}{removed}"


_MAX_NESTING = 3
_LISTED_KEYS = 10


def _tensor_dicts(
    obj: Any, keys: tuple[Any, ...] = (), depth: int = 0
) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """Every mapping in `obj` (what a checkpoint holds under `keys`) holding tensors under string keys,
    up to _MAX_NESTING levels down, with the keys leading to it."""
    if not isinstance(obj, dict):
        return []
    found = []
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if tensors:
        found.append((keys, tensors))
    if depth < _MAX_NESTING:
        for key, value in obj.items():
            found += _tensor_dicts(value, (*keys, key), depth + 1)
    return found


def select_key(checkpoint: Any, keys: tuple[str, ...], label: str) -> Any:
    """What `checkpoint` holds under `keys` (--weights FILE:a/b: checkpoint['a']['b']; a key matches by
    its text, so 0 is written 0); a key that is not there is one line listing the keys that are."""
    obj = checkpoint
    for depth, key in enumerate(keys):
        where = _where(tuple(keys[:depth]))
        if not isinstance(obj, dict):
            raise EdgeportError(
                f"{label}: {where} is of type {type(obj).__name__}, not a dict with a key {key!r}",
                f"give --weights {label}:KEY with KEY one of the checkpoint's keys",
            )
        found = next((k for k in obj if str(k) == key), None)
        if found is None:
            names = [str(k) for k in obj]
            more = f", ... ({len(names)} in all)" if len(names) > _LISTED_KEYS else ""
            prefix = "/".join(keys[:depth] + ("",))
            listed = ", ".join(names[:_LISTED_KEYS]) or "(none)"
            raise EdgeportError(
                f"{label}: {where} has no key {key!r}; its keys: {listed}{more}",
                f"give --weights {label}:{prefix}KEY with one of them",
            )
        obj = obj[found]
    return obj


def _prefixes(keys: list[str], expected: dict[str, tuple[int, ...]]) -> list[str]:
    """Key prefixes whose removal would line `keys` up with the model's ("module.", "model.", ...)."""
    if not expected:
        return [""]
    anchor = next(iter(expected))
    found = {k[: len(k) - len(anchor)] for k in keys if k.endswith(anchor)}
    return [""] + sorted(p for p in found if p.endswith(".") and p != "")


def _required(expected: dict[str, tuple[int, ...]]) -> set[str]:
    return {k for k in expected if not k.endswith("num_batches_tracked")}


def _fits(tensors: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> bool:
    return _required(expected) <= tensors.keys() <= expected.keys()


def _covers(tensors: dict[str, Any], expected: dict[str, tuple[int, ...]]) -> bool:
    """Every tensor of the model is there, with keys left over (training-only parameters)."""
    return _required(expected) <= tensors.keys()


def _candidates(
    checkpoint: Any, expected: dict[str, tuple[int, ...]], root: tuple[str, ...]
) -> list[_Candidate]:
    result = []
    for keys, tensors in _tensor_dicts(checkpoint, root):
        for prefix in _prefixes(list(tensors), expected):
            stripped = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            if len(stripped) == len(tensors):
                result.append(_Candidate(keys, prefix, stripped))
    return result


def _first(keys: Any, count: int = 3) -> str:
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > count else ""
    return ", ".join(keys[:count]) + more


def find_state_dict(
    checkpoint: Any, expected: dict[str, tuple[int, ...]], label: str, root: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[str]]:
    """The model's weights in `checkpoint`: a state_dict, or one nested under a key ("model_state",
    "state_dict", "net", ...), possibly with a "module." (DataParallel) or other common prefix; and the
    keys left out, sorted.

    `expected` maps the model's state_dict keys to their shapes. Exactly one candidate must fit, or,
    when none does, hold every tensor of the model plus keys the model does not have (left out, as
    torch's load_state_dict(strict=False) would); otherwise the error names the missing / unexpected /
    mis-shaped keys and where they were looked for. `checkpoint` is what the file holds under the keys
    `root` (--weights FILE:KEY), which messages name.
    """
    candidates = _candidates(checkpoint, expected, root)
    if not candidates:
        raise EdgeportError(
            f"{label} holds no tensors under string keys{f' in {_where(root)}' if root else ''} "
            f"(it is a {type(checkpoint).__name__})",
            "save the weights with torch.save(model.state_dict(), path)",
        )
    fitting = [c for c in candidates if _fits(c.tensors, expected)]
    fitting = fitting or [c for c in candidates if _covers(c.tensors, expected)]
    if len({c.keys for c in fitting}) > 1:
        choices = sorted({"/".join(map(str, c.keys)) for c in fitting})
        raise EdgeportError(
            f"{label} holds several state dicts that fit the model: "
            f"{', '.join(c.describe() for c in fitting[:4])}",
            f"choose one with --weights {label}:KEY, KEY one of {', '.join(choices[:4])}",
        )
    if fitting:
        chosen = fitting[0]
        ignored = sorted(chosen.tensors.keys() - expected.keys())
        used = {k: v for k, v in chosen.tensors.items() if k in expected}
        wrong = [
            f"{k} {tuple(v.shape)} (model {expected[k]})"
            for k, v in used.items()
            if tuple(v.shape) != expected[k]
        ]
        if not wrong:
            return used, ignored
        raise EdgeportError(
            f"{label} does not match the model: {len(wrong)} tensor(s) of another shape in "
            f"{chosen.describe()}: {_first(wrong)}",
            "check that the weights belong to this model and its configuration (sizes, classes)",
        )
    best = max(candidates, key=lambda c: (len(c.tensors.keys() & expected.keys()), -len(c.tensors)))
    missing = expected.keys() - best.tensors.keys()
    unexpected = best.tensors.keys() - expected.keys()
    parts = [f"missing {len(missing)} key(s): {_first(missing)}" if missing else ""]
    parts.append(f"unexpected {len(unexpected)} key(s): {_first(unexpected)}" if unexpected else "")
    raise EdgeportError(
        f"{label} does not match the model (closest: {best.describe()}, {len(best.tensors)} tensors; "
        f"{'; '.join(p for p in parts if p)})",
        "check that the weights belong to this model and its configuration",
    )


def _forward_args(net: Any) -> list[str]:
    try:
        params = inspect.signature(net.forward).parameters.values()
    except (TypeError, ValueError):
        return []
    return [
        p.name
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is inspect.Parameter.empty
    ]


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return []


def _load_torch_file(path: Path, trust_pickle: bool) -> LoadedSource:
    names = _zip_names(path)
    if any(n.endswith("constants.pkl") for n in names) and any("/code/" in n for n in names):
        try:
            net = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise EdgeportError(
                f"{path} looks like TorchScript but does not load ({type(exc).__name__})",
                "re-save it with torch.jit.save",
            ) from exc
        return _torchscript_source(path, net.eval())
    if not names and path.stat().st_size == 0:
        raise EdgeportError(f"{path} is empty", "give a saved model file")
    _refuse_weights_only(path)
    if not trust_pickle:
        raise EdgeportError(
            f"{path} is a pickled PyTorch file: loading it runs arbitrary code stored in the file",
            "export TorchScript (torch.jit.save) or torch.export (.pt2), give the code as file.py:callable "
            "with --weights, or pass --trust-pickle if you trust where it came from",
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise EdgeportError(
            f"{path} refers to Python module {exc.name!r}, which is not importable here",
            "run edgeport where that module's code is importable (PYTHONPATH), or use file.py:callable "
            "with --weights",
        ) from exc
    except Exception as exc:
        raise EdgeportError(
            f"{path} could not be loaded ({type(exc).__name__}: {exc})", "check the file"
        ) from exc
    if not isinstance(obj, torch.nn.Module):
        raise EdgeportError(
            f"{path} holds a {type(obj).__name__}, not a model",
            "for a state_dict, give the model code as file.py:callable with --weights",
        )
    return LoadedSource(kind="pickle", path=path, module=obj.eval(), forward_arg_names=_forward_args(obj))


def _torchscript_source(path: Path, net: Any) -> LoadedSource:
    """A TorchScript module; one whose forward() sets its own attributes is called fresh each time."""
    attributes = attributes_set(net)
    if not attributes:
        return LoadedSource(kind="torchscript", path=path, module=net)
    warning = (
        f"{path.name}: forward() updates the module's own {_first(attributes, 4)}, so it keeps state "
        "between calls; the converted model computes every call from the state as loaded (the first "
        "call's result), not a stream of calls. To carry the state across calls, convert a model that "
        "takes the state as an input and returns the new state"
    )
    return LoadedSource(
        kind="torchscript", path=path, module=FreshStateModule(net, attributes), warnings=[warning]
    )


def _nodes(block: Any) -> Any:
    for node in block.nodes():
        yield node
        for inner in node.blocks():
            yield from _nodes(inner)


def attributes_set(net: Any) -> list[str]:
    """The attributes a ScriptModule's forward() assigns (prim::SetAttr, in called methods and
    submodules too), sorted; [] for a module that is not TorchScript."""
    try:
        graph = net.inlined_graph
    except (AttributeError, RuntimeError):
        return []
    return sorted({node.s("name") for node in _nodes(graph) if node.kind() == "prim::SetAttr"})


class FreshStateModule(torch.nn.Module):
    """A module that keeps state between calls, run as a fresh copy of the module as loaded each time.

    The ONNX export freezes the state the module holds when it is exported; called fresh, the
    reference computes the same thing on every verification input instead of a stream of calls.
    """

    def __init__(self, module: Any, attributes: list[str]) -> None:
        super().__init__()
        self.module = module
        self.attributes = list(attributes)

    def fresh(self) -> Any:
        """A copy of the module in its loaded state: what the exporter is given."""
        return copy.deepcopy(self.module)

    def forward(self, *args: Any) -> Any:
        return self.fresh()(*args)


def _refuse_weights_only(path: Path) -> None:
    """A state_dict or checkpoint given as SOURCE (a common mix-up) says so, instead of asking for
    --trust-pickle: it loads safely, and holds weights but no model code."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - not a weights-only file: the pickle rules below apply
        return
    if _tensor_dicts(checkpoint) or isinstance(checkpoint, torch.Tensor):
        raise EdgeportError(
            f"{path} holds weights (a state_dict or checkpoint), not a model",
            f"give the model's code as SOURCE, file.py:callable, with --weights {path}",
        )


class ExportedModule(torch.nn.Module):
    """Wraps ExportedProgram.module() for the TorchScript-based ONNX exporter.

    The exporter switches the model to eval mode with .train(False), which an exported graph module
    refuses; an exported program is already frozen in the mode it was exported in.
    """

    def __init__(self, graph_module: torch.nn.Module) -> None:
        super().__init__()
        self.graph_module = graph_module

    def train(self, mode: bool = True) -> ExportedModule:
        return self

    def forward(self, *args: Any) -> Any:
        return self.graph_module(*args)


def _load_exported_program(path: Path) -> LoadedSource:
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise EdgeportError(
            f"{path} is not a torch.export program ({type(exc).__name__})",
            "save it with torch.export.save(torch.export.export(model, args), path)",
        ) from exc
    args = program.example_inputs[0] if program.example_inputs else ()
    shapes = [list(a.shape) for a in args if hasattr(a, "shape")]
    return LoadedSource(
        kind="exported_program", path=path, module=ExportedModule(program.module()), example_shapes=shapes
    )
