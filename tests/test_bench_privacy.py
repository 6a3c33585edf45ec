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


def test_realdata_bench_reads_drop_ratios_and_stage_times(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/bench_realdata.py: per seed, PATROL's drop against the baseline, its SSIM ratios, and PATROL's stage
    time against the baseline's training, from the run folder; a missing folder is a clear error."""
    import json

    from patrol_deploy.errors import PatrolError
    from patrol_deploy.runfolder import MANIFEST_VERSION

    bench = load_script("bench_realdata")
    run = tmp_path / "seed-0"
    run.mkdir()
    (run / "comparison.json").write_text(json.dumps({**_report(0.9, 0.6, 0.45, 80.0), "config": {}}))
    stages = {"train": {"started": 100.0, "ended": 160.0}, "patrol": {"started": 160.0, "ended": 310.0}}
    (run / "manifest.json").write_text(json.dumps({"manifest_version": MANIFEST_VERSION, "stages": stages}))
    row = bench.per_seed(tmp_path, [0])[0]
    assert row["drop_points"] == 0.0 and row["split"] == "layer3"
    assert row["patrol_over_undefended"] == pytest.approx(0.5) and row["patrol_over_pruned"] == pytest.approx(0.75)
    assert row["time_ratio"] == pytest.approx(150 / 60)
    assert "reference_minus_baseline" not in row
    with_reference = bench.per_seed(tmp_path, [0], {0: 82.5})[0]
    assert with_reference["reference_minus_baseline"] == pytest.approx(2.5)  # the reference beat the baseline
    (run / "comparison.json").unlink()  # a seed whose comparison never finished
    with pytest.raises(PatrolError, match="holds no finished comparison"):
        bench.per_seed(tmp_path, [0])
    assert bench.main(["--data", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_realdata_reference_is_resnet20_with_he_et_al_recipe() -> None:
    """The reference the benchmark holds the baseline to is ResNet-20 (19 3x3 convolutions + 1 linear layer on the
    main path) trained with He et al.'s CIFAR hyper-parameters."""
    from torch import nn

    from patrol_deploy.config import load_config
    from patrol_deploy.models import create_model

    bench = load_script("bench_realdata")
    cfg = load_config(None, [*bench.SETTINGS, *bench.REFERENCE, f"train.epochs={bench.REFERENCE_EPOCHS}"])
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.batch_size, cfg.train.augment) == (0.1, 1e-4, 128,
                                                                                                "crop_flip")
    model = create_model(cfg.model, 10, 3)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(convs) + len(linears) == 20
    assert [c.out_channels for c in convs][::6] == [16, 16, 32, 64]
