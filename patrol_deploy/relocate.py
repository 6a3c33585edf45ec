"""Pointing what a run folder recorded at the data on this machine: `--data-root DIR` and `--set KEY=VALUE`.

Model folders (model.json), ONNX sidecars and report.json record the data config a model was made from, with
`data.root` as it was resolved when the config was loaded (against the config file's folder). The commands that
rebuild data from such a record (export, quantize, verify, gate) take a `DataLocation`, which changes where
the data is read from, and may change other keys, without changing what the run folder says the model was made
from: the identity checks keep comparing the recorded config, so a run folder copied to another machine (or
with its data moved) keeps working.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patrol_deploy.config import apply_override
from patrol_deploy.errors import ConfigError, DataError
from patrol_deploy.progress import status

FOLDER_SOURCES = ("imagefolder", "fashion_mnist", "veri")  # the data sources that read data.root


@dataclass(frozen=True)
class DataLocation:
    """`--data-root` (where the dataset folder is on this machine) and `--set` overrides of the recorded config."""

    root: Path | None = None
    overrides: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return self.root is not None or bool(self.overrides)

    def apply(self, tree: dict[str, Any], sections: tuple[str, ...] | None = None) -> dict[str, Any]:
        """A copy of the config tree with the overrides applied, then `data.root` set to `root` (made absolute).

        `sections` limits which top-level sections `--set` may change (None: any); a key outside them is a
        ConfigError that names the flags to use instead.
        """
        out = copy.deepcopy(tree)
        for assignment in self.overrides:
            section = assignment.split("=", 1)[0].strip().split(".")[0]
            if sections is not None and section not in sections:
                raise ConfigError(f"--set {assignment}: this command takes only {', '.join(sections)} keys "
                                  "(it rebuilds the data the model was made from).",
                                  "use the command's own options for its other settings")
            apply_override(out, assignment)
        if self.root is not None:
            data = out.setdefault("data", {})
            if not isinstance(data, dict):
                raise ConfigError("--data-root: the recorded config has no data section.",
                                  "pass the data with --set data.source=... --set data.root=...")
            if data.get("source", "mnist") not in FOLDER_SOURCES:
                status(f"note: --data-root is ignored: data.source '{data.get('source', 'mnist')}' reads no folder")
            data["root"] = str(Path(self.root).expanduser().resolve())
        return out

    def data(self, data: dict[str, Any]) -> dict[str, Any]:
        """A recorded `data` section, relocated (only `data.*` keys may be overridden) and checked to be here."""
        moved = dict(self.apply({"data": data}, sections=("data",))["data"])
        check_data_root(moved)
        return moved

    def changes(self, data: dict[str, Any]) -> dict[str, Any]:
        """The data keys the overrides change, besides the folder's location (those change what is computed)."""
        moved = self.apply({"data": data}, sections=("data",))["data"]
        return {k: moved.get(k) for k in sorted(set(moved) | set(data))
                if k != "root" and moved.get(k) != data.get(k)}


def check_data_root(data: dict[str, Any]) -> None:
    """A dataset folder the data config names must exist here; when it does not, say how to point at it."""
    root = data.get("root")
    if data.get("source", "mnist") in FOLDER_SOURCES and root and not Path(root).is_dir():
        raise DataError(f"the dataset folder '{root}' (data.root, as recorded when the model was made) is not on this "
                        "machine.", "pass --data-root DIR with the dataset folder's path here (or --set "
                        "data.root=DIR; in Python, data_root=DIR)")
