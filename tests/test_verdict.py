"""PATROL's own verdict and the split of its privacy gain (pipeline.patrol_verdict, pipeline.privacy_gain)."""

from __future__ import annotations

from typing import Any

import pytest

from patrol_deploy.config import Config, GateConfig
from patrol_deploy.pipeline.compare import patrol_verdict, privacy_gain, pruned_config
from patrol_deploy.progress import PatrolWarning
from patrol_deploy.results import Report, VariantEntry
from patrol_deploy.runfolder import config_hash

SPLIT = {"name": "layer3", "edge_macs": 14_000_000, "edge_params": 9_000, "upload_bytes": 4_096,
         "feature_shape": [16, 8, 8]}


def _variant(utility: float | None, ssim: float | None, errors: dict[str, str] | None = None) -> dict[str, Any]:
    privacy: dict[str, Any] = {"worst_ssim": ssim, "worst_attack": "blackbox", "attacks": {}}
    if errors:
        privacy["errors"] = errors
    return {"split": SPLIT, "utility": utility, "utility_detail": {}, "params": {}, "privacy": privacy}


def _report(**variants: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "utility_metric": "accuracy", "budget": {}, "data": {}, "variants": variants}


def _verdict(report: dict[str, Any], gate: GateConfig) -> dict[str, Any]:
    return patrol_verdict(Report.model_validate(report), gate)


def _gain(**variants: dict[str, Any]) -> dict[str, Any]:
    return privacy_gain({name: VariantEntry.model_validate(v) for name, v in variants.items()})


def test_patrol_that_keeps_utility_and_lowers_ssim_passes() -> None:
    verdict = _verdict(_report(undefended=_variant(90.0, 0.9), patrol=_variant(89.2, 0.5)), GateConfig())
    assert verdict["passed"] and verdict["reasons"] == [] and verdict["utility_drop"] == pytest.approx(0.8)


@pytest.mark.parametrize(("patrol", "undefended", "reason"), [
    (_variant(1.25, 0.37), _variant(85.0, 1.0), "loses 83.75 points"),  # the 40-person face folder of issue 12
    (_variant(89.5, 0.95), _variant(90.0, 0.9), "not below the undefended"),
    (_variant(89.5, 0.90), _variant(90.0, 0.9), "not below the undefended"),
    (_variant(89.5, float("nan"), {"blackbox": "RuntimeError: boom"}), _variant(90.0, 0.9), "'blackbox' against"),
    (_variant(None, 0.5), _variant(90.0, 0.9), "utility could not be measured"),
])
def test_patrol_verdict_fails_with_the_reason(patrol: dict[str, Any], undefended: dict[str, Any], reason: str) -> None:
    verdict = _verdict(_report(undefended=undefended, patrol=patrol), GateConfig())
    assert verdict["passed"] is False and any(reason in r for r in verdict["reasons"]), verdict["reasons"]


def test_a_search_that_kept_no_candidate_fails_even_when_test_utility_looks_fine() -> None:
    """Validation decided (the search); a lucky test split does not turn a failed search into a PASSED run."""
    report = _report(undefended=_variant(90.0, 0.9), patrol=_variant(89.8, 0.5))
    report["patrol_search"] = {"enabled": True, "max_utility_drop": 1.0, "baseline_val_utility": 90.5,
                               "candidates": [], "passed": False,
                               "why": "no candidate kept validation utility within 1.0: the closest, 'layer2' at "
                                      "strength 1, lost 5.00 points"}
    verdict = _verdict(report, GateConfig())
    assert not verdict["passed"] and any("lost 5.00 points" in r for r in verdict["reasons"])
    report["patrol_search"]["passed"] = True
    assert _verdict(report, GateConfig())["passed"]


