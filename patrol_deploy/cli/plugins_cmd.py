"""`patrol-deploy plugins`: what each plugin group holds, where it came from, and what failed to load."""

from __future__ import annotations

import importlib
from typing import Any

import click

from patrol_deploy.cli.options import emit, json_option
from patrol_deploy.errors import PatrolError

# entry-point group -> "module:registry" holding the built-ins and loading the plugins of that group.
GROUPS = {
    "patrol_deploy.attacks": "patrol_deploy.attacks.registry:ATTACKS",
    "patrol_deploy.defenses": "patrol_deploy.defenses.registry:DEFENSES",
    "patrol_deploy.importances": "patrol_deploy.patrol.importance:IMPORTANCES",
    "patrol_deploy.trackers": "patrol_deploy.tracking:TRACKERS",
    "patrol_deploy.backends": "patrol_deploy.engine.profile:PROFILE_BACKENDS",
    "patrol_deploy.models": "patrol_deploy.models:MODELS",
    "patrol_deploy.datasets": "patrol_deploy.data.sources:SOURCES",
}


def list_plugins() -> dict[str, Any]:
    """Per group: the installed components with their origin, and the plugins that failed to load with the error."""
    groups: dict[str, Any] = {}
    for group, target in GROUPS.items():
        module, attr = target.split(":")
        try:
            registry = getattr(importlib.import_module(module), attr)
        except PatrolError as exc:  # e.g. torch is not installed on this device: say so, list the rest
            groups[group] = {"kind": None, "installed": [], "unavailable": [], "error": str(exc)}
            continue
        groups[group] = {
            "kind": registry.kind,
            "installed": [{"name": n, "origin": registry.origin(n)} for n in registry.names()],
            "unavailable": [{"name": n, "error": e} for n, e in sorted(registry.unavailable().items())],
        }
    return {"groups": groups}


def plugins_text(result: dict[str, Any]) -> str:
    lines = []
    for group, info in result["groups"].items():
        lines.append(f"{group}" + (f" ({info['kind']})" if info["kind"] else ""))
        if info.get("error"):
            lines.append(f"  not loaded: {info['error']}")
        width = max((len(p["name"]) for p in info["installed"] + info["unavailable"]), default=0)
        lines += [f"  {p['name']:<{width}}  {p['origin']}" for p in info["installed"]]
        lines += [f"  {p['name']:<{width}}  UNAVAILABLE: {p['error']}" for p in info["unavailable"]]
        if not (info["installed"] or info["unavailable"] or info.get("error")):
            lines.append("  (none installed)")
    return "\n".join(lines)


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """List attacks, defenses, trackers, backends, models and datasets: built-in or from which package, and the
    plugins that failed to load (skipped, with their error)."""
    emit(list_plugins(), as_json, plugins_text)
