"""Plugins through entry points: real (installed-on-sys.path) distributions, built-ins declared the same way,
duplicates refused, and a plugin that raises on import reported by name and skipped, never crashing a run."""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from patrol_deploy.cli.plugins_cmd import GROUPS, list_plugins, plugins_text
from patrol_deploy.config import DEFAULT_CONFIG
from patrol_deploy.errors import ConfigError
from patrol_deploy.registry import BUILT_IN, Registry

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GROUP = "patrol_deploy_tests.things"  # a group of its own, so the real registries are not involved
HOST: dict[str, Registry[Any]] = {}  # the registry that self-registering test plugins import


def fake_distribution(site: Path, name: str, entry_points: dict[str, dict[str, str]], modules: dict[str, str],
                      monkeypatch: pytest.MonkeyPatch | None = None) -> Path:
    """An installed distribution as importlib.metadata sees it: NAME.dist-info (METADATA, entry_points.txt)
    and its modules in `site`, which is put on sys.path (when `monkeypatch` is given)."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = [line for group, eps in entry_points.items()
             for line in [f"[{group}]", *(f"{key} = {value}" for key, value in eps.items())]]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(source, encoding="utf-8")
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(site))
    return site


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> Registry[Any]:
    """A fresh registry on GROUP with one built-in, `whitebox`; test modules get unique names per test."""
    reg: Registry[Any] = Registry("thing", GROUP)
    reg.add("whitebox", builtin_whitebox)
    HOST["current"] = reg
    return reg


def builtin_whitebox() -> str:
    return "built-in"


def unique(prefix: str, request: pytest.FixtureRequest) -> str:
    return f"{prefix}_{request.node.name}".replace("[", "_").replace("]", "").replace("-", "_")


def test_third_party_plugin_is_registered_with_its_distribution(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[Any],
        request: pytest.FixtureRequest) -> None:
    mod = unique("acme", request)
    fake_distribution(tmp_path, "acme-attacks", {GROUP: {"acme": f"{mod}:thing"}},
                      {mod: "def thing():\n    return 'acme'\n"}, monkeypatch)
    assert registry.names() == ["acme", "whitebox"]
    assert registry.get("acme")() == "acme"
    assert registry.origin("acme") == "acme-attacks" and registry.origin("whitebox") == BUILT_IN
    assert registry.unavailable() == {}


def test_plugin_that_registers_itself_on_import_is_no_duplicate(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[Any],
        request: pytest.FixtureRequest) -> None:
    mod = unique("selfreg", request)
    source = ("from tests.test_registry import HOST\n"
              "REG = HOST['current']\n"
              "@REG.register('by_module')\n"
              "def by_module():\n    return 1\n"
              "@REG.register('by_object')\n"
              "def by_object():\n    return 2\n")
    fake_distribution(tmp_path, "selfreg-plugin", {GROUP: {"by_module": mod, "by_object": f"{mod}:by_object"}},
                      {mod: source}, monkeypatch)
    assert registry.names() == ["by_module", "by_object", "whitebox"]
    assert registry.unavailable() == {}
    assert registry.origin("by_module") == registry.origin("by_object") == "selfreg-plugin"
    assert registry.get("by_object")() == 2


def test_a_real_duplicate_is_refused_and_the_built_in_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[Any],
        request: pytest.FixtureRequest) -> None:
    mod, deco, idle = unique("dup", request), unique("dupdeco", request), unique("idle", request)
    fake_distribution(tmp_path, "shadow-plugin",
                      {GROUP: {"whitebox": f"{mod}:other", "sneaky": deco, "idle": idle}},
                      {mod: "def other():\n    return 'impostor'\n",
                       deco: ("from tests.test_registry import HOST\n"
                              "@HOST['current'].register('whitebox')\n"
                              "def other():\n    return 'impostor'\n"),
                       idle: "X = 1\n"}, monkeypatch)
    assert registry.get("whitebox") is builtin_whitebox and registry.origin("whitebox") == BUILT_IN
    unavailable = registry.unavailable()
    assert "registered twice (built-in and shadow-plugin)" in unavailable["whitebox"]
    assert "registered twice (built-in and module" in unavailable["sneaky"]
    assert f"module {idle} does not register thing 'idle'" in unavailable["idle"]
    assert registry.names() == ["whitebox"]


def test_a_plugin_that_raises_on_import_is_reported_by_name_and_skipped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: Registry[Any],
        request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> None:
    broken, fine = unique("broken", request), unique("fine", request)
    fake_distribution(tmp_path, "mixed-plugins", {GROUP: {"broken": broken, "fine": f"{fine}:thing"}},
                      {broken: "import not_installed_anywhere_xyz\n", fine: "def thing():\n    return 'ok'\n"},
                      monkeypatch)
    assert registry.names() == ["fine", "whitebox"]  # the good plugin of the same distribution still loads
    error = registry.unavailable()["broken"]
    assert "ModuleNotFoundError" in error and "not_installed_anywhere_xyz" in error and "mixed-plugins" in error
    with pytest.raises(ConfigError, match="thing 'broken' is installed but failed to load") as info:
        registry.get("broken")
    assert "fix or uninstall that plugin" in (info.value.fix or "")
    assert "thing plugin 'broken' from mixed-plugins failed to load and is skipped" in capsys.readouterr().err


def _declared() -> dict[str, dict[str, str]]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    section = parser["options.entry_points"]
    return {group: dict(line.split(" = ") for line in section[group].strip().splitlines()) for group in GROUPS
            if group in section}


def test_built_ins_are_declared_as_entry_points_exactly() -> None:
    declared = _declared()
    assert set(declared) == set(GROUPS) - {"patrol_deploy.trackers"}  # no built-in tracker: MLflow is a plugin
    for group, target in GROUPS.items():
        module, attr = target.split(":")
        reg = getattr(__import__(module, fromlist=[attr]), attr)
        for name, value in declared.get(group, {}).items():
            obj = metadata.EntryPoint(name, value, group).load()
            assert name in reg, f"{group}: {name} = {value} does not register '{name}'"
            assert isinstance(obj, ModuleType) or reg.get(name) is obj, f"{group}: {name} = {value}"
        built_ins = {n for n in reg.names() if reg.origin(n) == BUILT_IN}
        assert built_ins == set(declared.get(group, {})), group


def test_cli_lists_plugins_and_survives_broken_ones(tmp_path: Path) -> None:
    site = fake_distribution(tmp_path / "site", "broken-plugins", {
        "patrol_deploy.attacks": {"exploding": "exploding_attack_mod"},
        "patrol_deploy.models": {"exploding_net": "exploding_model_mod:build"},
    }, {"exploding_attack_mod": "raise RuntimeError('boom at import')\n",
        "exploding_model_mod": "raise ImportError('needs timm')\n"})
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([str(BIN / "patrol-deploy"), "plugins", "--json"], capture_output=True, text=True,
                            env=env, timeout=300)
    assert listed.returncode == 0, listed.stderr
    groups = json.loads(listed.stdout)["groups"]
    assert set(groups) == set(GROUPS)
    attacks = groups["patrol_deploy.attacks"]
    assert {"name": "whitebox", "origin": BUILT_IN} in attacks["installed"]
    (bad,) = attacks["unavailable"]
    assert bad["name"] == "exploding" and "RuntimeError: boom at import" in bad["error"]
    assert "broken-plugins" in bad["error"]
    assert groups["patrol_deploy.models"]["unavailable"][0]["name"] == "exploding_net"
    assert "exploding_net" not in [p["name"] for p in groups["patrol_deploy.models"]["installed"]]
    # a real command that uses the model and dataset registries runs to the end, naming the broken plugin
    used = subprocess.run([str(BIN / "patrol-deploy"), "splits", str(DEFAULT_CONFIG), "--set", "data.source=digits",
                           "--set", "data.image_size=16"], capture_output=True, text=True, env=env, timeout=300)
    assert used.returncode == 0, used.stderr
    assert "model plugin 'exploding_net' from broken-plugins failed to load and is skipped" in used.stderr
    assert used.stderr.strip().endswith("PASSED | patrol-deploy splits") and "layer1" in used.stdout


def test_plugins_text_lists_origins_failures_and_empty_groups() -> None:
    listed = list_plugins()
    text = plugins_text(listed)
    assert "patrol_deploy.attacks (attack)" in text and re.search(r"^  whitebox +built-in$", text, flags=re.M)
    sample = {"groups": {"patrol_deploy.trackers": {"kind": "tracker", "installed": [], "unavailable": []},
                         "patrol_deploy.backends": {"kind": None, "installed": [], "unavailable": [],
                                                    "error": "Python package 'numpy' is not available."},
                         "patrol_deploy.attacks": {"kind": "attack",
                                                   "installed": [{"name": "acme", "origin": "acme-attacks"}],
                                                   "unavailable": [{"name": "boom", "error": "RuntimeError: x"}]}}}
    assert plugins_text(sample).splitlines() == [
        "patrol_deploy.trackers (tracker)", "  (none installed)",
        "patrol_deploy.backends", "  not loaded: Python package 'numpy' is not available.",
        "patrol_deploy.attacks (attack)", "  acme  acme-attacks", "  boom  UNAVAILABLE: RuntimeError: x"]
