"""One run folder per job: atomic writes and a manifest of what each stage produced.

Stages write only through `atomic_path` / `RunFolder.write_*` and then call
`RunFolder.record`, so an interrupted stage never leaves a half-written file
and `manifest.json` always describes files that are complete.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patrol_deploy import __version__
from patrol_deploy.errors import PatrolError, resource_error
from patrol_deploy.runlock import lock_run_folder

if TYPE_CHECKING:
    from patrol_deploy.config import Config

MANIFEST = "manifest.json"
CHECKPOINTS = "checkpoints"  # RUN/<stage>/checkpoints: resumable state of an unfinished stage
MANIFEST_VERSION = 1
_TRACKED_PACKAGES = ("torch", "torchvision", "torch-pruning", "nvidia-modelopt", "onnx", "onnxruntime-gpu",
                     "onnxruntime", "tensorrt", "numpy")
# The config keys that decide what the models in a run folder are; a run with other values must not mix with them.
IDENTITY_KEYS = ("seed", "data", "model")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file gets the mode an ordinary `open()` would give it (0o666 less the umask), not mkstemp's 0o600, so a
    service account in the same group can read the artifacts.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, final)
    except Exception as exc:  # a full disk says so in one line, whichever writer (torch, onnx, numpy) hit it
        full = None if isinstance(exc, PatrolError) else resource_error(exc, final)
        if full is not None:
            raise full from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process umask, read without changing it where Linux reports it (os.umask can only set-and-return)."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        status = Path("/proc/self/status").read_text(encoding="ascii").splitlines()
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_npz(path: str | Path, arrays: dict[str, Any], compressed: bool = True) -> Path:
    """Write named numpy arrays to an .npz atomically (a file object, so numpy adds no ".npz" to the temp name)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        (np.savez_compressed if compressed else np.savez)(fh, **arrays)
    return Path(path)


def read_marked_json(path: str | Path, marker: str, error: type[PatrolError], what: str,
                     fix: str) -> dict[str, Any]:
    """The JSON object in `path` whose `format` is `marker` (a file patrol-deploy wrote); `error`, naming the file,
    what it should be and `fix`, when it is unreadable or another kind of file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise error(f"{path} is corrupt: {exc}.", fix) from exc
    if not isinstance(data, dict) or data.get("format") != marker:
        raise error(f"{path} is not {what}.", fix)
    return data


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by a stage; a clear error if it is missing or corrupt."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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
    """A run folder and its manifest: `stages` maps stage name to what it produced.

    `check_run_folder` claims the folder in memory (`claim`); the first `record` writes the claim, so a
    command that fails before finishing any stage leaves the folder as it was.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._claim: dict[str, Any] | None = None  # the manifest's `run` entry, until the first record writes it
        self._forget = False  # whether the claim also forgets the stages on disk

    def claim(self, entry: dict[str, Any], forget: bool) -> None:
        """Claim the folder for the run `entry` describes; with `forget`, as if it held no stage (or no manifest)."""
        self._claim, self._forget = entry, forget

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    def manifest(self) -> dict[str, Any]:
        """The manifest on disk, with the claim (if any) applied."""
        data = self._read_manifest() if not self._forget else {"manifest_version": MANIFEST_VERSION, "stages": {}}
        if self._claim is not None:
            data["run"] = copy.deepcopy(self._claim)
        return data

    def _read_manifest(self) -> dict[str, Any]:
        if not self.manifest_path.exists():
            return {"manifest_version": MANIFEST_VERSION, "stages": {}}
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
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
        self._claim, self._forget = None, False
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


def remove_checkpoints(root: str | Path) -> None:
    """Delete every stage's `checkpoints/` folder: resumable state of work that is about to be redone."""
    for folder, dirs, _ in os.walk(root):  # symlinked folders are not followed
        if CHECKPOINTS in dirs:
            shutil.rmtree(Path(folder) / CHECKPOINTS, ignore_errors=True)
            dirs.remove(CHECKPOINTS)


