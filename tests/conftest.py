"""Shared test fixtures: one torch thread per test worker (or OMP_NUM_THREADS), and a small real data bundle."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch

from patrol_deploy.config import DataConfig
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.progress import is_quiet, set_quiet
from patrol_deploy.runlock import release_run_folders


def _threads() -> int:
    """One torch thread per worker (the suite runs as 2 workers on 2 cores), unless OMP_NUM_THREADS says otherwise:
    `python3 scripts/dev.py test --cpu-matrix` runs the suite with 1 and 2 threads (docs/contributing.md)."""
    first = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else 1


torch.set_num_threads(_threads())


@pytest.fixture(autouse=True)
def _release_run_folder_locks() -> Iterator[None]:
    """A test that calls check_run_folder (or optimize) directly holds the folder's lock, as a command does until
    it ends; release it after the test, as the CLI does, so that later subprocesses can use the folder."""
    yield
    release_run_folders()


@pytest.fixture(autouse=True)
def _loud_by_default() -> Iterator[None]:
    """`-q` sets the process's quiet flag, as a command should; in this shared process a CLI test that passed it
    must not silence the narration the next test reads."""
    if is_quiet():
        set_quiet(False)
    yield


@pytest.fixture(scope="session")
def digits_bundle() -> DataBundle:
    """The 1,797 real scikit-learn digits at 16x16 grey: one epoch learns them in about a second."""
    return load_data(DataConfig(source="digits", image_size=16), seed=0)
