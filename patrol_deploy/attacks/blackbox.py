"""Black-box inverse network: decoders trained from scratch to map queried features back to images.

The attacker queries the edge (through its runner) on images disjoint from the
evaluation images and trains fresh decoders (attacks/decoder.py) with MSE:
Adam with cosine decay, standardized features, and early stopping on a slice
of its own data held out for validation (best weights kept), so a low SSIM
means the features resist inversion rather than that the attacker stopped
early. One decoder is trained per width in `attacks.blackbox.widths` and the
strongest (highest SSIM) is reported, as the worst case over attacks is.

The attacker's data budget is a stated assumption: `attacks.aux_images` of the
auxiliary split (the configured budget), and, with `large_budget`, every image
that is not an evaluation image (an honest-but-curious cloud can collect
public images of the same domain). The privacy claim is made at the larger
budget; the report shows both.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.attacks.decoder import build_decoder, parameter_count
from patrol_deploy.attacks.metrics import ImageScores, score_images
from patrol_deploy.attacks.suite import AttackContext, Reconstruction, query_features
from patrol_deploy.config import BlackboxConfig
from patrol_deploy.errors import DataError
from patrol_deploy.progress import progress
from patrol_deploy.training import Stream

# A validation loss counts as better when it drops by 1 % and by 0.01 % of the images' variance: smaller gains
# (MSE 0.00130 -> 0.00125 on images of variance 1) no longer change the reconstructions visibly.
MIN_IMPROVEMENT = 0.01
MIN_GAIN_OF_VARIANCE = 1e-4
CONFIGURED, LARGE = "configured", "all_non_test"


@torch.no_grad()
def _val_loss(decoder: nn.Module, z: torch.Tensor, x: torch.Tensor, batch_size: int) -> float:
    decoder.eval()
    total = sum(F.mse_loss(decoder(z[i:i + batch_size]), x[i:i + batch_size], reduction="sum").item()
                for i in range(0, len(z), batch_size))
    return total / x.numel()


@torch.no_grad()
def decode(decoder: nn.Module, z: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Images (normalized) the decoder reconstructs from features z."""
    decoder.eval()
    dev = next(decoder.parameters()).device
    return torch.cat([decoder(z[i:i + batch_size].to(dev)).cpu() for i in range(0, len(z), batch_size)])


