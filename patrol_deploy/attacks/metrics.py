"""Reconstruction quality: SSIM and PSNR from torchmetrics on de-normalized [0, 1] images.

SSIM uses the Gaussian window of Wang et al. (11 x 11, sigma 1.5) with
data_range 1, as in He et al.'s inversion study, which treats SSIM < 0.3 as
unrecognizable; the SSIM map is averaged over the positions where the window
fits inside the image, as in Wang et al.'s reference code and scikit-image.
Both metrics are reported per image, as mean / std, and with a bootstrap 95 %
interval of the mean (scipy.stats.bootstrap, percentile method, seeded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from patrol_deploy.errors import DataError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
DATA_RANGE = 1.0
BOOTSTRAP_RESAMPLES = 2000


def bootstrap_ci95(values: torch.Tensor | np.ndarray, seed: int = 0) -> list[float]:
    """Bootstrap 95 % interval of the mean of per-image values ([nan, nan] when any is NaN)."""
    from scipy.stats import bootstrap

    data = np.asarray(values, dtype=np.float64).ravel()
    if len(data) == 0 or not np.isfinite(data).all():
        return [math.nan, math.nan]
    if len(data) == 1 or float(data.std()) == 0.0:
        return [float(data.mean()), float(data.mean())]
    res = bootstrap((data,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                    method="percentile", rng=np.random.default_rng(seed))
    return [float(res.confidence_interval.low), float(res.confidence_interval.high)]


@dataclass(frozen=True)
class ImageScores:
    """Per-image SSIM and PSNR (dB) of reconstructions against their originals."""

    ssim: torch.Tensor
    psnr: torch.Tensor

    @property
    def ssim_mean(self) -> float:
        return float(self.ssim.mean())

    @property
    def ssim_std(self) -> float:
        return float(self.ssim.std(correction=0))

    @property
    def psnr_mean(self) -> float:
        return float(self.psnr.mean())

    @property
    def psnr_std(self) -> float:
        return float(self.psnr.std(correction=0))

    def summary(self) -> dict[str, Any]:
        """Means, stds and bootstrap 95 % intervals, as report.json's attack entries hold them."""
        return {"ssim": self.ssim_mean, "ssim_std": self.ssim_std, "ssim_ci95": bootstrap_ci95(self.ssim.numpy()),
                "psnr": self.psnr_mean, "psnr_std": self.psnr_std, "psnr_ci95": bootstrap_ci95(self.psnr.numpy()),
                "images": len(self.ssim)}


def _check(recon: torch.Tensor, original: torch.Tensor) -> None:
    if recon.shape != original.shape or recon.dim() != 4 or len(recon) == 0:
        raise DataError(f"cannot score reconstructions of shape {tuple(recon.shape)} against originals of "
                        f"shape {tuple(original.shape)}.", "pass two non-empty (N,C,H,W) batches of equal shape")
    if min(original.shape[-2:]) < SSIM_WINDOW:
        raise DataError(f"images of {original.shape[-2]}x{original.shape[-1]} are smaller than the "
                        f"{SSIM_WINDOW}x{SSIM_WINDOW} SSIM window.", "use data.image_size >= 11")
    for name, t in (("reconstructions", recon), ("originals", original)):
        if t.min() < 0 or t.max() > DATA_RANGE:
            raise DataError(f"{name} leave [0, 1] ({float(t.min()):.3f}..{float(t.max()):.3f}).",
                            "de-normalize with DataBundle.denormalize before scoring")


def score_images(recon: torch.Tensor, original: torch.Tensor) -> ImageScores:
    """SSIM (Gaussian 11, sigma 1.5, data_range 1) and PSNR per image, for [0, 1] images (N,C,H,W)."""
    _check(recon, original)
    recon, original = recon.detach().double().cpu(), original.detach().double().cpu()
    # torchmetrics averages the SSIM map over reflection-padded borders; like Wang et al.'s reference code
    # (and scikit-image), average only where the 11x11 window lies inside the image.
    _, ssim_map = cast(tuple[torch.Tensor, torch.Tensor], structural_similarity_index_measure(
        recon, original, gaussian_kernel=True, sigma=SSIM_SIGMA, kernel_size=SSIM_WINDOW,
        reduction="none", data_range=DATA_RANGE, return_full_image=True))
    pad = SSIM_WINDOW // 2
    ssim = ssim_map[..., pad:-pad, pad:-pad].flatten(1).mean(1)
    psnr = peak_signal_noise_ratio(recon, original, data_range=DATA_RANGE, reduction="none", dim=(1, 2, 3))
    return ImageScores(ssim=ssim.float(), psnr=psnr.float())
