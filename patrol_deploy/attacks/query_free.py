"""Query-free attack: a shadow edge trained against the known cloud, then rMLE on the shadow.

The attacker knows the cloud (it runs it) and the edge's architecture, but
not the edge's weights, and never queries the edge. It trains a freshly
initialised copy of the edge architecture on its labelled auxiliary data with
the cloud frozen, so the shadow learns to produce features the cloud
understands, then inverts the uploaded features z through the shadow with
the white-box rMLE settings.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.attacks.suite import AttackContext, Reconstruction, frozen
from patrol_deploy.attacks.whitebox import constant_start, rmle
from patrol_deploy.config import QueryFreeConfig
from patrol_deploy.progress import progress
from patrol_deploy.training import Stream, cosine, make_optimizer

VAL_FRACTION = 0.1


def fresh_copy(module: nn.Module, seed: int) -> nn.Module:
    """A copy of `module`'s architecture with every parameter and running statistic re-initialised."""
    torch.manual_seed(seed)
    shadow = copy.deepcopy(module)
    for m in shadow.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return shadow.requires_grad_(True)


@torch.no_grad()
def _accuracy(shadow: nn.Module, cloud: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    shadow.eval()
    return float((cloud(shadow(x)).argmax(1) == y).float().mean()) * 100.0


def train_shadow(shadow: nn.Module, cloud: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: QueryFreeConfig,
                 seed: int = 0, device: str = "cpu") -> tuple[list[float], float]:
    """Train `shadow` in place so that cloud(shadow(x)) predicts y, the cloud frozen.

    Returns the mean loss per epoch and the cloud's accuracy (%) on shadow
    features of a held-out slice of the auxiliary data.
    """
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, round(VAL_FRACTION * len(x))) if len(x) > 1 else 0
    val, tr = torch.from_numpy(order[:n_val]), torch.from_numpy(order[n_val:])
    x_tr, y_tr = x[tr].to(device), y[tr].to(device)
    shadow.to(device)
    opt = make_optimizer(shadow.parameters(), cfg.lr, 5e-4)
    steps = -(-len(x_tr) // cfg.batch_size)
    sched = cosine(opt, cfg.shadow_epochs * steps)
    rng = np.random.default_rng([seed, Stream.QUERY_FREE])
    history = []
    with frozen(cloud):
        for _ in progress(range(cfg.shadow_epochs), desc="query-free shadow", unit="epoch"):
            shadow.train()
            perm = torch.from_numpy(rng.permutation(len(x_tr)))
            total = 0.0
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                loss = F.cross_entropy(cloud(shadow(x_tr[idx])), y_tr[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += loss.item() * len(idx)
            history.append(total / len(perm))
        accuracy = _accuracy(shadow, cloud, x[val].to(device), y[val].to(device)) if n_val else float("nan")
    shadow.eval()
    return history, accuracy


def query_free(ctx: AttackContext) -> Reconstruction:
    """Train a shadow edge against the frozen cloud on auxiliary labels, then invert the upload through it."""
    cfg = ctx.config.query_free
    x_aux, y_aux = ctx.aux()
    shadow = fresh_copy(ctx.runner.torch_module, ctx.seed)
    history, accuracy = train_shadow(shadow, ctx.cloud.to(ctx.device), x_aux, y_aux, cfg, ctx.seed, ctx.device)
    images, curve = rmle(shadow, ctx.targets, constant_start(ctx), ctx.image_bounds(), ctx.config.whitebox,
                         desc="query-free rMLE")
    notes = [f"shadow edge trained {cfg.shadow_epochs} epochs on {len(x_aux)} auxiliary images with the cloud "
             f"frozen; the cloud reaches {accuracy:.1f}% on shadow features of held-out auxiliary images. "
             "The edge itself is never queried; only the uploaded features are inverted.",
             f"rMLE through the shadow: final relative feature error {curve['feature_error'][-1]:.3g}."]
    return Reconstruction(images, notes, {"shadow_epoch": [float(e + 1) for e in range(len(history))],
                                          "shadow_loss": history, **curve})
