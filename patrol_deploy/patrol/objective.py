"""The PATROL training objective in one forward pass.

`task + distill + sparsity * S(m, gamma) + sum_i alpha_i k_i - beta * L_adv`, where
the k_i are block-wise local Lipschitz estimates of the edge, L_adv is the
surrogate decoder's reconstruction error and `distill` keeps the pruned
model's outputs close to the frozen unpruned baseline's. Clean and perturbed
inputs go through the edge once, concatenated, and every block's output is
reused for the k_i; the surrogate sees the clean features through a
gradient-reversal layer, so one backward pass trains the decoder to minimize
L_adv and the edge to maximize it (scaled by beta).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.config import PatrolConfig
from patrol_deploy.models.blocknet import BlockNet, ReIDHead
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.split import split_index
from patrol_deploy.training import head_loss

EPS = 1e-12


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by -scale on the way back."""
    out: torch.Tensor = _GradReverse.apply(x, scale)
    return out


def lipschitz_terms(clean: list[torch.Tensor], perturbed: list[torch.Tensor], delta: torch.Tensor,
                    reduce: str) -> list[torch.Tensor]:
    """k_1 = |F_1(x+d) - F_1(x)| / |d|; k_i = |F_i(x+d) - F_i(x)| / |F_{i-1}(x+d) - F_{i-1}(x)|, reduced over x."""
    prev = delta.flatten(1).norm(dim=1)
    terms = []
    for c, p in zip(clean, perturbed, strict=True):
        diff = (p - c).flatten(1).norm(dim=1)
        ratio = diff / prev.clamp_min(EPS)
        terms.append(ratio.max() if reduce == "max" else ratio.mean())
        prev = diff
    return terms


def alphas(cfg: PatrolConfig, n_blocks: int) -> list[float]:
    a = cfg.lipschitz.alpha
    if isinstance(a, list):
        if len(a) != n_blocks:
            from patrol_deploy.errors import ConfigError

            raise ConfigError(f"patrol.lipschitz.alpha has {len(a)} weights but the edge has {n_blocks} blocks.",
                              f"give {n_blocks} weights or a single number")
        return list(a)
    return [float(a)] * n_blocks


class PatrolNet(nn.Module):
    """Model + masks + surrogate decoder; `forward(x, y)` returns every loss term of the objective."""

    def __init__(self, model: BlockNet, split: str, cfg: PatrolConfig, decoder: nn.Module | None,
                 masks: SoftMasks | None, triplet_margin: float = 0.3, teacher: BlockNet | None = None) -> None:
        super().__init__()
        self.model = model
        self.decoder = decoder
        self.cfg = cfg
        self.masks = masks
        self.k = split_index(model, split)
        self.alpha = alphas(cfg, self.k + 1)
        self.margin = triplet_margin
        # a tuple, not a submodule: the frozen teacher is no parameter of this net (nor of DDP's wrapper)
        self.teacher: tuple[BlockNet, ...] = (teacher,) if teacher is not None and cfg.distill.active else ()

    def _distill(self, x: torch.Tensor, logits: torch.Tensor, feat: torch.Tensor | None) -> torch.Tensor:
        teacher = self.teacher[0]
        with torch.no_grad():
            c = teacher.features(x)
            head = teacher.head
            t_feat, t_logits = head.train_outputs(c) if isinstance(head, ReIDHead) else (None, head(c))
        if feat is not None and t_feat is not None:  # re-ID: the embedding the triplet loss trains (pre-BN-neck)
            return self.cfg.distill.weight * (1 - F.cosine_similarity(feat, t_feat, dim=1)).mean()
        temp = self.cfg.distill.temperature
        kl = F.kl_div(F.log_softmax(logits / temp, dim=1), F.log_softmax(t_logits / temp, dim=1),
                      reduction="batchmean", log_target=True)
        return self.cfg.distill.weight * temp * temp * kl

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        blocks = list(self.model.blocks.values())
        lip = self.cfg.lipschitz.enabled
        n = x.shape[0]
        m = max(1, round(n * self.cfg.lipschitz.batch_fraction))  # perturbed copies of the first m images
        delta = torch.randn_like(x[:m]) * self.cfg.lipschitz.sigma if lip else None
        h = torch.cat([x, x[:m] + delta]) if delta is not None else x
        outs = []
        for block in blocks[: self.k + 1]:
            h = block(h)
            outs.append(h)
        z = h[:n]
        c = z
        for block in blocks[self.k + 1:]:
            c = block(c)
        task, logits, feat = head_loss(self.model.head, c, y, self.margin)
        zero = x.new_zeros(())
        losses = {"task": task, "distill": zero, "lipschitz": zero, "adversarial": zero, "sparsity": zero}
        total = task
        if self.teacher:
            losses["distill"] = self._distill(x, logits, feat)
            total = total + losses["distill"]
        if delta is not None:
            terms = lipschitz_terms([o[:m] for o in outs], [o[n:] for o in outs], delta, self.cfg.lipschitz.reduce)
            losses["lipschitz"] = sum((a * t for a, t in zip(self.alpha, terms, strict=True)), zero)
            total = total + losses["lipschitz"]
        if self.decoder is not None and self.cfg.adversarial.enabled:
            recon = self.decoder(grad_reverse(z, self.cfg.adversarial.beta))
            losses["adversarial"] = F.mse_loss(recon, x)
            total = total + losses["adversarial"]  # the reversal turns this into -beta * L_adv for the edge
        if self.masks is not None:
            losses["sparsity"] = self.cfg.prune.sparsity_weight * self.masks.sparsity()
            total = total + losses["sparsity"]
        losses["total"] = total
        losses["features"] = z.detach()
        return losses
