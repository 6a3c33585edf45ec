"""Errors a user can act on, each carrying the exit code the CLI returns.

Exit codes are part of the public contract (see README): 0 success, 1 privacy
gate failed, 2 bad input or config, 3 missing optional dependency or hardware,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_MISSING = 3
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


class MissingDependency(PatrolError):
    """An optional package is not installed."""

    exit_code = EXIT_MISSING


class HardwareError(PatrolError):
    """The hardware (CUDA device, DLA core, TensorRT runtime) is absent or unsuitable."""

    exit_code = EXIT_MISSING


class GateFailed(PatrolError):
    """The privacy/utility gate did not pass."""

    exit_code = EXIT_GATE_FAILED
