"""report.json validation and report.html rendering, checked as data and in a real headless Chromium."""

from __future__ import annotations

import base64
import copy
import io
import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from patrol_deploy.report import (
    CSP,
    REPORT_HTML,
    REPORT_JSON,
    ReportError,
    render_html,
    validate_report,
    write_report,
)

VARIANTS = ["undefended", "patrol", "noise", "dropout", "nopeek", "adversarial_only"]
ATTACKS = ["whitebox", "blackbox", "query_free"]
# (split, edge MACs, utility, worst-case SSIM) per variant: PATROL prunes to fit a deeper split in the same budget.
PLAN = {"undefended": ("layer1", 14_647_296, 97.1, 0.91), "patrol": ("layer2", 13_900_112, 96.2, 0.27),
        "noise": ("layer1", 14_647_296, 93.0, 0.74), "dropout": ("layer1", 14_647_296, 94.5, 0.80),
        "nopeek": ("layer1", 14_647_296, 95.8, 0.66), "adversarial_only": ("layer1", 14_647_296, 96.0, 0.71)}


def attack_entry(ssim: float, rng: np.random.Generator, attack: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"ssim": ssim, "ssim_std": 0.05, "psnr": 10 + 15 * ssim, "psnr_std": 1.2,
                             "notes": [f"{attack}: synthetic test numbers"], "seconds": 1.5}
    if attack == "blackbox":
        epochs = 12
        val = list(0.2 * (1 - ssim) + 0.8 * np.exp(-np.arange(epochs) / 3) + rng.uniform(0, 0.01, epochs))
        entry["loss_curve"] = {"epoch": [float(e + 1) for e in range(epochs)], "train": [v * 0.9 for v in val],
                               "val": val}
    else:
        entry["loss_curve"] = {"step": [0.0, 100.0, 200.0], "loss": [1.0, 0.4, 0.3]}
    return entry


def sample_report() -> dict[str, Any]:
    """A plausible report as the evaluation stage writes it (one failed attack included)."""
    rng = np.random.default_rng(0)
    variants = {}
    for name in VARIANTS:
        split, macs, utility, worst = PLAN[name]
        attacks = {a: attack_entry(worst - 0.1 * (2 - i), rng, a) for i, a in enumerate(ATTACKS)}
        privacy: dict[str, Any] = {"attacks": attacks, "worst_ssim": worst, "worst_attack": "query_free"}
        if name == "nopeek":  # a failed attack makes the worst case unknown (NaN), as the attack suite records it
            attacks["query_free"] = {"ssim": math.nan, "ssim_std": math.nan, "psnr": math.nan, "psnr_std": math.nan,
                                     "notes": [], "loss_curve": None, "error": "RuntimeError: shadow training diverged"}
            privacy.update(worst_ssim=math.nan, worst_attack="query_free", errors={"query_free": "diverged"})
        shape = [16, 32, 32] if split == "layer1" else [32, 16, 16]
        variants[name] = {
            "split": {"name": split, "edge_macs": macs, "edge_params": 14_192, "feature_shape": shape,
                      "upload_bytes": 4 * int(np.prod(shape))},
            "utility": utility, "utility_detail": {"accuracy": utility},
            "params": {"beta": 4.0, "alpha": 0.05} if name == "patrol" else {}, "privacy": privacy}
    quantized_attacks = {a: attack_entry(0.3 - 0.1 * (2 - i), rng, a) for i, a in enumerate(ATTACKS)}
    return {
        "schema_version": 1, "utility_metric": "accuracy",
        "budget": {"edge_macs": 15_000_000, "edge_params": None, "upload_bytes": None, "upload_dtype": "float32"},
        "data": {"source": "mnist", "image_size": 32, "channels": 1, "num_classes": 10,
                 "splits": {"train": 2750, "val": 300, "test": 1000, "aux": 1000, "calib": 200}, "skipped_files": 0},
        "variants": variants,
        "quantized": {"mode": "int8", "utility": 95.9,
                      "privacy": {"attacks": quantized_attacks, "worst_ssim": 0.3, "worst_attack": "query_free"},
                      "gate": {"passed": False, "reasons": ["worst-case SSIM rose by 0.03 after INT8 (limit 0.02)"]}},
    }