def remove_stale_temps(root: str | Path) -> list[Path]:
    """Delete the `.<name>.<random>.tmp` files that `atomic_path` leaves behind when its process is killed."""
    removed = []
    for folder, _, files in os.walk(root):  # symlinked folders are not followed
        for name in files:
            f = Path(folder) / name
            if name.startswith(".") and name.endswith(".tmp") and not f.is_symlink():
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def run_identity(cfg: Config, checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """What the models of a run are made from: seed, data and model sections, and the checkpoint's SHA-256."""
    return model_identity(cfg.seed, cfg.data.model_dump(mode="json"), cfg.model.model_dump(mode="json"),
                          checkpoint_sha256)


def model_identity(seed: Any, data: Any, model: Any, checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """`run_identity` from the seed, data and model sections as JSON (as a model folder's model.json keeps them)."""
    checkpoint = model.get("checkpoint") if isinstance(model, dict) else None
    if checkpoint_sha256 is None and isinstance(checkpoint, str) and Path(checkpoint).is_file():
        checkpoint_sha256 = sha256(checkpoint)
    return {"seed": seed, "data": data, "model": model, "checkpoint_sha256": checkpoint_sha256}


def check_run_folder(run: RunFolder, identity: dict[str, Any], force: bool = False) -> list[str]:
    """Refuse a run folder from another config or patrol-deploy version, or one whose files changed; then claim it.

    "Another config" is another `run_identity` (seed, data, model, checkpoint): its models must not mix with this
    run's. Other settings (attacks, defenses, ...) may change; `is_current` redoes the stages they affect. With
    `force`, a folder from another config or version forgets its stages (every stage is redone) and changed
    files are redone by their stages. The claim is written with the first stage `run` records (see RunFolder).
    Returns what `force` overrode (empty when nothing was wrong). First takes the folder's lock (`runlock`),
    held until the command ends: a folder another command is using is refused at once.
    """
    lock_run_folder(run.root)
    try:
        manifest = run.manifest()
        unreadable = False
    except PatrolError:
        if not force:
            raise
        manifest, unreadable = {"manifest_version": MANIFEST_VERSION, "stages": {}}, True
    foreign = _foreign_reasons(manifest, identity)
    changed = {rel: stage for stage in manifest["stages"] for rel in run.changed_files(stage) if run.path(rel).exists()}
    problems = foreign + [f"'{rel}' changed after stage '{stage}' recorded it (SHA-256 mismatch)"
                          for rel, stage in changed.items()]
    if problems and not force:
        raise PatrolError(f"run folder '{run.root}' cannot be reused: {'; '.join(problems)}.",
                          "choose a fresh run folder, or pass --force (force=True in Python) to redo the affected "
                          "stages in this one")
    remove_stale_temps(run.root)  # we own the folder now: temp files left by a killed run are garbage
    if problems or unreadable:  # forced: checkpoints may come from other inputs (e.g. a retrained model.checkpoint)
        remove_checkpoints(run.root)
    created = _run_entry(manifest).get("created", time.time()) if not foreign else time.time()
    # With `foreign`, nothing in the folder was made from this config and version: every stage is redone.
    run.claim({"identity": identity, "patrol_deploy": __version__, "created": created}, bool(foreign) or unreadable)
    return problems


def _run_entry(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's `run` record (identity and version of the run that claimed the folder), or {}."""
    entry = manifest.get("run")
    return entry if isinstance(entry, dict) else {}


def _foreign_reasons(manifest: dict[str, Any], identity: dict[str, Any]) -> list[str]:
    """Why the manifest's stages were not made by this patrol-deploy version and identity (empty if they were)."""
    stages = [s for s in manifest["stages"].values() if isinstance(s, dict)]
    recorded_run = _run_entry(manifest)
    written = {recorded_run.get("patrol_deploy")} | {s.get("versions", {}).get("patrol-deploy") for s in stages}
    reasons = []
    others = sorted(str(v) for v in written if v is not None and v != __version__)
    if others:
        reasons.append(f"it was written by patrol-deploy {', '.join(others)} (this is {__version__})")
    if isinstance(recorded_run.get("identity"), dict):
        recorded = [recorded_run["identity"]]
    else:  # a folder written by single stages (train, patrol, ...): their configs name seed, data and model
        recorded = [{k: s["config"][k] for k in IDENTITY_KEYS} for s in stages
                    if isinstance(s.get("config"), dict) and all(k in s["config"] for k in IDENTITY_KEYS)]
    for old in recorded:
        diffs = _differences(old, {k: identity.get(k) for k in old})
        if diffs:
            more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
            reasons.append(f"it holds models made from another config ({', '.join(diffs[:4])}{more})")
            break
    return reasons


def _differences(old: Any, new: Any, key: str = "") -> list[str]:
    """`key: old -> new` for every leaf that differs between two JSON-like trees."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{key}.{k}" if key else str(k))]
    if old == new:
        return []
    if key == "checkpoint_sha256":
        return ["the model checkpoint's content"]
    return [f"{key}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]

