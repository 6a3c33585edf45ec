"""Reconstruction quality: SSIM and PSNR from torchmetrics on de-normalized [0, 1] images.

SSIM uses the Gaussian window of Wang et al. (11 x 11, sigma 1.5) with
data_range 1, as in He et al.'s inversion study, which treats SSIM < 0.3 as
unrecognizable; the SSIM map is averaged over the positions where the window
fits inside the image, as in Wang et al.'s reference code and scikit-image.
Both metrics are reported per image and as mean / std.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from patrol_deploy.errors import DataError

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
DATA_RANGE = 1.0


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
