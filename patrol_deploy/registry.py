"""One registry helper for everything pluggable (models, attacks, defenses, trackers, backends).

Built-ins register with the `register` decorator; third-party plugins arrive
through the entry-point group given to the registry, are loaded on first use,
and are listed as unavailable (with the error) when they fail to import,
instead of crashing the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from patrol_deploy.errors import ConfigError

T = TypeVar("T")


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
            self.add(name, obj)
            return obj

        return deco

    def add(self, name: str, obj: T, origin: str = "built-in") -> None:
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
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # a broken plugin must not break the run
                self._unavailable[ep.name] = f"{type(exc).__name__}: {exc}"
                continue
            try:
                self.add(ep.name, obj, origin=f"plugin {ep.value}")
            except ConfigError as exc:
                self._unavailable[ep.name] = str(exc)

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
        self._load_plugins()
        return sorted(self._items)

    def origin(self, name: str) -> str:
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