def sample_images(channels: int = 1) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Real digits as originals; reconstructions blurred and noised more for better-defended variants."""
    digits = load_digits().images[:10].astype(np.float32) / 16.0
    originals = np.kron(digits, np.ones((4, 4), np.float32))[:, None]  # 10 x 1 x 32 x 32
    if channels == 3:
        originals = np.concatenate([originals, originals[:, :, ::-1] * 0.5, 1 - originals], axis=1)
    rng = np.random.default_rng(1)
    recs = {}
    for name in VARIANTS:
        worst = PLAN[name][3]
        recs[name] = {a: np.clip(worst * originals + (1 - worst) * rng.uniform(0, 1, originals.shape), 0, 1)
                      .astype(np.float32) for a in ATTACKS}
    return originals, recs


@pytest.fixture(scope="module")
def page() -> str:
    originals, recs = sample_images()
    return render_html(sample_report(), originals, recs)


def data_uris(text: str) -> list[str]:
    return re.findall(r'src="(data:[^"]*)"', text)


def test_the_sample_is_valid() -> None:
    validate_report(sample_report())


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("schema_version", None, "'schema_version' is missing"),
    ("schema_version", 2, "schema_version 2 is not supported"),
    ("variants.patrol.split.edge_macs", None, "'variants.patrol.split.edge_macs' is missing"),
    ("variants.patrol.split.edge_macs", 1.5e7, "'variants.patrol.split.edge_macs' should be int, got float"),
    ("variants.undefended.privacy.attacks.blackbox.ssim", None,
     "'variants.undefended.privacy.attacks.blackbox.ssim' is missing"),
    ("variants.noise.utility", "high", "'variants.noise.utility' should be number or null, got str"),
    ("variants.noise.split.feature_shape", ["a"], "'variants.noise.split.feature_shape.0' should be int, got str"),
    ("variants.dropout.privacy.worst_attack", 3, "'variants.dropout.privacy.worst_attack' should be str or null"),
    ("variants.patrol.privacy.attacks.whitebox.loss_curve", {"loss": ["x"]}, "loss_curve' should be curve"),
    ("variants.patrol.privacy.attacks.whitebox.notes", [1], "notes' should be notes"),
    ("variants.patrol.utility_detail", None, "'variants.patrol.utility_detail' is missing"),
    ("quantized.gate.passed", None, "'quantized.gate.passed' is missing"),
    ("quantized.gate.passed", "yes", "'quantized.gate.passed' should be bool, got str"),
    ("quantized.gate.reasons", [1], "'quantized.gate.reasons.0' should be str, got int"),
    ("variants", {}, "'variants' is empty"),
])
def test_validation_names_the_key(path: str, value: Any, expected: str) -> None:
    assert_invalid(sample_report(), path, value, expected)


def assert_invalid(report: dict[str, Any], path: str, value: Any, expected: str) -> None:
    """Set (or, with value None, delete) the dotted `path` (list indices as numbers) and expect a ReportError
    that names `expected`, with a fix and exit code 2."""
    *parents, last = path.split(".")
    node: Any = report
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[last]
    else:
        node[last] = value
    with pytest.raises(ReportError) as info:
        validate_report(report)
    assert expected in str(info.value)
    assert info.value.fix and info.value.exit_code == 2


def test_not_a_mapping() -> None:
    with pytest.raises(ReportError, match="should be a JSON object, got list"):
        validate_report([])


def test_optional_parts() -> None:
    report = sample_report()
    del report["quantized"]
    del report["variants"]["patrol"]["privacy"]["attacks"]["blackbox"]["loss_curve"]
    report["variants"]["patrol"]["privacy"]["attacks"]["whitebox"]["notes"] = "one note as a string"
    validate_report(report)


def test_page_shows_every_variant_attack_and_section(page: str) -> None:
    for name in VARIANTS + ATTACKS:
        assert f">{name}<" in page, name
    assert page.count("<tr") >= 1 + len(VARIANTS)
    for section in ("numbers", "how", "tradeoff", "reconstructions", "loss", "quantized", "setup"):
        assert f'<section id="{section}">' in page
    assert "trained <em>from scratch</em>" in page and "every image that is not an evaluation image" in page
    assert 'class="fail">FAILED' in page and "rose by 0.03 after INT8" in page
    assert "RuntimeError: shadow training diverged" in page  # the failed attack is shown, not hidden
    assert "Not plotted, because an attack failed or utility is unknown: nopeek." in page
    assert '<span title="14,647,296">14.6 M</span>' in page
    assert "0.270</b> &#10003;" in page  # PATROL's worst case is below the 0.3 line


def test_page_is_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()
    assert not re.search(r'(src|href)="(?!data:image/png;base64,)', page)
    uris = data_uris(page)
    assert len(uris) == 2 + len(VARIANTS) * (1 + len(ATTACKS)) + 0  # two plots + a grid row per attack and original
    for uri in uris:
        img = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        img.verify()
        assert img.format == "PNG" and img.width > 0 and img.height > 0


def test_grid_shows_the_first_eight_images_enlarged(page: str) -> None:
    strip = Image.open(io.BytesIO(base64.b64decode(data_uris(page)[2].split(",", 1)[1])))  # first originals row
    assert strip.height == 64 and strip.width == 8 * 64 + 7 * 2  # 32 px tiles doubled, 2 px gaps
    assert strip.mode == "L"


def test_rgb_images_and_bad_shapes() -> None:
    originals, recs = sample_images(channels=3)
    page = render_html(sample_report(), originals, recs)
    strip = Image.open(io.BytesIO(base64.b64decode(data_uris(page)[2].split(",", 1)[1])))
    assert strip.mode == "RGB"
    recs["patrol"]["blackbox"] = recs["patrol"]["blackbox"][:, :1]
    with pytest.raises(ReportError, match=r"reconstructions\['patrol'\]\['blackbox'\] have shape"):
        render_html(sample_report(), originals, recs)
    with pytest.raises(ReportError, match="not among the report's variants"):
        render_html(sample_report(), originals, {"mystery": {}})
    with pytest.raises(ReportError, match="originals: expected images shaped N,C,H,W"):
        render_html(sample_report(), originals[0], {})


def test_write_report(tmp_path: Path) -> None:
    originals, recs = sample_images()
    report = sample_report()
    report["variants"]["patrol"]["utility"] = np.float32(96.2)  # numpy numbers from a stage are accepted
    report["variants"]["patrol"]["split"]["feature_shape"] = (32, 16, 16)
    before = copy.deepcopy(report)
    paths = write_report(tmp_path / "eval", report, originals, recs)
    assert [p.name for p in paths] == [REPORT_JSON, REPORT_HTML]
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted([REPORT_HTML, REPORT_JSON])

    def refuse(constant: str) -> None:
        raise ValueError(f"non-standard JSON constant {constant}")

    data = json.loads(paths[0].read_text(encoding="utf-8"), parse_constant=refuse)  # strict JSON: no NaN
    assert data["variants"]["nopeek"]["privacy"]["worst_ssim"] is None
    assert data["variants"]["patrol"]["split"]["feature_shape"] == [32, 16, 16]
    assert data["variants"]["patrol"]["utility"] == pytest.approx(96.2, abs=1e-4)
    validate_report(data)
    assert paths[1].read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    assert math.isnan(report["variants"]["nopeek"]["privacy"]["worst_ssim"])  # the caller's dict is untouched
    assert report.keys() == before.keys()


def test_invalid_report_writes_nothing(tmp_path: Path) -> None:
    originals, recs = sample_images()
    report = sample_report()
    del report["budget"]
    with pytest.raises(ReportError, match="'budget' is missing"):
        write_report(tmp_path, report, originals, recs)
    assert list(tmp_path.iterdir()) == []


# --- a real browser ----------------------------------------------------------------------------------------------

CHECK_SCRIPT = """<script>
window.__problems = [];
const problem = e => window.__problems.push('error: ' + (e.message || e.target.outerHTML.slice(0, 80)));
window.addEventListener('error', problem, true);
document.addEventListener('securitypolicyviolation', e => window.__problems.push('csp: ' + e.violatedDirective));
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const marker = document.createElement('pre');
  marker.id = 'render-check';
  marker.textContent = 'RENDER-CHECK ' + JSON.stringify({
    images: images.length,
    drawn: images.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0).length,
    rows: document.querySelectorAll('#numbers-table tr').length,
    width: document.documentElement.scrollWidth, height: document.documentElement.scrollHeight,
    problems: window.__problems});
  document.body.appendChild(marker);
});
</script>"""


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> tuple[str | None, str]:
    """An installed Chromium or Chrome: PATROL_CHROMIUM (a name or a path) if set, else the first of BROWSERS on
    PATH; returns (binary, reason to skip when there is none)."""
    chosen = os.environ.get("PATROL_CHROMIUM")
    if chosen:
        return shutil.which(chosen), f"PATROL_CHROMIUM={chosen} is not an executable Chromium or Chrome"
    found = next((b for b in map(shutil.which, BROWSERS) if b), None)
    return found, (f"no Chromium or Chrome found ({', '.join(BROWSERS)}): install one (scripts/dev.py test does, "
                   "as root with apt-get) or set PATROL_CHROMIUM=/path/to/chrome to run the browser test")


BROWSER, NO_BROWSER = find_browser()


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = BROWSER
    assert binary is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--enable-logging=stderr",
             f"--user-data-dir={tmp_path / 'profile'}"]
    return subprocess.run([binary, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(BROWSER is None, reason=NO_BROWSER)
def test_page_renders_in_headless_chromium(page: str, tmp_path: Path) -> None:
    # The check script is added to a copy; the page's own policy must allow it, and nothing else.
    checked = page.replace(CSP, CSP + "; script-src 'unsafe-inline'").replace("<head>", "<head>" + CHECK_SCRIPT, 1)
    (tmp_path / "checked.html").write_text(checked, encoding="utf-8")
    run = chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", (tmp_path / "checked.html").as_uri())
    assert run.returncode == 0, run.stderr[-2000:]
    found = re.search(r"RENDER-CHECK (\{.*?\})</pre>", run.stdout)
    assert found, run.stdout[-2000:] + run.stderr[-2000:]
    check = json.loads(found.group(1).replace("&quot;", '"'))
    expected_images = len(data_uris(page))
    assert check == {**check, "images": expected_images, "drawn": expected_images, "problems": []}
    assert check["rows"] == 1 + len(VARIANTS)
    assert check["width"] > 600 and check["height"] > 2000
    assert "Uncaught" not in run.stderr and "CONSOLE" not in run.stderr

    # The unmodified page as a person sees it: a screenshot that is not blank.
    (tmp_path / REPORT_HTML).write_text(page, encoding="utf-8")
    shot = tmp_path / "report.png"
    run = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", "--hide-scrollbars",
                   (tmp_path / REPORT_HTML).as_uri())
    assert shot.is_file(), run.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (2400, 1280)
    assert pixels.std() > 20 and (pixels < 128).mean() > 0.02  # text, tables and pictures, not an empty page
    assert "Uncaught" not in run.stderr


def test_page_shows_intervals_the_gain_split_the_verdict_and_matching() -> None:
    report = sample_report()
    report["variants"]["patrol"]["privacy"]["attacks"]["blackbox"]["ssim_ci95"] = [0.412, 0.468]
    report["privacy_gain"] = {"depth": 0.1, "pruning": 0.2, "terms": 0.05, "total": 0.35, "ratio": 0.6}
    report["patrol_verdict"] = {"passed": False, "reasons": ["PATROL loses 3.10 points of accuracy"]}
    report["variants"]["noise"]["params"].update(matched=False, val_gap_to_target=-2.5)
    report["variants"]["undefended"]["split"]["fits_budget"] = False
    originals, pictures = sample_images()
    html = render_html(report, originals, pictures)
    assert "[0.412, 0.468]" in html
    assert "depth (undefended &rarr; deep_undefended) +0.100" in html and "training terms" in html
    assert "PATROL verdict" in html and "PATROL loses 3.10 points" in html and 'class="fail">FAILED' in html
    assert "UNMATCHED, val gap -2.50" in html and "reference, over budget" in html
