"""scripts/bench_privacy.py: the per-seed reports become mean +- std per variant, ratios and the gain split."""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.scripts import load_script


def _bench() -> Any:
    return load_script("bench_privacy")


def _report(und: float, pruned: float, patrol: float, acc: float) -> dict[str, Any]:
    def variant(split: str, ssim: float) -> dict[str, Any]:
        return {"split": {"name": split, "edge_macs": 1}, "utility": acc,
                "privacy": {"worst_ssim": ssim, "worst_attack": "blackbox",
                            "attacks": {"blackbox": {"ssim": ssim, "ssim_ci95": [ssim - 0.01, ssim + 0.01]}}}}
    return {"utility_metric": "accuracy",
            "variants": {"undefended": variant("layer1", und), "pruned": variant("layer3", pruned),
                         "patrol": variant("layer3", patrol)},
            "privacy_gain": {"depth": 0.1, "pruning": und - pruned - 0.1, "terms": pruned - patrol,
                             "total": und - patrol},
            "patrol_verdict": {"passed": True}}


def test_summary_over_seeds() -> None:
    bench = _bench()
    summary = bench.summarize({0: _report(0.9, 0.6, 0.5, 96.0), 1: _report(0.8, 0.6, 0.4, 94.0)})
    assert summary["seeds"] == [0, 1]
    patrol = summary["variants"]["patrol"]
    assert patrol["worst_ssim"]["mean"] == pytest.approx(0.45) and patrol["utility"]["mean"] == pytest.approx(95.0)
    assert patrol["worst_ssim"]["std"] == pytest.approx(math.sqrt(0.005))  # sample std of 0.5 and 0.4
    assert summary["patrol_over_undefended"]["mean"] == pytest.approx((0.5 / 0.9 + 0.4 / 0.8) / 2)
    assert summary["patrol_over_pruned"]["mean"] == pytest.approx((0.5 / 0.6 + 0.4 / 0.6) / 2)
    assert summary["gain"]["terms"]["mean"] == pytest.approx(0.15)
    assert "patrol / undefended worst SSIM" in bench.table(summary, "accuracy")


def test_a_failed_attack_makes_the_mean_unknown_not_optimistic() -> None:
    bench = _bench()
    bad = _report(0.9, 0.6, float("nan"), 96.0)
    summary = bench.summarize({0: _report(0.9, 0.6, 0.5, 96.0), 1: bad})
    assert math.isnan(summary["variants"]["patrol"]["worst_ssim"]["mean"])
