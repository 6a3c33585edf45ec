"""Resumable state of a long stage: atomic torch files, valid only for the run that wrote them.

A checkpoint holds tensors and plain values only (read back with
`torch.load(weights_only=True)`), the key of the run that wrote it (the
stage's config hash: a checkpoint with another key, or from another
patrol-deploy version, is ignored) and the torch, CUDA, numpy and Python RNG
states, so that a resumed loop continues exactly where the interrupted one
stopped. A stage keeps its checkpoints in one folder (`Checkpoints`) and
deletes the folder once it has recorded its results.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from patrol_deploy import __version__
from patrol_deploy.errors import PatrolError
from patrol_deploy.progress import status
from patrol_deploy.runfolder import CHECKPOINTS, RunFolder, atomic_path, config_hash


class Stateful(Protocol):
    """A model, optimizer or scheduler: anything with a state dict."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> Any: ...


def rng_state() -> dict[str, Any]:
    """Every global RNG a training loop may draw from, as tensors and plain values."""
    import torch  # torch only where a checkpoint is written: the manifest side of a run (stages.py) needs none

    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": {"version": version, "state": list(internal), "gauss": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint file, written and read under `key`."""

    path: Path
    key: str

    def save(self, **state: Any) -> None:
        """Write `state` plus the key, the version and the RNG states atomically."""
        import torch

        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, "version": __version__, "rng": rng_state(), **state}, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved state if this run wrote it; None if absent, stale (another key or version) or unreadable."""
        if not self.path.is_file():
            return None
        import torch

        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt checkpoint is not fatal: its work is redone
            return None
        if not isinstance(state, dict) or state.get("key") != self.key or state.get("version") != __version__:
            return None
        return state

    def save_epoch(self, epoch: int, history: list[Any], parts: Mapping[str, Stateful]) -> None:
        """The state of a training loop after `epoch` (0-based): its parts' state dicts and the history so far."""
        self.save(epoch=epoch, history=history, **{name: part.state_dict() for name, part in parts.items()})

    @contextmanager
    def restoring(self) -> Iterator[None]:
        """Wrap the loading of a saved state into live objects: a state that does not fit them is a clear error."""
        try:
            yield
        except (RuntimeError, KeyError, TypeError, ValueError) as exc:
            raise PatrolError(f"checkpoint {self.path} does not fit this run ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}).",
                              f"delete {self.path.parent} and re-run (the stage starts again)") from exc

    def resume(self, parts: Mapping[str, Stateful], desc: str) -> tuple[int, list[Any]]:
        """Load a loop's saved state into `parts` and the RNGs; returns (first epoch to run, history so far)."""
        state = self.load()
        if state is None:
            return 0, []
        with self.restoring():
            for name, part in parts.items():
                part.load_state_dict(state[name])
            set_rng_state(state["rng"])
        start = int(state["epoch"]) + 1
        status(f"{desc}: resuming after epoch {start} from {self.path}")
        return start, list(state["history"])


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoint folder of one stage (or of one part of it); every file in it is written under `key`."""

    folder: Path
    key: str

    def file(self, name: str) -> Checkpoint:
        return Checkpoint(self.folder / f"{name}.pt", self.key)

    def sub(self, name: str) -> Checkpoints:
        return Checkpoints(self.folder / name, self.key)

    def clear(self) -> None:
        """Delete the folder: the stage has recorded its results, which supersede it."""
        shutil.rmtree(self.folder, ignore_errors=True)


def stage_checkpoints(run: RunFolder, stage: str, config: dict[str, Any]) -> Checkpoints:
    """RUN/<stage>/checkpoints, keyed by the stage's config hash (as `RunFolder.record` stores it)."""
    return Checkpoints(run.path(stage, CHECKPOINTS), config_hash(config))
