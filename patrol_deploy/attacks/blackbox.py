"""Black-box inverse network: a decoder trained from scratch to map queried features back to images.

The attacker queries the edge (through its runner) on the auxiliary split
only, which is disjoint from the evaluation images, and trains a fresh
decoder with MSE. A slice of the auxiliary data is held out for early
stopping: the learning rate halves when the validation loss stalls and
training stops after `patience` epochs without a significant improvement,
keeping the best weights, so a low SSIM means the features resist inversion
rather than that the attacker stopped early. The loss curve goes into the
report.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.attacks import ATTACKS
from patrol_deploy.attacks.decoder import build_decoder
from patrol_deploy.attacks.suite import AttackContext, Reconstruction, query_features
from patrol_deploy.config import BlackboxConfig
from patrol_deploy.errors import DataError
from patrol_deploy.progress import progress

# A validation loss counts as better when it drops by 1 % and by 0.01 % of the images' variance: smaller gains
# (MSE 0.00130 -> 0.00125 on images of variance 1) no longer change the reconstructions visibly.
MIN_IMPROVEMENT = 0.01
MIN_GAIN_OF_VARIANCE = 1e-4


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
                  device: str = "cpu") -> tuple[nn.Module, dict[str, list[float]], list[str]]:
    """Train a fresh decoder features -> images with MSE and early stopping; returns it, its curve and notes."""
    n = len(images)
    n_val = max(1, round(cfg.val_fraction * n))
    if n - n_val < 1:
        raise DataError(f"{n} auxiliary image(s) cannot be split into training and validation data for the "
                        "inverse network.", "raise data.aux_fraction or use more images")
    order = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = torch.from_numpy(order[:n_val]), order[n_val:]
    z_val, x_val = features[val_idx].to(device), images[val_idx].to(device)
    z_tr, x_tr = features[train_idx].to(device), images[train_idx].to(device)
    torch.manual_seed(seed)
    decoder = build_decoder(tuple(features.shape[1:]), images.shape[1], images.shape[-1], cfg.width).to(device)
    opt = torch.optim.Adam(decoder.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, cfg.patience // 3))
    rng = np.random.default_rng([seed, 1])
    curve: dict[str, list[float]] = {"epoch": [], "train": [], "val": []}
    best, best_epoch, best_state = float("inf"), 0, copy.deepcopy(decoder.state_dict())
    ref, ref_epoch = float("inf"), 0  # the last epoch that counted as an improvement, and its loss
    min_gain = MIN_GAIN_OF_VARIANCE * float(x_val.var()) if n_val > 1 else 0.0
    for epoch in progress(range(1, cfg.epochs + 1), desc="blackbox decoder", unit="epoch"):
        decoder.train()
        perm = torch.from_numpy(rng.permutation(len(z_tr)))
        total = 0.0
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.mse_loss(decoder(z_tr[idx]), x_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        val = _val_loss(decoder, z_val, x_val, cfg.batch_size)
        sched.step(val)
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
        notes = [f"decoder converged: no significant validation improvement in the last {cfg.patience} of "
                 f"{stopped} epochs; best validation MSE {best:.4g} at epoch {best_epoch} "
                 f"({len(z_tr)} auxiliary images, {n_val} held out)."]
    else:
        notes = [f"decoder still improving at the epoch limit ({stopped}); best validation MSE {best:.4g}. "
                 "Raise attacks.blackbox.epochs for a converged attacker."]
    return decoder, curve, notes


@ATTACKS.register("blackbox")
def blackbox(ctx: AttackContext) -> Reconstruction:
    """Query the edge on auxiliary images, train an inverse network, decode the uploaded features."""
    x_aux, _ = ctx.aux()
    z_aux = query_features(ctx.runner, x_aux)
    decoder, curve, notes = train_inverse(z_aux, x_aux, ctx.config.blackbox, ctx.seed, ctx.device)
    return Reconstruction(decode(decoder, ctx.targets), notes, curve)
