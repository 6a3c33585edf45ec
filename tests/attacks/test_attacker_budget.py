"""The attacker's data budget, the evaluation-image count and the width sweep are stated and checked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patrol_deploy.attacks import ATTACKS
from patrol_deploy.attacks.blackbox import distinct_widths
from patrol_deploy.attacks.metrics import bootstrap_ci95
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import DataError
from patrol_deploy.models import BlockNet
from tests.attacks.conftest import attack_config, context


def test_bootstrap_interval_brackets_the_mean_and_shrinks_with_more_images() -> None:
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0, 1, 32), rng.uniform(0, 1, 512)
    lo, hi = bootstrap_ci95(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_ci95(many)
    assert hi2 - lo2 < (hi - lo) / 2  # ~1/sqrt(n): 16x the images, a quarter of the width
    assert bootstrap_ci95(few) == [lo, hi]  # seeded
    assert bootstrap_ci95(np.full(8, 0.5)) == [0.5, 0.5]
    assert all(np.isnan(bootstrap_ci95(np.array([0.1, np.nan]))))


def test_more_evaluation_images_than_the_test_split_is_an_error(mnist_model: BlockNet,
                                                               mnist_bundle: DataBundle) -> None:
    cfg = attack_config(eval_images=len(mnist_bundle.test) + 1)
    with pytest.raises(DataError) as info:
        context(mnist_model, mnist_bundle, "layer1", cfg)
    assert str(len(mnist_bundle.test)) in info.value.problem and str(len(mnist_bundle.test) + 1) in info.value.problem


def test_the_configured_aux_budget_is_honoured_and_checked(mnist_model: BlockNet, mnist_bundle: DataBundle) -> None:
    ctx = context(mnist_model, mnist_bundle, "layer1", attack_config(aux_images=50))
    assert len(ctx.aux()[0]) == 50
    assert len(ctx.non_evaluation_images()) == sum(len(getattr(mnist_bundle, k))
                                                   for k in ("train", "val", "aux", "calib"))
    too_many = context(mnist_model, mnist_bundle, "layer1", attack_config(aux_images=len(mnist_bundle.aux) + 1))
    with pytest.raises(DataError, match=r"attacks\.aux_images"):
        too_many.aux()


def test_blackbox_sweeps_widths_at_the_large_budget_and_reports_the_configured_one(
        mnist_model: BlockNet, mnist_bundle: DataBundle) -> None:
    cfg = attack_config(eval_images=16, aux_images=100,
                        blackbox={"epochs": 2, "patience": 2, "widths": [64, 128], "large_budget": True})
    ctx = context(mnist_model, mnist_bundle, "layer2", cfg)
    torch.manual_seed(0)
    rec = ATTACKS.get("blackbox")(ctx)
    assert rec.details is not None and rec.details["claim_budget"] == "all_non_test"
    attackers = rec.details["attackers"]
    assert [(a["budget"], a["width"]) for a in attackers[:2]] == [("all_non_test", 64), ("all_non_test", 128)]
    strongest = max(attackers[:2], key=lambda a: a["ssim"])
    assert attackers[2]["budget"] == "configured" and attackers[2]["width"] == strongest["width"]
    assert attackers[2]["train_images"] < attackers[0]["train_images"]  # 100 minus its validation slice
    assert attackers[1]["parameters"] > attackers[0]["parameters"]
    assert all(len(a["ssim_ci95"]) == 2 for a in attackers)
    assert rec.images.shape == ctx.images.shape


def test_widths_that_build_the_same_decoder_are_trained_once() -> None:
    """At a 32x32 feature map both default widths cap at 16 channels: one network, which trains to one result."""
    kept, notes = distinct_widths((16, 32, 32), 1, 32, [64, 32, 64])
    assert kept == [32] and notes == ["width 64 builds the same decoder as width 32 for features of shape "
                                      "(16, 32, 32): trained once."]
    assert distinct_widths((16, 8, 8), 1, 32, [64, 32]) == ([32, 64], [])  # wider at 8x8 maps: both trained
    assert distinct_widths((128,), 3, 32, [32, 64]) == ([32, 64], [])  # vectors: the MLP head grows with width
    state = torch.get_rng_state()
    distinct_widths((16, 8, 8), 1, 32, [32, 64])
    # a randomized edge (the noise defense) draws from the global stream next: comparing widths must not move it
    assert torch.equal(torch.get_rng_state(), state)
