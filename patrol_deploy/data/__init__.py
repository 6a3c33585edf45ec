"""Datasets: bundled real data, image folders, Fashion-MNIST idx files and VeRi-776.

`load_data(cfg, seed)` returns a `DataBundle` with deterministic, disjoint
train / val / test / aux (attacker) / calib splits.
"""

from patrol_deploy.data.bundle import DataBundle, ImageSplit, load_data
from patrol_deploy.data.sources import SOURCES, RawImages

__all__ = ["SOURCES", "DataBundle", "ImageSplit", "RawImages", "load_data"]
