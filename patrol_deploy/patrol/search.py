"""PATROL's utility-guarded search: which split and which privacy strength ship.

Candidates are the splits `candidate_splits` offers, tried shallow to deep,
and at each split the strengths of `patrol.search.strengths` (multipliers of
beta and alpha), strongest first. A candidate is trained in full (masks,
progressive pruning, fine-tuning), then judged on the selection images
(`DataBundle.selection`: the validation and auxiliary splits, never an
evaluation image) for utility against the baseline's, within
`patrol.max_utility_drop`, and by a fast proxy attacker trained on part of the
auxiliary split and scored on the rest. The validation split alone is too
coarse for a 1-point guard: at 3,000 images it has 180, and one image is 0.56
points; with the auxiliary split one image is 0.13. At each split the first
strength within the drop is kept (a stronger one was tried first); a split
where none is within the drop ends the search, since a deeper split prunes and
hides more. The winner is the most private kept candidate (lowest proxy SSIM).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from patrol_deploy.config import Config
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.errors import DataError
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.split import cut
from patrol_deploy.training import Stream, evaluate, utility_metric


@dataclass
class Candidate:
    """One (split, strength) PATROL trained: what it cost and how it was judged."""

    split: str
    strength: float
    fits: bool
    edge_macs: int
    seconds: float
    val_utility: float | None = None  # on the selection images (validation + auxiliary), not validation alone
    drop: float | None = None  # the baseline's utility on the selection images minus this candidate's, in points
    proxy_ssim: float | None = None
    within_drop: bool = False
    chosen: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def scaled(cfg: Config, strength: float) -> Config:
    """`cfg` with PATROL's privacy terms (beta and every alpha) multiplied by `strength`."""
    if strength == 1.0:
        return cfg
    out = cfg.model_copy(deep=True)
    out.patrol.adversarial.beta *= strength
    a = out.patrol.lipschitz.alpha
    out.patrol.lipschitz.alpha = [v * strength for v in a] if isinstance(a, list) else a * strength
    return out


def guard_utility(model: BlockNet, bundle: DataBundle, cfg: Config) -> float:
    """Utility on the selection images (validation + auxiliary splits; never the test split)."""
    return evaluate(model, bundle, cfg.model.task, cfg.train.device,
                    split=bundle.selection)[utility_metric(cfg.model.task)]


def coarse_guard(images: int, cfg: Config) -> str | None:
    """Why the guard cannot resolve `patrol.max_utility_drop` on `images` selection images (one image moves
    accuracy by more than the drop allowed, so only a candidate that loses no image net passes), else None."""
    step = 100.0 / max(images, 1)
    if cfg.model.task == "reid" or step <= cfg.patrol.max_utility_drop:
        return None
    return (f"PATROL's search judges utility on {images} images (validation + auxiliary splits): one image is "
            f"{step:.2f} points, coarser than patrol.max_utility_drop {cfg.patrol.max_utility_drop:g}, so only a "
            "candidate that loses no image net passes. Use more images, or raise data.val_fraction / "
            "data.aux_fraction.")


def proxy_ssim(model: BlockNet, split: str, bundle: DataBundle, cfg: Config) -> float:
    """Mean SSIM of a short black-box attacker (the surrogate's width) trained on the auxiliary split's larger
    part and scored on its held-out slice (`patrol.search.proxy_holdout`)."""
    from patrol_deploy.attacks.blackbox import decode, train_inverse
    from patrol_deploy.attacks.metrics import score_images
    from patrol_deploy.attacks.runner import TorchEdgeRunner
    from patrol_deploy.attacks.suite import query_features

    search = cfg.patrol.search
    n = len(bundle.aux)
    hold = round(search.proxy_holdout * n)
    if hold < 1 or n - hold < 4:
        raise DataError(f"the auxiliary split has {n} images: too few for PATROL's proxy attacker (it trains on "
                        f"{1 - search.proxy_holdout:.0%} and scores the rest).",
                        "raise data.aux_fraction, or set patrol.search.enabled=false")
    x, _ = bundle.aux.tensors()
    order = torch.from_numpy(np.random.default_rng([cfg.seed, Stream.PROXY]).permutation(n))
    test_idx, train_idx = order[:hold], order[hold:]
    with torch.random.fork_rng():  # the proxy does not move the training's random streams
        z = query_features(TorchEdgeRunner(cut(model, split)[0]), x)
        attack = cfg.attacks.blackbox.model_copy(update={"epochs": search.proxy_epochs,
                                                         "patience": min(3, search.proxy_epochs)})
        decoder, _, _ = train_inverse(z[train_idx], x[train_idx], attack, cfg.seed, cfg.train.device,
                                      width=cfg.patrol.adversarial.surrogate_width)
        recon = decode(decoder, z[test_idx])
    return score_images(bundle.denormalize(recon), bundle.denormalize(x[test_idx])).ssim_mean


def winner(tried: list[Candidate]) -> Candidate | None:
    """The most private candidate within the drop (lowest proxy SSIM; the earlier one on a tie)."""
    kept = [c for c in tried if c.within_drop and c.proxy_ssim is not None]
    return min(kept, key=lambda c: c.proxy_ssim) if kept else None  # type: ignore[arg-type, return-value]


def closest(tried: list[Candidate]) -> Candidate | None:
    """The fitting candidate that lost the least validation utility (what a failed search reports)."""
    fit = [c for c in tried if c.fits and c.drop is not None]
    return min(fit, key=lambda c: c.drop) if fit else None  # type: ignore[arg-type, return-value]


__all__ = ["Candidate", "closest", "coarse_guard", "guard_utility", "proxy_ssim", "scaled", "winner"]
