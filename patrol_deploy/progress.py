"""Progress bars (tqdm) and narration that `--quiet` silences for pipelines, with the libraries' warnings."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET = {"value": os.environ.get("PATROL_QUIET", "") not in ("", "0")}
# Loggers of the libraries underneath; quiet lowers them to errors only.
LIBRARY_LOGGERS = ("torch", "torchvision", "torch_pruning", "PIL", "onnx", "onnxruntime", "onnxsim", "modelopt",
                   "matplotlib")


_SAVED: dict[str, Any] = {}  # what quiet changed: the warnings hook and the library loggers' levels


def set_quiet(quiet: bool) -> None:
    """Quiet (or not) for the rest of the process; quiet also silences the libraries' warnings and log messages,
    and leaving quiet restores them."""
    _QUIET["value"] = quiet
    if quiet:
        _silence_libraries()
    elif _SAVED:
        warnings.showwarning = _SAVED.pop("showwarning")
        for name, level in _SAVED.pop("levels").items():
            logging.getLogger(name).setLevel(level)


def is_quiet() -> bool:
    return _QUIET["value"]


@contextlib.contextmanager
def quiet_mode(quiet: bool = True) -> Iterator[None]:
    """Quiet for the duration of a block (the Python API's `quiet=True`); the previous state is restored after."""
    if not quiet:
        yield
        return
    previous = _QUIET["value"]
    try:
        set_quiet(True)
        yield
    finally:
        set_quiet(previous)


def _silence_libraries() -> None:
    """Drop warnings of the libraries' categories (torch, PIL, ONNX, ModelOpt, ... use the built-in ones) and lower
    their loggers to errors; warnings of patrol-deploy's own categories (e.g. SimplifyWarning) still reach stderr."""
    if _SAVED:  # already quiet
        return
    _SAVED["levels"] = {name: logging.getLogger(name).level for name in LIBRARY_LOGGERS}
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    shown = _SAVED["showwarning"] = warnings.showwarning

    def own_warnings_only(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                          file: Any = None, line: str | None = None) -> None:
        if category.__module__.split(".")[0] == "patrol_deploy":
            shown(message, category, filename, lineno, file, line)

    warnings.showwarning = own_warnings_only


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """Wrap `iterable` in a progress bar on stderr unless quiet; bars are removed when done."""
    return tqdm(iterable, disable=_QUIET["value"], leave=False, dynamic_ncols=True, **kwargs)


def status(message: str) -> None:
    """One line of progress narration on stderr (silenced by --quiet)."""
    if not _QUIET["value"]:
        tqdm.write(message, file=sys.stderr)


class PatrolWarning(UserWarning):
    """Something the user should know that does not stop the run: data converted, fewer images than asked for."""


def warn(message: str, stacklevel: int = 2) -> None:
    """A PatrolWarning: shown on stderr even with --quiet (one line from the CLI), catchable from Python."""
    warnings.warn(message, PatrolWarning, stacklevel=stacklevel + 1)


def one_line_warnings() -> None:
    """Print PatrolWarnings as `patrol-deploy: warning: ...` (the CLI's style), other warnings as Python does."""
    default = warnings.formatwarning
    if getattr(default, "_patrol_one_line", False):
        return

    def formatwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      line: str | None = None) -> str:
        if issubclass(category, PatrolWarning):
            return f"patrol-deploy: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    formatwarning._patrol_one_line = True  # type: ignore[attr-defined]
    warnings.formatwarning = formatwarning
