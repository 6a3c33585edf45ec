"""Deterministic splits and the tensors training and attacks consume.

Images stay uint8 in memory; batches are normalized on the fly with the
training split's per-channel mean and std, which travel with the model
(export writes them into the ONNX metadata).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from patrol_deploy.config import DataConfig
from patrol_deploy.data.sources import SOURCES, RawImages
from patrol_deploy.errors import DataError
from patrol_deploy.lazy import require
from patrol_deploy.progress import status


@dataclass
class ImageSplit:
    """One split: uint8 images (N,H,W,C), labels, optional camera ids, and the normalization."""

    images: np.ndarray
    labels: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]
    cams: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)

    def tensors(self, indices: np.ndarray | slice | None = None) -> tuple[Any, Any]:
        """(normalized float images N,C,H,W, labels) as torch tensors."""
        torch = require("torch")
        sel = slice(None) if indices is None else indices
        hwc = torch.from_numpy(np.ascontiguousarray(self.images[sel]))
        # Copy into a fresh NCHW tensor: a permuted view keeps channels-last strides (even through .contiguous()
        # when C == 1), and DDP's gradient buckets on CPU corrupt memory with such inputs (torch 2.14).
        x = torch.empty(hwc.shape[0], hwc.shape[3], hwc.shape[1], hwc.shape[2]).copy_(hwc.permute(0, 3, 1, 2))
        x.div_(255.0)
        mean = torch.tensor(self.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.std).view(1, -1, 1, 1)
        return (x - mean) / std, torch.from_numpy(np.asarray(self.labels[sel]))

    def batches(self, batch_size: int, shuffle: bool = False, seed: int = 0, epoch: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = False) -> Iterator[tuple[Any, Any]]:
        """Mini-batches; shuffling is seeded by (seed, epoch) and sharded across DDP ranks."""
        n = len(self)
        order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
        if world_size > 1:  # equal shard per rank, like DistributedSampler
            per = -(-n // world_size)
            order = np.resize(order, per * world_size)[rank::world_size]
        stop = len(order) - (len(order) % batch_size if drop_last else 0)
        for start in range(0, stop, batch_size):
            idx = order[start:start + batch_size]
            if len(idx):
                yield self.tensors(idx)

    def subset(self, indices: np.ndarray) -> ImageSplit:
        return ImageSplit(self.images[indices], self.labels[indices], self.mean, self.std,
                          None if self.cams is None else self.cams[indices])

    def join(self, other: ImageSplit) -> ImageSplit:
        """This split's images, then `other`'s (same normalization; camera ids only when both have them)."""
        cams = None if self.cams is None or other.cams is None else np.concatenate([self.cams, other.cams])
        return ImageSplit(np.concatenate([self.images, other.images]), np.concatenate([self.labels, other.labels]),
                          self.mean, self.std, cams)


@dataclass
class DataBundle:
    """All splits of one dataset. train/val/test/aux/calib are pairwise disjoint."""

    source: str
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    aux: ImageSplit
    calib: ImageSplit
    num_classes: int
    class_names: list[str]
    query: ImageSplit | None = None
    gallery: ImageSplit | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @cached_property  # a copy of both splits' images: made once per bundle
    def selection(self) -> ImageSplit:
        """The validation and auxiliary splits together: images no model trains on and no evaluation reads, for
        selection steps that must resolve small utility differences (PATROL's search guard). The auxiliary
        split is the attacker's data, but only its images feed attacks: a model's utility on it leaks nothing."""
        return self.val.join(self.aux)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[3])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def mean(self) -> tuple[float, ...]:
        return self.train.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.train.std

    def denormalize(self, x: Any) -> Any:
        """Normalized tensors back to [0, 1] images (clamped), for metrics and pictures."""
        torch = require("torch")
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x * std + mean).clamp(0.0, 1.0)

    def summary(self) -> dict[str, Any]:
        sizes = {k: len(getattr(self, k)) for k in ("train", "val", "test", "aux", "calib")}
        if self.query is not None and self.gallery is not None:
            sizes.update(query=len(self.query), gallery=len(self.gallery))
        return {"source": self.source, "image_size": self.image_size, "channels": self.channels,
                "num_classes": self.num_classes, "splits": sizes, "skipped_files": len(self.skipped)}


def _cut(n: int, cfg: DataConfig, rng: np.random.Generator) -> dict[str, np.ndarray]:
    order = rng.permutation(n)
    counts = {k: round(getattr(cfg, f"{k}_fraction") * n) for k in ("test", "val", "aux", "calib")}
    out: dict[str, np.ndarray] = {}
    start = 0
    for k, c in counts.items():
        out[k] = order[start:start + c]
        start += c
    out["train"] = order[start:]
    return out


def load_data(cfg: DataConfig, seed: int = 0) -> DataBundle:
    """Load `cfg.source` and split it deterministically from `seed`."""
    raw: RawImages = SOURCES.get(cfg.source)(cfg)
    if raw.skipped:
        status(f"skipped {len(raw.skipped)} unreadable file(s), e.g. {raw.skipped[0][0]}: {raw.skipped[0][1]}")
    rng = np.random.default_rng(seed)
    n_all = len(raw.images)
    keep = np.arange(n_all)
    if cfg.limit is not None and cfg.limit < n_all:
        keep = np.sort(rng.permutation(n_all)[: cfg.limit])
    if raw.partition is not None:
        part = raw.partition[keep]
        pool = keep[part == "train"]
        fixed = {"query": keep[part == "query"], "gallery": keep[part == "gallery"]}
    else:
        pool, fixed = keep, {}
    idx = {k: pool[v] for k, v in _cut(len(pool), cfg, rng).items()}
    if fixed:  # re-ID: evaluation images are the fixed query set; test = query
        idx["test"] = fixed["query"]
    for k in ("train", "test", "aux"):
        if len(idx[k]) == 0:
            raise DataError(
                f"the {k} split of '{cfg.source}' is empty ({len(pool)} usable images).",
                f"use more images or raise data.{k}_fraction" if k != "train" else "lower the held-out fractions",
            )
    imgs = raw.images
    train_pix = imgs[idx["train"]].astype(np.float64) / 255.0
    mean = tuple(float(v) for v in train_pix.mean(axis=(0, 1, 2)))
    std = tuple(max(float(v), 1e-3) for v in train_pix.std(axis=(0, 1, 2)))

    def make(i: np.ndarray) -> ImageSplit:
        return ImageSplit(imgs[i], raw.labels[i], mean, std, None if raw.cams is None else raw.cams[i])

    n_classes = len(raw.class_names)  # re-ID: every training identity, even if a seeded cut left it out of train
    return DataBundle(
        source=cfg.source, train=make(idx["train"]), val=make(idx["val"]), test=make(idx["test"]),
        aux=make(idx["aux"]), calib=make(idx["calib"]), num_classes=n_classes, class_names=raw.class_names,
        query=make(fixed["query"]) if fixed else None, gallery=make(fixed["gallery"]) if fixed else None,
        skipped=raw.skipped,
    )