def test_the_utility_limit_is_configurable() -> None:
    report = _report(undefended=_variant(90.0, 0.9), patrol=_variant(87.0, 0.5))
    assert not _verdict(report, GateConfig())["passed"]
    assert _verdict(report, GateConfig(max_patrol_utility_drop=3.5))["passed"]
    with pytest.raises(ValueError):
        GateConfig(max_patrol_utility_drop=-1.0)


def test_an_optional_privacy_bar_fails_a_patrol_that_is_merely_better_than_undefended() -> None:
    """The demo's seeds 1 and 2: below the undefended model, so the default verdict passes, yet legible."""
    report = _report(undefended=_variant(96.2, 0.990), patrol=_variant(95.4, 0.927))
    assert _verdict(report, GateConfig())["passed"]
    verdict = _verdict(report, GateConfig(max_patrol_worst_ssim=0.5))
    assert not verdict["passed"] and any("above gate.max_patrol_worst_ssim 0.5" in r for r in verdict["reasons"])
    assert _verdict(report, GateConfig(max_patrol_worst_ssim=0.95))["passed"]
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError):
            GateConfig(max_patrol_worst_ssim=bad)


def test_privacy_gain_splits_the_drop_into_depth_pruning_and_terms() -> None:
    gain = _gain(undefended=_variant(90, 0.95), deep_undefended=_variant(90, 0.80), pruned=_variant(89, 0.70),
                 patrol=_variant(89, 0.55))
    assert gain["depth"] == pytest.approx(0.15) and gain["pruning"] == pytest.approx(0.10)
    assert gain["terms"] == pytest.approx(0.15) and gain["total"] == pytest.approx(0.40)
    assert gain["depth"] + gain["pruning"] + gain["terms"] == pytest.approx(gain["total"])
    assert gain["ratio"] == pytest.approx(0.55 / 0.95)
    partial = _gain(undefended=_variant(90, 0.95), patrol=_variant(89, 0.55))
    assert partial["depth"] is None and partial["terms"] is None and partial["total"] == pytest.approx(0.40)


def test_attacker_narrower_than_the_surrogate_is_raised_with_a_warning() -> None:
    with pytest.warns(PatrolWarning, match="narrower than PATROL's surrogate"):
        cfg = Config.model_validate({"attacks": {"blackbox": {"widths": [32, 256]}}})
    assert cfg.attacks.blackbox.widths == [128, 256]  # the surrogate's width (128) is attacked too
    assert Config.model_validate({"patrol": {"adversarial": {"enabled": False}},
                                  "attacks": {"blackbox": {"widths": [32]}}}).attacks.blackbox.widths == [32]


def test_empty_attacker_widths_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="at least one width"):
        Config.model_validate({"attacks": {"blackbox": {"widths": []}}})


def test_defenses_train_as_long_as_patrol_by_default() -> None:
    cfg = Config.model_validate({"patrol": {"mask_epochs": 2, "finetune_epochs": 8}})
    assert cfg.defense_epochs == 10
    assert Config.model_validate({"defenses": {"epochs": 3}}).defense_epochs == 3


def test_the_pruned_variant_ignores_keys_of_the_terms_it_switches_off() -> None:
    plain = pruned_config(Config(), "layer3")
    assert not plain.patrol.lipschitz.enabled and not plain.patrol.adversarial.enabled
    assert not plain.patrol.search.enabled and plain.patrol.prune.split == "layer3"
    tuned = Config.model_validate({"patrol": {"adversarial": {"lr": 0.01, "attacker_steps": 3, "beta": 2.0},
                                              "lipschitz": {"alpha": 0.2},
                                              "search": {"strengths": [1.0, 0.5]}}})
    assert config_hash(pruned_config(tuned, "layer3").model_dump(mode="json")) == \
        config_hash(plain.model_dump(mode="json"))  # a re-run after tuning the terms reuses `pruned`
    shorter = Config.model_validate({"patrol": {"finetune_epochs": 2}})
    assert pruned_config(shorter, "layer3").patrol.finetune_epochs == 2  # what it does train with is kept
