"""Shared test fixtures: one torch thread per test worker, and a small real data bundle."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.config import DataConfig
from patrol_deploy.data import DataBundle, load_data

torch.set_num_threads(1)  # the suite runs as 2 workers on 2 cores


@pytest.fixture(scope="session")
def digits_bundle() -> DataBundle:
    """The 1,797 real scikit-learn digits at 16x16 grey: one epoch learns them in about a second."""
    return load_data(DataConfig(source="digits", image_size=16), seed=0)
