"""Two runs of the toy pipeline with the same seed, in fresh folders, report the same numbers (docs/reliability.md)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from patrol_deploy.config import Config
from patrol_deploy.pipeline.run import run_all

from .test_pipeline import TOY  # the same toy pipeline

TOLERANCE = 1e-6  # absolute, on utility (points) and every attack's SSIM / PSNR; stated in docs/reliability.md



def report_numbers(report: dict[str, Any]) -> dict[str, float]:
    """'variant/utility' and 'variant/attack/ssim|psnr' for every variant of a report."""
    numbers = {}
    for name, variant in report["variants"].items():
        numbers[f"{name}/utility"] = variant["utility"]
        numbers[f"{name}/worst_ssim"] = variant["privacy"]["worst_ssim"]
        for attack, scores in variant["privacy"]["attacks"].items():
            numbers[f"{name}/{attack}/ssim"] = scores["ssim"]
            numbers[f"{name}/{attack}/psnr"] = scores["psnr"]
    return numbers


def test_same_seed_same_report(tmp_path: Path) -> None:
    cfg = Config.model_validate(TOY)
    first = report_numbers(run_all(cfg, tmp_path / "first", deploy=False))
    second = report_numbers(run_all(cfg, tmp_path / "second", deploy=False))
    assert first.keys() == second.keys() and len(first) >= 9
    assert all(math.isfinite(v) for v in first.values()), first
    differ = {k: (first[k], second[k]) for k in first if abs(first[k] - second[k]) > TOLERANCE}
    assert not differ, differ
