"""The installed TensorRT: lazy import, version and API generation, ONNX opset limits, one shared logger.

TensorRT's Python API changed twice in ways this package cares about:
8.5/8.6 (JetPack 5) needs the explicit-batch network flag and calibrates INT8
implicitly; 10.x (JetPack 6) makes explicit batch the default and deprecates
calibrators; 11.x builds strongly typed networks only. Code that branches on
the version asks `TrtVersion.generation`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from patrol_deploy.errors import ConfigError, MissingDependency, PatrolError
from patrol_deploy.lazy import require
from patrol_deploy.progress import status

TRT_FIX = "use JetPack's TensorRT on a Jetson, or `pip install tensorrt` on an x86 machine with an NVIDIA GPU"

# Highest ONNX opset the bundled ONNX parser documents, keyed by the first release with that limit
# (onnx-tensorrt docs/operators.md per release branch; TensorRT ONNX opset guide; 11.5 release notes).
_MAX_OPSET = ((8, 5, 17), (10, 0, 20), (10, 15, 24), (11, 0, 24), (11, 5, 25))
_MIN_OPSET = {8: 7, 10: 9, 11: 9}


@dataclass(frozen=True, order=True)
class TrtVersion:
    """A TensorRT version such as 8.6.2 or 10.3.0.30, and the API generation it belongs to."""

    major: int
    minor: int = 0
    patch: int = 0
    text: str = field(default="", compare=False)

    @classmethod
    def parse(cls, text: str) -> TrtVersion:
        match = re.match(r"^\s*(\d+)(?:\.(\d+))?(?:\.(\d+))?", str(text))
        if not match:
            raise ConfigError(f"'{text}' is not a TensorRT version.", "write it like 8.6, 10.3 or 11")
        major, minor, patch = (int(g) if g else 0 for g in match.groups())
        return cls(major, minor, patch, str(text).strip())

    @property
    def generation(self) -> int:
        """8 (8.5/8.6), 10 (10.x) or 11 (11 and later): the API path the builder takes."""
        if self.major == 8 and self.minor >= 5:
            return 8
        if self.major == 10:
            return 10
        if self.major >= 11:
            return 11
        raise MissingDependency(
            f"TensorRT {self} is not supported (the engine code needs 8.5/8.6, 10.x or 11.x; "
            "9.x was a data-center-only preview and 8.4 lacks the tensor-name execution API).",
            "upgrade JetPack (5.1+ ships TensorRT 8.5) or install a supported TensorRT")

    @property
    def max_opset(self) -> int:
        """Highest ONNX opset this version's parser documents support for."""
        limit = 0
        for major, minor, opset in _MAX_OPSET:
            if (self.major, self.minor) >= (major, minor):
                limit = opset
        return limit

    @property
    def min_opset(self) -> int:
        return _MIN_OPSET[self.generation]

    def __str__(self) -> str:
        return self.text or f"{self.major}.{self.minor}.{self.patch}"


def check_opset(version: TrtVersion, opset: int, source: str) -> None:
    """Refuse an ONNX opset the installed parser does not document, before parsing (clear error, not a crash)."""
    if opset > version.max_opset:
        raise ConfigError(
            f"{source} uses ONNX opset {opset}, but the ONNX parser of TensorRT {version} supports opsets "
            f"{version.min_opset}-{version.max_opset}.",
            f"re-export at opset {version.max_opset} or lower (`patrol-deploy export --opset {version.max_opset}`, "
            f"or export.opset: {version.max_opset} in the config), or pass --skip-opset-check if your parser is "
            "newer than documented")
    if opset < version.min_opset:
        raise ConfigError(
            f"{source} uses ONNX opset {opset}; TensorRT {version} parses opset {version.min_opset} and newer.",
            f"re-export at opset {version.min_opset} or newer")


def load_tensorrt(purpose: str) -> tuple[ModuleType, TrtVersion]:
    """Import TensorRT's Python package, or say how to install it; returns the module and its version."""
    try:
        trt = require("tensorrt", purpose)
    except OSError as exc:  # bindings present, shared libraries (libnvinfer) missing
        raise MissingDependency(f"TensorRT's libraries cannot be loaded (needed for {purpose}): {exc}.",
                                TRT_FIX) from exc
    text = getattr(trt, "__version__", None)
    if not text:
        raise MissingDependency(
            f"'tensorrt' imports but is not TensorRT's Python package (no __version__; only type stubs or an "
            f"empty namespace are installed), so {purpose} is impossible here.", TRT_FIX)
    version = TrtVersion.parse(text)
    version.generation  # noqa: B018 - refuses unsupported versions here, with the fix
    return trt, version


def installed_version() -> TrtVersion | None:
    """The installed TensorRT version, or None where TensorRT is absent or unusable."""
    try:
        return load_tensorrt("detecting the TensorRT version")[1]
    except PatrolError:
        return None


_LOGGERS: dict[int, tuple[ModuleType, Any]] = {}  # id -> (module, logger); holding the module pins its id


def trt_logger(trt: ModuleType) -> Any:
    """The process-wide TensorRT logger: warnings narrated on stderr, errors kept for the error message.

    TensorRT expects one logger per process (builders and runtimes created with
    different loggers trigger a warning), so it is created once per module.
    """
    key = id(trt)
    if key not in _LOGGERS or _LOGGERS[key][0] is not trt:

        class CapturingLogger(trt.ILogger):  # type: ignore[name-defined]
            def __init__(self) -> None:
                trt.ILogger.__init__(self)
                self.errors: list[str] = []
                self._error_levels = {trt.ILogger.INTERNAL_ERROR, trt.ILogger.ERROR}

            def log(self, severity: Any, msg: str) -> None:
                if severity in self._error_levels:
                    self.errors.append(msg)
                    status(f"TensorRT error: {msg}")
                elif severity == trt.ILogger.WARNING:
                    status(f"TensorRT warning: {msg}")

            def take_errors(self) -> list[str]:
                errors, self.errors = self.errors, []
                return errors

        _LOGGERS[key] = (trt, CapturingLogger())
    return _LOGGERS[key][1]
