"""Progress bars (tqdm) that `--quiet` silences for pipelines."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_QUIET = {"value": os.environ.get("PATROL_QUIET", "") not in ("", "0")}


def set_quiet(quiet: bool) -> None:
    _QUIET["value"] = quiet


def is_quiet() -> bool:
    return _QUIET["value"]


def progress(iterable: Iterable[T], **kwargs: Any) -> Iterable[T]:
    """Wrap `iterable` in a progress bar on stderr unless quiet; bars are removed when done."""
    return tqdm(iterable, disable=_QUIET["value"], leave=False, dynamic_ncols=True, **kwargs)


def status(message: str) -> None:
    """One line of progress narration on stderr (silenced by --quiet)."""
    if not _QUIET["value"]:
        tqdm.write(message, file=sys.stderr)
