"""One command at a time per run folder: an OS file lock (`filelock`), held until the command ends.

`check_run_folder` takes the lock before it reads the manifest. A second command on a busy folder is refused
at once (exit 2) with the holder's pid, host, command and start time, which the holder writes into a side file
beside the lock. The lock is the kernel's (flock): a holder that dies, even by SIGKILL, releases it, so a lock
is never stale. Released, the lock and side file are deleted (and a run folder made only to hold them is removed
again), so a command that fails before its first stage leaves the folder as it was.

Within one process the lock is re-entrant: the stages of one command (and the Python API's calls) share it.
Under `torchrun` only rank 0 takes it, for the whole job.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shlex
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patrol_deploy.errors import PatrolError

LOCK_FILE = ".patrol-deploy.lock"
HOLDER_FILE = ".patrol-deploy.lock.json"  # pid, host, command and start time of the holder


@dataclass
class _Hold:
    lock: Any  # filelock.FileLock
    made: list[Path] = field(default_factory=list)  # folders created to hold the lock, deepest first


_HELD: dict[Path, _Hold] = {}
_GUARD = threading.Lock()


class RunFolderBusy(PatrolError):
    """Another command holds the run folder's lock."""


def lock_run_folder(root: str | Path) -> None:
    """Hold `root`'s lock until `release_run_folders` (or process exit); RunFolderBusy at once if another holds it."""
    if os.environ.get("RANK", "0") not in ("", "0"):  # torchrun: rank 0 holds the folder for the whole job
        return
    from filelock import FileLock, Timeout

    key = Path(root).resolve()
    with _GUARD:
        if key in _HELD:
            return
        made = _make_folders(key)
        lock = FileLock(str(key / LOCK_FILE), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            _remove_empty(made)
            raise RunFolderBusy(f"run folder '{root}' is in use by another command: {_holder(key)}.",
                                "wait for that command to finish (or stop it), or write to another --out") from None
        except OSError as exc:
            _remove_empty(made)
            raise PatrolError(f"cannot lock run folder '{root}': {exc}.",
                              "check that the folder is writable, or write to another --out") from exc
        _HELD[key] = _Hold(lock, made)
        if len(_HELD) == 1:
            atexit.register(release_run_folders)
    _write_holder(key)


def release_run_folders(keep: tuple[Path, ...] = ()) -> None:
    """Release every run-folder lock this process holds (except `keep`), deleting the lock and side files."""
    with _GUARD:
        for key in [k for k in _HELD if k not in keep]:
            hold = _HELD.pop(key)
            # Unlinked while still held: a process that opened the old file sees it deleted once it gets the
            # lock and retries on a fresh file, so two holders can never coexist.
            for name in (HOLDER_FILE, LOCK_FILE):
                with contextlib.suppress(OSError):
                    (key / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                hold.lock.release(force=True)
            _remove_empty(hold.made)


@contextlib.contextmanager
def holding_run_folders() -> Iterator[None]:
    """Release, at the end of the block, the run-folder locks taken inside it (a command, an API call)."""
    before = tuple(_HELD)
    try:
        yield
    finally:
        release_run_folders(keep=before)


def held_run_folders() -> list[Path]:
    """The run folders whose lock this process holds."""
    return list(_HELD)


def _make_folders(key: Path) -> list[Path]:
    """Create `key` and its missing parents; return those created, deepest first."""
    missing = []
    p = key
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    key.mkdir(parents=True, exist_ok=True)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first; stops at the first that holds something
        try:
            folder.rmdir()
        except OSError:
            return


def _write_holder(key: Path) -> None:
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else ""
    info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command,
            "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    with contextlib.suppress(OSError):  # only informative: the lock itself is what excludes
        (key / HOLDER_FILE).write_text(json.dumps(info) + "\n", encoding="utf-8")


def _holder(key: Path) -> str:
    """Who holds the lock, from its side file."""
    try:
        info = json.loads((key / HOLDER_FILE).read_text(encoding="utf-8"))
        return (f"pid {info['pid']} on {info['host']}, started {info['since']}: "
                f"`{str(info['command'])[:200]}`")
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not recorded itself yet (it has just started)"
