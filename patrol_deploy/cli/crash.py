"""What the CLI says about an exception that is not a PatrolError.

A full disk, exhausted memory and a tensor shape that cannot exist (an ONNX input with dynamic dimensions
besides the batch) are problems the user can act on: one line and exit 2. Anything else is a bug: one line
naming a crash log that holds the traceback, and exit 4, so a pipeline never reads a crash as "gate failed" (1).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

from patrol_deploy import __version__
from patrol_deploy.errors import EXIT_INTERNAL, ModelError, PatrolError, resource_error

CRASH_PREFIX = "patrol-deploy-crash-"


def known_problem(exc: BaseException) -> PatrolError | None:
    """The PatrolError an unexpected exception stands for (disk full, out of memory, impossible shape), or None."""
    found = resource_error(exc)
    if found is not None:
        return found
    if isinstance(exc, ValueError) and "negative dimensions" in str(exc):
        return ModelError(
            f"a tensor would get negative dimensions ({exc}): the ONNX model's input has dynamic dimensions "
            "besides the batch (e.g. height and width), and no size was given for them.",
            "export the model with a fixed input size (patrol-deploy export writes one), or give the input shape "
            "explicitly where the command offers it (--input-shape NAME:1x3xHxW)")
    return None


def write_crash_log(exc: BaseException, argv: list[str]) -> Path | None:
    """Write the traceback, the command and the versions to a new file in the temp folder; None if that fails."""
    try:
        fd, name = tempfile.mkstemp(prefix=CRASH_PREFIX, suffix=".log", dir=tempfile.gettempdir())
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(f"patrol-deploy {__version__} crashed at {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
                     f"command: patrol-deploy {' '.join(argv)}\n"
                     f"cwd: {os.getcwd()}\n"
                     f"python {platform.python_version()} on {platform.platform()} ({sys.executable})\n\n")
            fh.write("".join(traceback.format_exception(exc)))
        return Path(name)
    except OSError:  # the disk that is full may be the temp folder's
        return None


def internal_error_line(exc: BaseException, argv: list[str]) -> str:
    """The one line an unexpected exception prints (after writing the crash log)."""
    log = write_crash_log(exc, argv)
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no message"
    where = (f"the traceback is in {log}" if log is not None
             else "no crash log could be written; run again with --debug for the traceback")
    return (f"patrol-deploy: error: internal error (exit {EXIT_INTERNAL}), not a failed gate: "
            f"{type(exc).__name__}: {detail}. Fix: this is a bug in patrol-deploy; {where}; please report it "
            "with that file.")
