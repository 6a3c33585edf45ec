"""Untrusted files never reach pickle or eval: an AST scan of every package, calibration and plugin module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("patrol_deploy", "plugins")
UNSAFE_CALLS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "joblib.load", "marshal.loads", "yaml.unsafe_load",
                "yaml.full_load", "yaml.load_all"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "_NoAliasLoader"}  # _NoAliasLoader: config.py's SafeLoader


def _dotted(node: ast.expr) -> str:
    """'torch.load' for `torch.load`, 'eval' for `eval`, '' for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return f"{inner}.{node.attr}" if inner else ""
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_constant(node: ast.expr | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_calls(source: str, filename: str = "<string>") -> list[str]:
    """'file:line: what' for every unsafe load or eval in `source`."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(n and n.split(".")[0] in ("dill", "cloudpickle") for n in names):
                found.append(f"{filename}:{node.lineno}: imports dill/cloudpickle")
            if isinstance(node, ast.ImportFrom) and node.module in ("pickle", "joblib", "torch") and any(
                    a.name in ("load", "loads", "Unpickler") for a in node.names):
                found.append(f"{filename}:{node.lineno}: imports a loader by name from {node.module}")
            continue
        if not isinstance(node, ast.Call):
            continue
        name, where = _dotted(node.func), f"{filename}:{node.lineno}"
        last = name.rsplit(".", 1)[-1]
        if name == "torch.load" and not _is_constant(_keyword(node, "weights_only"), True):
            found.append(f"{where}: torch.load without weights_only=True")
        elif name in UNSAFE_CALLS or name.startswith(("dill.", "cloudpickle.")):
            found.append(f"{where}: {name}")
        elif name == "yaml.load":
            loader = _keyword(node, "Loader") or (node.args[1] if len(node.args) > 1 else None)
            if loader is None or _dotted(loader).rsplit(".", 1)[-1] not in SAFE_YAML_LOADERS:
                found.append(f"{where}: yaml.load with a non-safe loader")
        elif name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            found.append(f"{where}: {name}()")
        elif last == "load" and name.split(".")[0] in ("np", "numpy"):
            allow = _keyword(node, "allow_pickle")
            if allow is not None and not _is_constant(allow, False):
                found.append(f"{where}: {name} with allow_pickle")
    return found


def _files() -> list[Path]:
    return sorted(f for d in SCANNED for f in (ROOT / d).rglob("*.py") if ".venv" not in f.parts)


def test_scan_covers_the_package() -> None:
    files = _files()
    assert any(f.name == "config.py" for f in files) and any(f.name == "calibration.py" for f in files)


def test_no_unsafe_loads_in_package_code() -> None:
    found = [hit for f in _files() for hit in unsafe_calls(f.read_text(encoding="utf-8"), str(f.relative_to(ROOT)))]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "torch.load(p)", "torch.load(p, weights_only=False)", "torch.load(p, weights_only=flag)", "pickle.load(fh)",
    "pickle.loads(b)", "import dill", "dill.loads(b)", "joblib.load(p)", "from pickle import loads",
    "yaml.load(t)", "yaml.load(t, Loader=yaml.Loader)", "yaml.load(t, yaml.UnsafeLoader)", "yaml.full_load(t)",
    "yaml.unsafe_load(t)", "eval('1')", "exec(code)", "np.load(p, allow_pickle=True)", "numpy.load(p, allow_pickle=x)",
])
def test_scanner_flags_unsafe_code(snippet: str) -> None:
    assert unsafe_calls(snippet), snippet


@pytest.mark.parametrize("snippet", [
    "torch.load(p, map_location='cpu', weights_only=True)", "yaml.load(t, Loader=_NoAliasLoader)",
    "yaml.safe_load(t)", "yaml.load(t, Loader=yaml.CSafeLoader)", "np.load(p)", "np.load(p, allow_pickle=False)",
    "json.loads(s)", "model.eval()", "onnx.load(p)",
])
def test_scanner_allows_safe_code(snippet: str) -> None:
    assert not unsafe_calls(snippet), snippet
