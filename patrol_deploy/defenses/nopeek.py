"""NoPeek (Vepakomma et al. 2020): penalize the distance correlation between images and uploaded features.

Neither torchmetrics nor scipy offers a differentiable, batched distance
correlation, so it is written out here from Székely, Rizzo & Bakirov (2007):
double-centred pairwise distance matrices A, B and
dCor = sqrt(mean(A*B) / sqrt(mean(A*A) * mean(B*B))).
"""

from __future__ import annotations

import torch

from patrol_deploy.defenses.base import DefendedModel, Defense, DefenseJob, finetune

EPS = 1e-9


def _double_centered(x: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()


def distance_correlation(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation in [0, 1] between two batches (rows are samples; other dims flattened)."""
    a = _double_centered(x.flatten(1).float())
    b = _double_centered(z.flatten(1).float())
    dcov2 = (a * b).mean()
    dvar = ((a * a).mean() * (b * b).mean()).sqrt()
    return (dcov2 / dvar.clamp_min(EPS)).clamp_min(EPS).sqrt()


def train_nopeek(job: DefenseJob, weight: float) -> DefendedModel:
    """Fine-tune with task loss + weight x dCor(images, uploaded features)."""
    return finetune(job, "nopeek", weight, "weight", penalty=lambda x, z: weight * distance_correlation(x, z))


NOPEEK = Defense("nopeek", "weight", train_nopeek, grid=(10.0, 3.0, 1.0))
