"""The report stage: RUN/report.json and RUN/report.html, rendered once, at the end of `run` and of `verify`.

Stages write only their own files; this one reads them: the comparison (RUN/comparison.json and the variants'
reconstructions, written by `compare`), the quantization attempts (RUN/verify/attempts.json) and the gate of
the edge that ships (RUN/verify/gate.json for PTQ, RUN/verify/qat/gate.json for QAT; the last attempt's).
A run folder of the previous layout kept the comparison in report.json itself: `comparison_of` reads it there.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.deployment.quantize import STAGES
from patrol_deploy.report import REPORT_JSON, write_report
from patrol_deploy.results import Attempt, GateDocument, typed
from patrol_deploy.runfolder import RunFolder, read_json, write_json

COMPARISON_STAGE = "comparison"
COMPARISON_JSON = "comparison.json"
VARIANTS = "variants"
ORIGINALS = "originals.npz"  # RUN/variants/originals.npz: the evaluation images, in [0, 1]
REPORT_STAGE = "report"
VERIFY_STAGE = "verify"  # `verify RUN`: RUN/verify/gate.json (RUN/verify/qat/gate.json for QAT's edge)
GATE_FILE = "gate.json"
ATTEMPTS_STAGE = "verify/attempts"
ATTEMPTS_JSON = "verify/attempts.json"
COVERAGE_KEYS = ("method", "ops_quantized", "ops_total", "float_ops", "weight_scales", "calibration_method")


def gate_stage(quantize_stage: str) -> str:
    """Where the gate of a quantize stage's edge is written: `verify` for `quantize`, `verify/qat` for QAT's."""
    return VERIFY_STAGE + quantize_stage.removeprefix("quantize")


def comparison_of(run: RunFolder) -> dict[str, Any] | None:
    """The comparison `run` wrote (with a PATROL variant and its config), else None.

    RUN/comparison.json; a run folder of the previous layout has none and kept the comparison in report.json,
    which is read without its `quantized` entry (the gate's, which the report stage adds)."""
    for name in (COMPARISON_JSON, REPORT_JSON):
        if run.path(name).is_file():
            data: dict[str, Any] = read_json(run.path(name))
            data.pop("quantized", None)
            if "patrol" in data.get("variants", {}) and isinstance(data.get("config"), dict):
                return data
            return None
    return None


def recorded_attempts(run: RunFolder) -> list[dict[str, Any]]:
    """The quantization attempts of `run`'s deployment, in order (RUN/verify/attempts.json), each checked as an
    `Attempt` (method, utility, worst_ssim, passed, reasons, and what else verify recorded)."""
    path = run.path(ATTEMPTS_JSON)
    return [typed(Attempt, a).model_dump() for a in read_json(path)] if path.is_file() else []


def record_attempts(run: RunFolder, attempts: list[dict[str, Any]], seed: int | None) -> None:
    started = time.time()
    run.record(ATTEMPTS_STAGE, [write_json(run.path(ATTEMPTS_JSON), attempts)], {}, seed=seed, started=started)


def judged_stage(run: RunFolder) -> str:
    """The quantize stage whose edge ships and is judged: the last attempt's; in a run folder of the previous
    layout (no attempts.json) the one report.json's `quantized` entry names; else PTQ's."""
    attempts = recorded_attempts(run)
    if attempts:
        return STAGES[attempts[-1]["method"]]
    report = read_json(run.path(REPORT_JSON)) if run.path(REPORT_JSON).is_file() else {}
    return STAGES[(report.get("quantized") or {}).get("method") or "ptq"]


def quantized_entry(run: RunFolder) -> dict[str, Any] | None:
    """report.json's `quantized` entry: the judged edge's gate (RUN/verify[/qat]/gate.json) and every attempt;
    None when that edge was never gated."""
    from patrol_deploy.pipeline.verify import quantized_coverage, quantized_onnx

    stage = judged_stage(run)
    gate_path = run.path(gate_stage(stage), GATE_FILE)
    if run.stage(gate_stage(stage)) is None or not gate_path.is_file():
        return None
    gate = typed(GateDocument, read_json(gate_path))
    d, ref = gate.deployed.model_dump(), gate.reference
    d.update(quantized_coverage(quantized_onnx(run, stage)[0]))
    return {"mode": d.get("mode", "int8"), "route": d.get("route"), "edge": d.get("edge"),
            "runtime": d.get("runtime"), "utility": d["utility"], "utility_detail": d["utility_detail"],
            "privacy": d["privacy"], **{k: d[k] for k in COVERAGE_KEYS if k in d},
            "float": {"utility": ref.utility, "worst_ssim": ref.privacy.worst_ssim},
            "gate": {"passed": gate.passed, "reasons": gate.reasons, **gate.limits},
            "attempts": recorded_attempts(run)}


def _originals(run: RunFolder, comparison: dict[str, Any]) -> np.ndarray:
    """The evaluation images in [0, 1]: RUN/variants/originals.npz, or (a run folder of the previous layout)
    loaded again from the data the comparison's config names."""
    path = run.path(VARIANTS, ORIGINALS)
    if path.is_file():
        with np.load(path) as npz:
            return np.asarray(npz["images"])
    from patrol_deploy.config import Config, validated
    from patrol_deploy.data import load_data
    from patrol_deploy.pipeline.compare import eval_images

    cfg = validated(Config, comparison["config"], f"the config recorded in {run.path(REPORT_JSON)}")
    return eval_images(load_data(cfg.data, cfg.seed), cfg)[1]


def render_report(run: RunFolder, with_gate: bool = True) -> dict[str, Any] | None:
    """Write RUN/report.json and RUN/report.html from the comparison and (`with_gate`) the shipped edge's gate,
    and record the report stage; returns the report (None when the run folder holds no comparison)."""
    comparison = comparison_of(run)
    if comparison is None:
        return None
    started = time.time()
    report = dict(comparison)
    quantized = quantized_entry(run) if with_gate else None
    if quantized is not None:
        report["quantized"] = quantized
    pictures = {}
    for name in report["variants"]:
        with np.load(run.path(VARIANTS, name, "reconstructions.npz")) as npz:
            pictures[name] = {k: npz[k] for k in npz.files}
    files = write_report(run.root, report, _originals(run, comparison), pictures)
    sources = [Path(COMPARISON_JSON), *([Path(ATTEMPTS_JSON)] if run.path(ATTEMPTS_JSON).is_file() else [])]
    run.record(REPORT_STAGE, files, {"from": [str(s) for s in sources]}, seed=comparison["config"].get("seed"),
               started=started)
    return report
