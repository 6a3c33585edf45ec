"""SSIM / PSNR agree with scikit-image's reference implementations on real images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data, filters, transform
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from patrol_deploy.attacks.metrics import score_images
from patrol_deploy.errors import DataError


def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    """Real photographs and degraded copies (blur, noise) at 32 and 64 px."""
    rng = np.random.default_rng(0)
    out = []
    for img, size in ((data.camera(), 64), (data.coins(), 32), (data.astronaut()[..., 1], 32)):
        ref = transform.resize(img, (size, size), anti_aliasing=True)
        out.append((ref, filters.gaussian(ref, 1.0)))
        out.append((ref, np.clip(ref + rng.normal(0, 0.1, ref.shape), 0, 1)))
    return out


@pytest.mark.parametrize("pair", range(6))
def test_matches_skimage_on_real_images(pair: int) -> None:
    ref, degraded = _pairs()[pair]
    scores = score_images(torch.tensor(degraded)[None, None].float(), torch.tensor(ref)[None, None].float())
    want_ssim = structural_similarity(degraded, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=1.0)
    assert float(scores.ssim[0]) == pytest.approx(want_ssim, abs=1e-4)
    assert float(scores.psnr[0]) == pytest.approx(peak_signal_noise_ratio(ref, degraded, data_range=1.0), abs=1e-3)


def test_rgb_matches_skimage_channel_mean() -> None:
    ref = transform.resize(data.astronaut(), (32, 32), anti_aliasing=True)
    noisy = np.clip(ref + np.random.default_rng(1).normal(0, 0.05, ref.shape), 0, 1)
    as_t = lambda a: torch.tensor(a).permute(2, 0, 1)[None].float()  # noqa: E731
    scores = score_images(as_t(noisy), as_t(ref))
    want = structural_similarity(noisy, ref, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                 data_range=1.0, channel_axis=2)
    assert float(scores.ssim[0]) == pytest.approx(want, abs=1e-4)


def test_identical_images_score_one_and_stats_are_per_image() -> None:
    imgs = torch.rand(4, 1, 32, 32)
    same = score_images(imgs, imgs)
    assert torch.allclose(same.ssim, torch.ones(4))
    assert same.ssim_mean == pytest.approx(1.0) and same.ssim_std == pytest.approx(0.0, abs=1e-6)
    mixed = score_images(torch.cat([imgs[:2], torch.rand(2, 1, 32, 32)]), imgs)
    assert mixed.ssim.shape == (4,) and mixed.ssim[2:].max() < 0.2
    assert mixed.ssim_std > 0.3


def test_refuses_unnormalized_or_mismatched_images() -> None:
    imgs = torch.rand(2, 1, 32, 32)
    with pytest.raises(DataError, match="denormalize"):
        score_images(imgs * 3 - 1, imgs)
    with pytest.raises(DataError, match="equal shape"):
        score_images(imgs[:1], imgs)
    with pytest.raises(DataError, match="SSIM window"):
        score_images(imgs[..., :8, :8], imgs[..., :8, :8])
