"""report.html: one self-contained page (images and plots embedded as PNG data URIs, no external URL, no script,
a Content-Security-Policy that forbids loading anything else), drawn from a validated report."""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

import numpy as np

from patrol_deploy.report.figures import (
    GRID_IMAGES,
    UNRECOGNIZABLE_SSIM,
    check_images,
    finite,
    image_strip,
    is_number,
    loss_plot,
    mask_scale_plot,
    png,
    tradeoff_plot,
    tradeoff_points,
)
from patrol_deploy.results import SCHEMA_VERSION, ReportError, plain, validate_report

ATTACK_ORDER = ("whitebox", "blackbox", "query_free")


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; vertical-align: middle; }
th { background: #f3f3f3; } td.name, th.name { text-align: left; }
tr.patrol td { background: #eef6ff; font-weight: 600; }
.grid td { text-align: left; } .grid img { image-rendering: pixelated; display: block; }
.note { background: #fafafa; border-left: 4px solid #888; padding: 0.6em 1em; }
.pass { color: #176f2c; font-weight: 700; } .fail { color: #b00020; font-weight: 700; }
.err { color: #b00020; } .small { font-size: 0.85em; color: #555; }
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

HOW_MEASURED = """
<p>Each number is what a real model-inversion attack recovered from the features the edge uploads, on the
evaluation images (the test split), which no attacker and no defense ever trained on.</p>
<ul>
<li><b>White-box rMLE</b>: gradient descent on an image until the edge's features match the uploaded ones,
with a total-variation prior (He et al., ACSAC 2019).</li>
<li><b>Black-box inverse network</b>: decoders from features to images (conv blocks at the feature resolution, or
an MLP head for vectors, then upsampling blocks), trained <em>from scratch</em> to convergence by querying the edge,
one per width in <code>attacks.blackbox.widths</code> (never narrower than PATROL's surrogate); the strongest is
reported. The claim is made at the larger data budget (every image that is not an evaluation image); the configured
auxiliary budget is shown beside it in the attack notes. It is never the surrogate decoder PATROL trained against: a
defense that only beats its own surrogate proves nothing.</li>
<li><b>Query-free</b>: a shadow edge trained on the auxiliary data with the cloud frozen, then inverted by rMLE.</li>
</ul>
<p>SSIM (Gaussian window 11, &sigma; 1.5, data range 1) and PSNR are computed on de-normalized images in [0, 1];
each cell is the mean &plusmn; standard deviation over the evaluation images, with a bootstrap 95&nbsp;% interval of
the mean in brackets. The <b>worst case</b> is the attack with
the highest SSIM; SSIM below 0.3 is treated as unrecognizable. Utility is measured on the same test split. Every
variant is compared at the same edge budget; a failed attack counts as a failure of the privacy claim, not as a
pass.</p>
"""


def _e(v: Any) -> str:
    return html.escape(str(v))


def _num(v: Any, fmt: str = ".3f") -> str:
    f = finite(v)
    return "n/a" if f is None else format(f, fmt)


def _si(v: Any) -> str:
    """14,647,296 -> 14.6 M (the exact count in the tooltip)."""
    f = finite(v)
    if f is None:
        return "n/a"
    for div, unit in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(f) >= div:
            return f'<span title="{int(f):,}">{f / div:.3g}{unit}</span>'
    return f"{f:g}"


def attack_names(report: dict[str, Any]) -> list[str]:
    """Every attack in the report, the built-in ones first in their usual order."""
    seen: list[str] = []
    privacies = [v["privacy"] for v in report["variants"].values()]
    if report.get("quantized"):
        privacies.append(report["quantized"]["privacy"])
    for p in privacies:
        seen += [a for a in p["attacks"] if a not in seen]
    rank = {a: i for i, a in enumerate(ATTACK_ORDER)}
    return sorted(seen, key=lambda a: (rank.get(a, len(rank)), seen.index(a)))


def _attack_cell(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "<td>&ndash;</td>"
    if entry.get("error"):
        return f'<td class="err" title="{_e(entry["error"])}">failed</td>'
    ci = entry.get("ssim_ci95")
    interval = f" [{_num(ci[0])}, {_num(ci[1])}]" if isinstance(ci, list) and len(ci) == 2 else ""
    return (f"<td>{_num(entry.get('ssim'))} &plusmn; {_num(entry.get('ssim_std'))}"
            f"<span class=\"small\">{interval}</span><br>"
            f"<span class=\"small\">{_num(entry.get('psnr'), '.1f')} &plusmn; {_num(entry.get('psnr_std'), '.1f')}"
            " dB</span></td>")


def _worst_cell(privacy: dict[str, Any]) -> str:
    worst = finite(privacy.get("worst_ssim"))
    label = _e(privacy.get("worst_attack") or "")
    if worst is None:
        return f'<td class="err">n/a<br><span class="small">{label} failed</span></td>' if label else "<td>n/a</td>"
    mark = "" if worst >= UNRECOGNIZABLE_SSIM else " &#10003;"
    return f"<td><b>{worst:.3f}</b>{mark}<br><span class=\"small\">{label}</span></td>"


def numbers_table(report: dict[str, Any]) -> str:
    attacks = attack_names(report)
    metric = _e(report["utility_metric"])
    head = "".join(f"<th>{_e(a)}<br><span class=\"small\">SSIM / PSNR</span></th>" for a in attacks)
    rows = [f'<table id="numbers-table"><tr><th class="name">variant</th><th>split</th><th>edge MACs</th>'
            f"<th>edge params</th><th>upload bytes</th><th>{metric} (%)</th>{head}<th>worst SSIM</th></tr>"]
    for name, v in report["variants"].items():
        s = v["split"]
        cells = "".join(_attack_cell(v["privacy"]["attacks"].get(a)) for a in attacks)
        shape = "&times;".join(str(d) for d in s["feature_shape"])
        rows.append(f'<tr class="{"patrol" if name == "patrol" else ""}"><td class="name">{_e(name)}'
                    f'{_variant_label(v)}</td>'
                    f'<td>{_e(s["name"])}<br><span class="small">{shape}</span></td><td>{_si(s["edge_macs"])}</td>'
                    f'<td>{_si(s["edge_params"])}</td><td>{_si(s["upload_bytes"])}</td>'
                    f'<td>{_num(v["utility"], ".2f")}</td>{cells}{_worst_cell(v["privacy"])}</tr>')
    rows.append("</table>")
    return "\n".join(rows)


def _variant_label(v: dict[str, Any]) -> str:
    """Under a variant's name: a reference over budget, a terminal split, or how a defense was matched."""
    labels = []
    if v["split"].get("fits_budget") is False:
        labels.append("reference, over budget")
    if v["split"].get("terminal"):
        labels.append("terminal split")
    params = v.get("params") or {}
    if "matched" in params:
        gap = finite(params.get("val_gap_to_target"))
        gap_s = f", val gap {gap:+.2f}" if gap is not None else ""
        labels.append(("matched" if params["matched"] else "UNMATCHED") + gap_s)
    return "".join(f'<br><span class="small">{_e(label)}</span>' for label in labels)


def gain_line(report: dict[str, Any]) -> str:
    """One line: how much of PATROL's drop in worst-case SSIM comes from depth, pruning and PATROL's terms."""
    gain = report.get("privacy_gain") or {}
    if finite(gain.get("total")) is None:
        return ""
    parts = [f"{label} {_num(gain.get(step), '+.3f')}" for step, label in
             (("depth", "depth (undefended &rarr; deep_undefended)"), ("pruning", "pruning (&rarr; pruned)"),
              ("terms", "PATROL's training terms (pruned &rarr; patrol)")) if finite(gain.get(step)) is not None]
    return (f"<p>Worst-case SSIM drop {_num(gain['total'], '.3f')} from undefended to PATROL: "
            f"{'; '.join(parts) if parts else 'no ablation variants in this run'}.</p>")


def verdict_line(report: dict[str, Any]) -> str:
    verdict = report.get("patrol_verdict")
    if not verdict:
        return ""
    if verdict["passed"]:
        return '<p>PATROL verdict: <span class="pass">PASSED</span> (utility and privacy against the baseline).</p>'
    reasons = "".join(f"<li>{_e(r)}</li>" for r in verdict["reasons"])
    return f'<p>PATROL verdict: <span class="fail">FAILED</span></p><ul>{reasons}</ul>'


def _notes_list(report: dict[str, Any]) -> str:
    items = []
    for name, v in report["variants"].items():
        for attack, entry in v["privacy"]["attacks"].items():
            notes = entry.get("notes") or []
            for note in [notes] if isinstance(notes, str) else notes:
                items.append(f"<li><b>{_e(name)} / {_e(attack)}</b>: {_e(note)}</li>")
            if entry.get("error"):
                items.append(f'<li class="err"><b>{_e(name)} / {_e(attack)} failed</b>: {_e(entry["error"])}</li>')
    if not items:
        return ""
    return f"<details><summary>Attack notes ({len(items)})</summary><ul class=\"small\">{''.join(items)}</ul></details>"


def reconstruction_grid(originals: np.ndarray, reconstructions: Mapping[str, Mapping[str, Any]],
                        report: dict[str, Any]) -> str:
    """Per variant: the original images, then each attack's reconstructions of the same images."""
    n = min(GRID_IMAGES, len(originals))
    top = png(image_strip(originals[:n]))
    blocks = []
    for variant, by_attack in reconstructions.items():
        if variant not in report["variants"]:
            raise ReportError(f"reconstructions are given for '{variant}', which is not among the report's variants "
                              f"({', '.join(report['variants'])}).", "pass reconstructions keyed by variant name")
        attacks = report["variants"][variant]["privacy"]["attacks"]
        rows = [f'<tr><td class="name">original</td><td><img src="{top}" alt="original images"></td></tr>']
        for attack, images in by_attack.items():
            rec = check_images(images, f"reconstructions[{variant!r}][{attack!r}]")
            if rec.shape[1:] != originals.shape[1:] or len(rec) < n:
                raise ReportError(f"reconstructions[{variant!r}][{attack!r}] have shape {rec.shape}, the originals "
                                  f"{originals.shape}.", "pass each attack's reconstructions of the same images")
            entry = attacks.get(attack, {})
            score = f"SSIM {_num(entry.get('ssim'))}, PSNR {_num(entry.get('psnr'), '.1f')} dB"
            rows.append(f'<tr><td class="name">{_e(attack)}<br><span class="small">{score}</span></td>'
                        f'<td><img src="{png(image_strip(rec[:n]))}" alt="{_e(attack)} reconstructions of '
                        f'{_e(variant)}"></td></tr>')
        blocks.append(f'<h3>{_e(variant)}</h3><table class="grid">{"".join(rows)}</table>')
    return "\n".join(blocks)


def quantized_section(report: dict[str, Any]) -> str:
    q = report.get("quantized")
    if not q:
        return ""
    gate = q["gate"]
    verdict = '<span class="pass">PASSED</span>' if gate["passed"] else '<span class="fail">FAILED</span>'
    reasons = "".join(f"<li>{_e(r)}</li>" for r in gate["reasons"])
    attacks = attack_names(report)
    cells = "".join(_attack_cell(q["privacy"]["attacks"].get(a)) for a in attacks)
    head = "".join(f"<th>{_e(a)}</th>" for a in attacks)
    coverage = ""
    if isinstance(q.get("ops_total"), int):
        floats = "".join(f"<li>{_e(f['op'])}: {_e(f['why'])}</li>" for f in q.get("float_ops", []))
        coverage = (f'<p>INT8 covers {q["ops_quantized"]} of {q["ops_total"]} convolutions and GEMMs '
                    f'({_e(q.get("calibration_method") or "?")} calibration, '
                    f'{_e(", ".join(q.get("weight_scales") or []) or "?")} weight scales)'
                    + (f'; in float:</p><ul class="small">{floats}</ul>' if floats else ".</p>"))
    tried = ""
    if len(q.get("attempts") or []) > 1:
        lines = "".join(f'<tr><td>{_e(a["method"])}</td><td>{_num(a.get("utility"), ".2f")}</td>'
                        f'<td>{_num(a.get("worst_ssim"))}</td><td>{"passed" if a["passed"] else "failed: "}'
                        f'{_e("; ".join(a["reasons"]))}</td></tr>' for a in q["attempts"])
        tried = (f'<p>Attempts, in order:</p><table><tr><th>method</th><th>{_e(report["utility_metric"])} (%)</th>'
                 f"<th>worst SSIM</th><th>gate</th></tr>{lines}</table>")
    return (f'<section id="quantized"><h2>Quantized edge ({_e(q["mode"])})</h2>'
            f"<p>Privacy gate: {verdict}</p>{f'<ul>{reasons}</ul>' if reasons else ''}{coverage}{tried}"
            f'<table><tr><th>{_e(report["utility_metric"])} (%)</th>{head}<th>worst SSIM</th></tr>'
            f'<tr><td>{_num(q["utility"], ".2f")}</td>{cells}{_worst_cell(q["privacy"])}</tr></table></section>')


def search_section(report: dict[str, Any]) -> str:
    """PATROL's search: every (split, strength) candidate, the chosen one marked, and why it won."""
    search = report.get("patrol_search")
    if not search:
        return ""
    metric = _e(report["utility_metric"])
    rows = "".join(
        f'<tr class="{"patrol" if c["chosen"] else ""}"><td class="name">{_e(c["split"])}</td>'
        f'<td>{_num(c["strength"], "g")}</td><td>{"yes" if c["fits"] else "no"}</td><td>{_si(c["edge_macs"])}</td>'
        f'<td>{_num(c["val_utility"], ".2f")}</td><td>{_num(c["drop"], ".2f")}</td><td>{_num(c["proxy_ssim"])}</td>'
        f'<td>{_num(c["seconds"], ".0f")}</td><td>{"&#9733; chosen" if c["chosen"] else ""}</td></tr>'
        for c in search["candidates"])
    images = search.get("guard_images")
    judged = "validation" if images is None else f"selection ({images} validation + auxiliary images)"
    failed = ("" if search["passed"] else
              f'<p class="fail">No candidate kept {judged} utility within {_num(search["max_utility_drop"], "g")} '
              "points of the baseline; the closest one is chosen and the verdict fails.</p>")
    coarse = f'<p class="fail">{_e(search["coarse_guard"])}</p>' if search.get("coarse_guard") else ""
    return (f'<section id="search"><h2>PATROL\'s search</h2>{failed}{coarse}<p>{_e(search["why"])}</p>'
            f'<p class="small">Baseline {_e(judged)} {metric}: {_num(search["baseline_val_utility"], ".2f")}; '
            f'largest drop allowed: {_num(search["max_utility_drop"], "g")} points; search '
            f'{"on" if search["enabled"] else "off"}.</p>'
            f'<table id="search-table"><tr><th class="name">split</th><th>strength</th><th>fits budget</th>'
            f"<th>edge MACs</th><th>{'validation' if images is None else 'selection'} {metric} (%)</th>"
            "<th>drop (points)</th><th>proxy SSIM</th>"
            f"<th>seconds</th><th></th></tr>{rows}</table></section>")


def _setup_section(report: dict[str, Any]) -> str:
    budget = report["budget"]
    limits = ", ".join(f"{_e(k)} {_si(v) if is_number(v) else _e(v)}" for k, v in budget.items() if v is not None)
    data = report["data"]
    splits = data.get("splits", {})
    sizes = ", ".join(f"{_e(k)} {_e(v)}" for k, v in splits.items()) if isinstance(splits, dict) else ""
    facts = [f"<li>edge budget: {limits or 'none'}</li>",
             f"<li>data: {_e(data.get('source', '?'))}, {_e(data.get('channels', '?'))} channel(s), "
             f"{_e(data.get('image_size', '?'))} px; splits: {sizes}"
             f"{'; skipped files: ' + _e(data['skipped_files']) if data.get('skipped_files') else ''}</li>"]
    train = (report.get("config") or {}).get("train") or {}
    if "augment" in train:
        facts.append(f"<li>training augmentation: {_e(train['augment'])}</li>")
    for name, v in report["variants"].items():
        if v["params"]:
            params = ", ".join(f"{_e(k)}={_e(p)}" for k, p in v["params"].items())
            facts.append(f"<li>{_e(name)}: {params}</li>")
    return f'<section id="setup"><h2>Setup</h2><ul class="small">{"".join(facts)}</ul></section>'


def render_html(report: dict[str, Any], originals: np.ndarray,
                reconstructions: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """The whole report as one offline HTML page (PNG data URIs, no external URLs, no script)."""
    report = plain(report)
    validate_report(report)
    originals = check_images(originals, "originals")
    grid = reconstruction_grid(originals, reconstructions, report)  # before the plots: bad images fail fast
    loss = loss_plot(report)
    loss_html = (f'<img src="{loss}" alt="black-box decoder loss curves">' if loss
                 else "<p>No black-box loss curves were recorded.</p>")
    scales = mask_scale_plot(report)
    scales_html = (f'<section id="mask-scales"><h2>Mask scales before pruning</h2><img src="{scales}" '
                   'alt="histogram of normalized mask scales"></section>' if scales else "")
    missing = [name for name, u, ssim in tradeoff_points(report) if finite(u) is None or finite(ssim) is None]
    unplotted = (f'<p class="small">Not plotted, because an attack failed or utility is unknown: '
                 f'{_e(", ".join(missing))}.</p>' if missing else "")
    patrol = report["variants"].get("patrol")
    undefended = report["variants"].get("undefended")
    headline = ""
    if patrol and undefended:
        headline = (f"<p>Worst-case SSIM {_num(undefended['privacy']['worst_ssim'])} undefended at "
                    f"{_e(undefended['split']['name'])} &rarr; <b>{_num(patrol['privacy']['worst_ssim'])}</b> with "
                    f"PATROL at {_e(patrol['split']['name'])}; {_e(report['utility_metric'])} "
                    f"{_num(undefended['utility'], '.2f')} &rarr; {_num(patrol['utility'], '.2f')}.</p>"
                    f"{gain_line(report)}{verdict_line(report)}")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>patrol-deploy privacy report</title><style>{CSS}</style></head>
<body>
<h1>patrol-deploy privacy report</h1>
{headline}
<section id="numbers"><h2>Numbers</h2>{numbers_table(report)}
<p class="small">&#10003; = below SSIM 0.3 (unrecognizable). Hover a rounded count for the exact value.</p>
{_notes_list(report)}</section>
<section id="how"><h2>How these numbers were measured</h2><div class="note">{HOW_MEASURED}</div></section>
<section id="tradeoff"><h2>Privacy and utility</h2>
<img src="{tradeoff_plot(report)}" alt="worst-case SSIM against utility per variant">{unplotted}</section>
<section id="reconstructions"><h2>What the attacker sees</h2>
<p class="small">The first {min(GRID_IMAGES, len(originals))} evaluation images and each attack's reconstruction of
them from the uploaded features.</p>
{grid}</section>
<section id="loss"><h2>Black-box decoder training</h2>{loss_html}</section>
{search_section(report)}
{scales_html}
{quantized_section(report)}
{_setup_section(report)}
<p class="small">report.json schema version {SCHEMA_VERSION}; see docs/report.md.</p>
</body></html>
"""
