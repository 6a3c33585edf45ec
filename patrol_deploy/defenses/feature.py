"""Defenses that perturb the uploaded features: Gaussian noise and dropout, active in the deployed edge.

Both modules ignore train / eval mode on purpose: they are part of the edge
that ships, so the cloud (and any attacker) only ever sees perturbed
features. The cloud is fine-tuned with the perturbation in place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from patrol_deploy.defenses.base import DefendedModel, Defense, DefenseJob, feature_std, finetune


class FeatureNoise(nn.Module):
    """Adds N(0, (sigma * scale)^2) noise to every feature, in training and at inference."""

    scale: torch.Tensor

    def __init__(self, sigma: float, scale: float) -> None:
        super().__init__()
        self.sigma = sigma
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z + torch.randn_like(z) * (self.sigma * self.scale)

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}, scale={float(self.scale):.4g}"


class FeatureDropout(nn.Module):
    """Zeroes each feature with probability p (rescaling the rest), in training and at inference."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.dropout(z, self.p, training=True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def train_noise(job: DefenseJob, sigma: float) -> DefendedModel:
    """Fine-tune with Gaussian noise of std sigma x (the undefended features' std) on the uploaded features."""
    scale = feature_std(job.model, job.split, job)
    return finetune(job, "noise", sigma, "sigma", feature_defense=FeatureNoise(sigma, scale))


def train_dropout(job: DefenseJob, p: float) -> DefendedModel:
    """Fine-tune with dropout (probability p) on the uploaded features."""
    return finetune(job, "dropout", p, "p", feature_defense=FeatureDropout(p))


NOISE = Defense("noise", "sigma", train_noise, grid=(2.0, 1.0, 0.5))
DROPOUT = Defense("dropout", "p", train_dropout, grid=(0.7, 0.5, 0.3), max_strength=0.95)
