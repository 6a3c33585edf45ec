"""One run folder per job: atomic writes and a manifest of what each stage produced.

Stages write only through `atomic_path` / `RunFolder.write_*` and then call
`RunFolder.record`, so an interrupted stage never leaves a half-written file
and `manifest.json` always describes files that are complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from patrol_deploy import __version__
from patrol_deploy.errors import PatrolError

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
_TRACKED_PACKAGES = ("torch", "torchvision", "torch-pruning", "nvidia-modelopt", "onnx", "onnxruntime-gpu",
                     "onnxruntime", "tensorrt", "numpy")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by a stage; a clear error if it is missing or corrupt."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PatrolError(f"cannot read '{path}': {exc}.", "re-run the stage that writes it") from exc


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Stable hash of a JSON-able config (decides whether a stage must be redone)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what an artifact is (without importing them)."""
    found = {"patrol-deploy": __version__, "python": platform.python_version()}
    for name in _TRACKED_PACKAGES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


class RunFolder:
    """A run folder and its manifest: `stages` maps stage name to what it produced."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"manifest_version": MANIFEST_VERSION, "stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PatrolError(f"{self.manifest_path} is not valid JSON: {exc}.",
                              "delete the run folder or pass a fresh --out") from exc
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise PatrolError(f"{self.manifest_path} is not a patrol-deploy manifest.",
                              "pass a run folder written by patrol-deploy, or a fresh --out")
        return data

    def stage(self, name: str) -> dict[str, Any] | None:
        entry = self.manifest()["stages"].get(name)
        return entry if isinstance(entry, dict) else None

    def record(self, stage: str, files: list[Path], config: dict[str, Any] | None = None,
               seed: int | None = None, started: float | None = None, **extra: Any) -> dict[str, Any]:
        """Record a finished stage: its files (hash, size), config, versions, seed and times."""
        manifest = self.manifest()
        entry = {
            "files": {
                str(Path(f).resolve().relative_to(self.root.resolve())): {
                    "sha256": sha256(f), "bytes": Path(f).stat().st_size}
                for f in files
            },
            "config": config or {},
            "config_hash": config_hash(config or {}),
            "versions": package_versions(),
            "seed": seed,
            "started": started,
            "ended": time.time(),
            **extra,
        }
        manifest["stages"][stage] = entry
        write_json(self.manifest_path, manifest)
        return entry

    def is_current(self, stage: str, config: dict[str, Any]) -> bool:
        """True if `stage` finished with this exact config and its files are intact (so it can be skipped)."""
        entry = self.stage(stage)
        return (entry is not None and entry.get("config_hash") == config_hash(config)
                and not self.changed_files(stage))

    def changed_files(self, stage: str) -> list[str]:
        """Files recorded for `stage` that are missing or whose hash no longer matches."""
        entry = self.stage(stage)
        if entry is None:
            return []
        bad = []
        for rel, info in entry.get("files", {}).items():
            f = self.root / rel
            if not f.exists() or sha256(f) != info.get("sha256"):
                bad.append(rel)
        return bad
