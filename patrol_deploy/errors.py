"""Errors a user can act on, each carrying the exit code the CLI returns.

Exit codes are part of the public contract (see README and docs/cli.md): 0
success, 1 privacy gate failed, 2 bad input, config or resources (disk full, out
of memory), 3 missing optional dependency or hardware, 4 internal error (a bug:
any other exception, with a crash log), 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM).
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING = 3
EXIT_INTERNAL = 4  # an unexpected exception: a bug, never to be read as "gate failed"
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class PatrolError(Exception):
    """A problem the user can fix: `problem` says what is wrong, `fix` what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix

    def __str__(self) -> str:
        return self.problem if not self.fix else f"{self.problem} Fix: {self.fix}"


class ConfigError(PatrolError):
    """The YAML config or a --set override is malformed or invalid."""


class DataError(PatrolError):
    """A dataset folder, file or image cannot be used."""


class ModelError(PatrolError):
    """A model, checkpoint, split point or layer cannot be used as asked."""


class BudgetError(PatrolError):
    """No split point (pruned or not) fits the edge budget."""


class TrainingError(PatrolError):
    """Training diverged (NaN/Inf) or cannot start."""


class ResourceError(PatrolError):
    """The machine ran out of something the user can free or size down: disk space, memory."""


_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "file write failed")
_LOW_SPACE = 1 << 20  # bytes: below this, a failed write is taken for a full disk


def resource_error(exc: BaseException, where: str | Path | None = None) -> ResourceError | None:
    """The ResourceError an exception stands for (disk full, out of memory), or None.

    Looks through the exception's chain: torch.save reports a full disk as a RuntimeError ("file write failed")
    whose errno is lost, so a write error with less than 1 MiB left on `where`'s filesystem also counts.
    """
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch's CUDA OOM
            device = "GPU" if type(e).__name__ == "OutOfMemoryError" else "host"
            return ResourceError(f"out of {device} memory ({type(e).__name__}: {_first_line(e) or 'no detail'}).",
                                 "lower data.image_size, data.limit, train.batch_size or attacks.eval_images, or "
                                 "run on a machine with more memory; finished stages are kept")
        text = str(e).lower()
        full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or any(
            t in text for t in _DISK_FULL_TEXT)
        if full or (where is not None and isinstance(e, OSError | RuntimeError) and _free_bytes(where) < _LOW_SPACE):
            target = f" writing '{where}'" if where is not None else ""
            free = _free_bytes(where) if where is not None else None
            left = f" ({free:,} bytes left on its filesystem)" if free is not None and free >= 0 else ""
            return ResourceError(f"disk full{target}{left}: {type(e).__name__}: {_first_line(e)}.",
                                 "free space there (or write to another --out) and run the command again; "
                                 "finished stages are kept and nothing half-written was recorded")
        e = e.__cause__ or e.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def _free_bytes(where: str | Path) -> int:
    """Bytes available to this user on the filesystem of `where` (or its nearest existing parent); -1 if unknown."""
    p = Path(where)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free
    except OSError:
        return -1


class MissingDependency(PatrolError):
    """An optional package is not installed."""

    exit_code = EXIT_MISSING


class HardwareError(PatrolError):
    """The hardware (CUDA device, DLA core, TensorRT runtime) is absent or unsuitable."""

    exit_code = EXIT_MISSING


class GateFailed(PatrolError):
    """The privacy/utility gate did not pass."""

    exit_code = EXIT_GATE_FAILED


class UtilityNotKept(GateFailed):
    """PATROL's search found no candidate within patrol.max_utility_drop (a verdict on the method, exit 1)."""
