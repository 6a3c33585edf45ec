"""White-box rMLE (He et al., ACSAC 2019): find the image whose edge features match the upload.

x* = argmin_x ||f_e(x) - z||^2 / ||z||^2 + lambda_TV * TV(x), by Adam from a
constant image (the dataset mean), all evaluation images at once, with x kept
inside the valid pixel range. The feature error is relative to ||z||^2 so one
lambda_TV suits every split and feature scale. Gradients come from the float
torch edge; the target z comes from the runner, which may be an exported
(ONNX / INT8) model: then the two differ and the result says so.
"""

from __future__ import annotations

import torch
from torch import nn

from patrol_deploy.attacks.suite import AttackContext, Reconstruction, frozen
from patrol_deploy.config import WhiteboxConfig
from patrol_deploy.progress import progress

CURVE_POINTS = 100


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per-image mean squared difference between neighbouring pixels (a smoothness prior)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    return dh + dw


def relative_feature_error(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image ||f - z||^2 / ||z||^2."""
    norm = target.flatten(1).pow(2).sum(1).clamp_min(1e-12)
    return (features - target).flatten(1).pow(2).sum(1) / norm


def rmle(edge: nn.Module, target: torch.Tensor, start: torch.Tensor, bounds: tuple[torch.Tensor, torch.Tensor],
         cfg: WhiteboxConfig, desc: str = "rMLE") -> tuple[torch.Tensor, dict[str, list[float]]]:
    """Invert `target` features through `edge` from `start`; returns the images and the loss curve.

    The curve holds the mean relative feature error and the mean total loss,
    sampled at about 100 evenly spaced steps, the last step included.
    """
    x = start.detach().clone().requires_grad_(True)
    target = target.to(x.device)
    opt = torch.optim.Adam([x], lr=cfg.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.iterations)
    every = max(1, cfg.iterations // CURVE_POINTS)
    curve: dict[str, list[float]] = {"step": [], "feature_error": [], "loss": []}
    with frozen(edge):
        for step in progress(range(1, cfg.iterations + 1), desc=desc, unit="step"):
            err = relative_feature_error(edge(x), target)
            loss = err + cfg.tv_weight * total_variation(x)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                x.copy_(torch.maximum(torch.minimum(x, bounds[1]), bounds[0]))
            if step % every == 0 or step == cfg.iterations:
                curve["step"].append(float(step))
                curve["feature_error"].append(float(err.detach().mean()))
                curve["loss"].append(float(loss.detach().mean()))
    return x.detach(), curve


def constant_start(ctx: AttackContext) -> torch.Tensor:
    """The rMLE starting point: every image is the dataset's mean colour (0 after normalization)."""
    return torch.zeros_like(ctx.images, device=ctx.device)


def whitebox(ctx: AttackContext) -> Reconstruction:
    """rMLE against the edge's own weights (the strongest-knowledge attacker)."""
    cfg = ctx.config.whitebox
    edge = ctx.runner.torch_module.to(ctx.device)
    images, curve = rmle(edge, ctx.targets, constant_start(ctx), ctx.image_bounds(), cfg, desc="whitebox rMLE")
    notes = [f"rMLE: {cfg.iterations} Adam steps (lr {cfg.lr}), lambda_TV {cfg.tv_weight}, from a constant image; "
             f"final relative feature error {curve['feature_error'][-1]:.3g}."]
    if not ctx.runner.differentiable:
        notes.append(f"the '{ctx.runner.name}' edge is not differentiable: gradients come from the float torch "
                     "edge, the target features from the runner.")
    return Reconstruction(images, notes, curve)
