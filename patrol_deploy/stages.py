"""The one sequence every stage of a run goes through (baseline, PATROL, each variant, export, quantize, ...).

A stage is reused when the manifest records it with the same config and its files are intact; otherwise it is
built, resuming from its checkpoints (RUN/<stage>/checkpoints/, keyed by the config hash, so a changed config
never resumes stale work), recorded in the manifest, and its checkpoints are deleted because the recorded
results supersede them. Checkpoints left behind by a run killed between recording and deleting are deleted on
reuse. Torch-free: what a stage builds may import torch, the bookkeeping does not.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from patrol_deploy.checkpoint import Checkpoints, stage_checkpoints
from patrol_deploy.progress import status
from patrol_deploy.runfolder import RunFolder

T = TypeVar("T")


def run_stage(run: RunFolder, name: str, config: dict[str, Any], *, label: str, seed: int | None,
          reuse: Callable[[], T], build: Callable[[Checkpoints], tuple[T, list[Path] | None]],
          shown: Path | None = None) -> T:
    """`reuse()` when stage `name` is current for `config`, else `build(checkpoints)` and record what it wrote.

    `build` returns its result and the files to record; None for the files records nothing and keeps the
    checkpoints (a non-main process of a multi-GPU run, which writes no results). `label` starts the status line;
    `shown` is the path it names on reuse (default RUN/<name>).
    """
    checkpoints = stage_checkpoints(run, name, config)
    if run.is_current(name, config):
        checkpoints.clear()
        status(f"{label}: reusing {shown or run.path(name)}")
        return reuse()
    started = time.time()
    result, files = build(checkpoints)
    if files is not None:
        run.record(name, files, config, seed=seed, started=started)
        checkpoints.clear()
    return result
