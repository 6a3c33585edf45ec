"""One registry helper for everything pluggable (models, attacks, defenses, trackers, backends).

Built-ins are declared in the same entry-point groups as third-party plugins
(setup.cfg), so both arrive the same way; the attack and defense registries
sit in modules of their own (attacks/registry.py, defenses/registry.py) and
import no built-in. The `register` decorator and `add` are for code that
registers in-process (a notebook, a test) and for the modules that hold a
registry beside its built-ins (models, data sources, importances). Plugins
are loaded on first use; one that fails to import is listed as unavailable
(with the error) and skipped, instead of crashing the run.

An entry point names either the registered object (`pkg.module:obj`) or a
module that registers its name on import (`pkg.module`); when loading it
triggers the decorator registration of that same name, that is not a
duplicate. A second, different object under a taken name is still refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from importlib import metadata
from types import ModuleType
from typing import Generic, TypeVar

from patrol_deploy.errors import ConfigError
from patrol_deploy.progress import status

T = TypeVar("T")
BUILT_IN = "built-in"
_OWN_DISTRIBUTION = "patrol-deploy"


def entry_point_origin(ep: metadata.EntryPoint) -> str:
    """`built-in` for patrol-deploy's own entry points, else the name of the distribution that declares it."""
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else None
    if not name:
        return f"entry point {ep.value}"
    return BUILT_IN if re.sub(r"[-_.]+", "-", name).lower() == _OWN_DISTRIBUTION else name


class Registry(Generic[T]):
    """Named components of one kind; duplicates are refused."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._unavailable: dict[str, str] = {}
        self._plugins_loaded = False

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")`."""

        def deco(obj: T) -> T:
            module = getattr(obj, "__module__", None) or ""
            self.add(name, obj, BUILT_IN if module.split(".")[0] == "patrol_deploy" else f"module {module}")
            return obj

        return deco

    def add(self, name: str, obj: T, origin: str = BUILT_IN) -> None:
        """Register `obj` as `name`; a name that is taken is refused (ConfigError naming both origins)."""
        if name in self._items:
            raise ConfigError(
                f"{self.kind} '{name}' is registered twice ({self._origin[name]} and {origin}).",
                "give the plugin a different name",
            )
        self._items[name] = obj
        self._origin[name] = origin

    def _load_plugins(self) -> None:
        if self._plugins_loaded or not self.entry_point_group:
            return
        self._plugins_loaded = True
        for ep in metadata.entry_points(group=self.entry_point_group):
            origin = entry_point_origin(ep)
            if self._origin.get(ep.name) == origin:
                continue  # already registered by the package that declares it (a built-in imported earlier)
            try:
                self._load_entry_point(ep, origin)
            except Exception as exc:  # a broken plugin must not break the run
                self._unavailable[ep.name] = f"{type(exc).__name__}: {exc} (from {origin}, entry point {ep.value})"
                status(f"warning: {self.kind} plugin '{ep.name}' from {origin} failed to load and is skipped: "
                       f"{type(exc).__name__}: {exc}")

    def _load_entry_point(self, ep: metadata.EntryPoint, origin: str) -> None:
        """Import one entry point and register what it names (see the module docstring for the two forms)."""
        taken = ep.name in self._items
        obj = ep.load()
        if ep.name in self._items:
            # registered while loading this entry point, or earlier on import of the same module: not a duplicate
            ours = not taken or self._origin[ep.name] == f"module {ep.module}"
            if ours and (isinstance(obj, ModuleType) or self._items[ep.name] is obj):
                self._origin[ep.name] = origin
                return
        if isinstance(obj, ModuleType):
            raise ConfigError(
                f"module {ep.value} does not register {self.kind} '{ep.name}'"
                + (f" ('{ep.name}' is already {self._origin[ep.name]})" if taken else "") + ".",
                "point the entry point at the registered object (module:object)",
            )
        self.add(ep.name, obj, origin=origin)

    def get(self, name: str) -> T:
        """The component called `name`; unknown names list the valid ones."""
        self._load_plugins()
        if name in self._items:
            return self._items[name]
        if name in self._unavailable:
            raise ConfigError(
                f"{self.kind} '{name}' is installed but failed to load: {self._unavailable[name]}.",
                "fix or uninstall that plugin",
            )
        raise ConfigError(
            f"unknown {self.kind} '{name}'.", f"use one of: {', '.join(self.names())}"
        )

    def names(self) -> list[str]:
        """Registered names, plugins included, sorted."""
        self._load_plugins()
        return sorted(self._items)

    def origin(self, name: str) -> str:
        """`built-in`, or the distribution (or module) that registered `name`."""
        self._load_plugins()
        return self._origin[name]

    def unavailable(self) -> dict[str, str]:
        """Plugins that failed to load: name -> error."""
        self._load_plugins()
        return dict(self._unavailable)

    def __contains__(self, name: str) -> bool:
        self._load_plugins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
