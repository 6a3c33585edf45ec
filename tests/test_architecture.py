"""The import-layer contract (setup.cfg's [importlinter], docs/architecture.md) holds, and covers every module."""

from __future__ import annotations

import configparser
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import patrol_deploy

ROOT = Path(__file__).resolve().parent.parent


def layered_modules() -> set[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    layers = cfg["importlinter:contract:layers"]["layers"].split()
    return {name for name in layers if name not in (":", "|")}


def test_every_module_of_the_package_is_in_a_layer() -> None:
    modules = {f"patrol_deploy.{m.name}" for m in pkgutil.iter_modules(patrol_deploy.__path__)}
    assert modules - layered_modules() == set(), "place the new module in a layer of setup.cfg's [importlinter]"


def test_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if lint is None:
        pytest.skip("import-linter is not installed (pip install -e .[dev])")
    done = subprocess.run([lint, "--config", "setup.cfg", "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout
