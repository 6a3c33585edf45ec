"""report.json's optional `patrol_search` and `mask_scales` keys: validated when present, drawn in report.html."""

from __future__ import annotations

import base64
import io
import re
from typing import Any

import pytest
from PIL import Image

from patrol_deploy.report import render_html, validate_report
from tests.test_report import assert_invalid, data_uris, sample_images, sample_report

WHY = ("'layer3' at strength 0.3 has the lowest proxy SSIM (0.550) of the 2 candidate(s) within 1.0 points of the "
       "baseline's validation utility (drop 0.60)")
BINS = [0.05 * i for i in range(41)]


def candidate(split: str, strength: float, val_utility: float | None, ssim: float | None,
              chosen: bool = False) -> dict[str, Any]:
    drop = None if val_utility is None else round(39.4 - val_utility, 2)
    return {"split": split, "strength": strength, "fits": val_utility is not None, "edge_macs": 14_900_000,
            "seconds": 120.5, "val_utility": val_utility, "drop": drop, "proxy_ssim": ssim,
            "within_drop": drop is not None and drop <= 1.0, "chosen": chosen}


def searched_report() -> dict[str, Any]:
    """The sample report with a search record (one candidate over budget) and a mask-scale histogram."""
    report = sample_report()
    report["patrol_search"] = {
        "enabled": True, "max_utility_drop": 1.0, "baseline_val_utility": 39.4,
        "candidates": [candidate("layer2", 1.0, 39.1, 0.61), candidate("layer3", 1.0, 37.0, None),
                       candidate("layer3", 0.3, 38.8, 0.55, chosen=True), candidate("layer4", 1.0, None, None)],
        "passed": True, "why": WHY}
    counts = [0] * 40
    counts[0], counts[1], counts[20], counts[39] = 100, 29, 250, 37  # 129 of 416 below 0.1
    report["mask_scales"] = {"bins": BINS, "counts": counts, "channels": 416, "near_zero_share": 129 / 416}
    return report


def render(report: dict[str, Any]) -> str:
    originals, recs = sample_images()
    return render_html(report, originals, recs)


def test_search_and_mask_scales_validate_and_render() -> None:
    report = searched_report()
    validate_report(report)
    page = render(report)
    table = re.search(r'<table id="search-table">.*?</table>', page, re.S)
    assert table is not None
    rows = table.group(0).split("<tr")[2:]
    assert len(rows) == 4
    assert ">layer4<" in rows[3] and "<td>no</td>" in rows[3] and "n/a" in rows[3]  # over budget: not measured
    assert [("&#9733; chosen" in r) for r in rows] == [False, False, True, False]
    assert 'class="patrol"' in rows[2] and "<td>38.80</td><td>0.60</td><td>0.550</td>" in rows[2]
    assert '<span title="14,900,000">14.9 M</span>' in rows[0]
    assert "PATROL's search" in page and "&#x27;layer3&#x27; at strength 0.3 has the lowest proxy SSIM" in page
    assert "No candidate kept" not in page
    assert '<h2>Mask scales before pruning</h2><img src="data:image/png;base64,' in page
    assert len(data_uris(page)) == len(data_uris(render(sample_report()))) + 1  # the histogram, once
    histogram = re.search(r'<section id="mask-scales">.*?src="data:image/png;base64,([^"]*)"', page, re.S)
    assert histogram is not None
    img = Image.open(io.BytesIO(base64.b64decode(histogram.group(1))))
    assert img.format == "PNG" and img.width > 300 and img.height > 200


def test_the_guard_images_and_a_coarse_guard_render() -> None:
    """A search record of this version names its selection images; one whose guard is coarser than the drop shows
    why. A record without them (an older folder) still says validation (test_failed_and_disabled_searches)."""
    report = searched_report()
    report["patrol_search"].update(guard_images=60, coarse_guard="one image is 1.67 points, coarser than 1")
    validate_report(report)
    page = render(report)
    assert "Baseline selection (60 validation + auxiliary images) accuracy: 39.40" in page
    assert "<th>selection accuracy (%)</th>" in page
    assert '<p class="fail">one image is 1.67 points, coarser than 1</p>' in page


def test_failed_and_disabled_searches() -> None:
    report = searched_report()
    report["patrol_search"].update(passed=False, why="no candidate kept validation utility within 1.0")
    assert "No candidate kept validation utility within 1 points" in render(report)
    report["patrol_search"] = {
        "enabled": False, "max_utility_drop": 1.0, "baseline_val_utility": None,
        "candidates": [candidate("layer3", 1.0, None, None, chosen=True) | {"fits": True}],
        "passed": True, "why": "search off (patrol.search.enabled=false)"}
    report["mask_scales"] = {"bins": BINS, "counts": [0] * 40, "channels": 0, "near_zero_share": None}
    validate_report(report)
    page = render(report)
    assert "search off (patrol.search.enabled=false)" in page and "&#9733; chosen" in page
    assert "<h2>Mask scales before pruning</h2>" in page


@pytest.mark.parametrize("value", ["absent", None])
def test_reports_without_the_keys_still_render(value: Any) -> None:
    report = sample_report()
    if value is None:
        report.update(patrol_search=None, mask_scales=None)
    validate_report(report)
    page = render(report)
    assert '<section id="search">' not in page and '<section id="mask-scales">' not in page


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("mask_scales.counts", [1] * 39, "'mask_scales.counts' has 39 entries for 41 bin edges (should be 40)"),
    ("mask_scales.counts", [1.5] * 40, "'mask_scales.counts.0' should be int, got float"),
    ("mask_scales.bins", [0.0, 1.0, 0.5], "'mask_scales.bins' should be an increasing list"),
    ("mask_scales.bins", [0.0, "x"], "'mask_scales.bins.1' should be number, got str"),
    ("mask_scales.channels", None, "'mask_scales.channels' is missing"),
    ("mask_scales.near_zero_share", "31 %", "'mask_scales.near_zero_share' should be number or null, got str"),
    ("mask_scales", [], "'mask_scales' should be dict or null, got list"),
    ("patrol_search.candidates.1.split", None, "'patrol_search.candidates.1.split' is missing"),
    ("patrol_search.candidates.0.drop", "0.3", "'patrol_search.candidates.0.drop' should be number or null"),
    ("patrol_search.candidates.2.chosen", 1, "'patrol_search.candidates.2.chosen' should be bool, got int"),
    ("patrol_search.candidates.0.edge_macs", 1.4e7, "'patrol_search.candidates.0.edge_macs' should be int"),
    ("patrol_search.candidates", [3], "'patrol_search.candidates.0' should be dict, got int"),
    ("patrol_search.passed", "yes", "'patrol_search.passed' should be bool, got str"),
    ("patrol_search.why", None, "'patrol_search.why' is missing"),
    ("patrol_search.baseline_val_utility", "39", "'patrol_search.baseline_val_utility' should be number or null"),
])
def test_validation_names_the_key(path: str, value: Any, expected: str) -> None:
    assert_invalid(searched_report(), path, value, expected)