def train_inverse(features: torch.Tensor, images: torch.Tensor, cfg: BlackboxConfig, seed: int = 0,
                  device: str = "cpu", width: int | None = None) -> tuple[nn.Module, dict[str, list[float]], list[str]]:
    """Train a fresh decoder features -> images with MSE and early stopping; returns it, its curve and notes."""
    n = len(images)
    n_val = max(1, round(cfg.val_fraction * n))
    if n - n_val < 2:
        raise DataError(f"{n} auxiliary image(s) cannot be split into training and validation data for the "
                        "inverse network.", "raise data.aux_fraction or use more images")
    width = width or max(cfg.widths)
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = torch.from_numpy(order[:n_val]), order[n_val:]
    z_val, x_val = features[val_idx].to(device), images[val_idx].to(device)
    z_tr, x_tr = features[train_idx].to(device), images[train_idx].to(device)
    torch.manual_seed(seed)
    decoder = build_decoder(tuple(features.shape[1:]), images.shape[1], images.shape[-1], width).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    steps = cfg.epochs * -(-len(z_tr) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    rng = np.random.default_rng([seed, Stream.BLACKBOX])
    curve: dict[str, list[float]] = {"epoch": [], "train": [], "val": []}
    best, best_epoch, best_state = float("inf"), 0, copy.deepcopy(decoder.state_dict())
    ref, ref_epoch = float("inf"), 0  # the last epoch that counted as an improvement, and its loss
    min_gain = MIN_GAIN_OF_VARIANCE * float(x_val.var()) if n_val > 1 else 0.0
    for epoch in progress(range(1, cfg.epochs + 1), desc=f"blackbox decoder (width {width})", unit="epoch"):
        decoder.train()
        perm = torch.from_numpy(rng.permutation(len(z_tr)))
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two samples: a last batch of one is left out of this epoch
                continue
            loss = F.mse_loss(decoder(z_tr[idx]), x_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        val = _val_loss(decoder, z_val, x_val, cfg.batch_size)
        curve["epoch"].append(float(epoch))
        curve["train"].append(total / len(perm))
        curve["val"].append(val)
        if val < best:
            best, best_epoch, best_state = val, epoch, copy.deepcopy(decoder.state_dict())
        if epoch == 1 or val < ref - max(MIN_IMPROVEMENT * ref, min_gain):
            ref, ref_epoch = val, epoch
        elif epoch - ref_epoch >= cfg.patience:
            break
    decoder.load_state_dict(best_state)
    stopped = int(curve["epoch"][-1])
    if stopped - ref_epoch >= cfg.patience:
        notes = [f"decoder (width {width}, {parameter_count(decoder):,} parameters) converged: no significant "
                 f"validation improvement in the last {cfg.patience} of {stopped} epochs; best validation MSE "
                 f"{best:.4g} at epoch {best_epoch} ({len(z_tr)} training images, {n_val} held out)."]
    else:
        notes = [f"decoder (width {width}, {parameter_count(decoder):,} parameters) still improving at the epoch "
                 f"limit ({stopped}); best validation MSE {best:.4g}. Raise attacks.blackbox.epochs for a "
                 "converged attacker."]
    return decoder, curve, notes


def _summary(budget: str, width: int, images: int, decoder: nn.Module, curve: dict[str, list[float]],
             scores: ImageScores) -> dict[str, Any]:
    return {"budget": budget, "width": width, "train_images": images, "parameters": parameter_count(decoder),
            "epochs": len(curve["epoch"]), "best_val_mse": min(curve["val"]), **scores.summary()}


def distinct_widths(feature_shape: tuple[int, ...], channels: int, size: int,
                    widths: list[int]) -> tuple[list[int], list[str]]:
    """The widths in `widths` (ascending) that build different decoders for these features, and a note for each
    one left out: channels are capped per resolution (decoder.py), so at a large feature map two widths can build
    the same network, which trains to the same result."""
    kept: dict[str, int] = {}
    notes = []
    for width in sorted(set(widths)):
        with torch.random.fork_rng():  # building draws initial weights: the attack's random streams stay untouched
            arch = repr(build_decoder(feature_shape, channels, size, width))
        if arch in kept:
            notes.append(f"width {width} builds the same decoder as width {kept[arch]} for features of shape "
                         f"{tuple(feature_shape)}: trained once.")
        else:
            kept[arch] = width
    return list(kept.values()), notes


def blackbox(ctx: AttackContext) -> Reconstruction:
    """Query the edge on the attacker's images, train one decoder per width, keep the strongest reconstruction.

    With `large_budget`, the width sweep runs on every non-evaluation image (the claim) and the strongest width
    is trained once more on the configured auxiliary budget, so the report shows both.
    """
    cfg = ctx.config.blackbox
    originals = ctx.bundle.denormalize(ctx.images)
    budgets = {CONFIGURED: ctx.aux()[0]}
    if cfg.large_budget:
        budgets[LARGE] = ctx.non_evaluation_images()
    claim = LARGE if cfg.large_budget else CONFIGURED
    features: dict[str, torch.Tensor] = {}
    trials: list[tuple[dict[str, Any], torch.Tensor, dict[str, list[float]], list[str]]] = []

    def attempt(budget: str, width: int) -> None:
        x = budgets[budget]
        if budget not in features:
            features[budget] = query_features(ctx.runner, x)
        decoder, curve, notes = train_inverse(features[budget], x, cfg, ctx.seed, ctx.device, width)
        images = decode(decoder, ctx.targets)
        scores = score_images(ctx.bundle.denormalize(images), originals)
        summary = _summary(budget, width, len(x), decoder, curve, scores)
        lo, hi = summary["ssim_ci95"]
        trials.append((summary, images, curve, [f"[{budget} budget, {len(x)} images, width {width}] SSIM "
                                                f"{summary['ssim']:.3f} [{lo:.3f}, {hi:.3f}]. {n}" for n in notes]))

    widths, same = distinct_widths(tuple(ctx.targets.shape[1:]), ctx.images.shape[1], ctx.images.shape[-1], cfg.widths)
    for width in widths:
        attempt(claim, width)
    best = max(trials, key=lambda t: t[0]["ssim"])
    if claim != CONFIGURED:
        attempt(CONFIGURED, best[0]["width"])
    notes = [n for t in trials for n in t[3]] + same
    notes.append(f"reported: the strongest attacker at the {claim} budget (width {best[0]['width']}, "
                 f"{best[0]['parameters']:,} parameters, SSIM {best[0]['ssim']:.3f}).")
    return Reconstruction(best[1], notes, best[2], {"claim_budget": claim, "attackers": [t[0] for t in trials]})
