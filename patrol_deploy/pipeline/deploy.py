"""Quantize the PATROL edge attempt by attempt (`quantize.method`: ptq, qat, or auto = PTQ, the gate, and QAT
when the gate fails), gating each attempt; used by `run` (the gate is `verify`, every attempt kept in
RUN/verify/attempts.json, shown in report.json's `quantized.attempts`) and by `quantize --method` (the gate is
`gate`, against the model folder)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from patrol_deploy.config import Config
from patrol_deploy.deployment.quantize import STAGES
from patrol_deploy.errors import GateFailed
from patrol_deploy.progress import status
from patrol_deploy.relocate import DataLocation
from patrol_deploy.runfolder import RunFolder

METHODS = {"ptq": ("ptq",), "qat": ("qat",), "auto": ("ptq", "qat")}
LABELS = {"ptq": "post-training quantization (PTQ)", "qat": "quantization-aware fine-tuning (QAT)"}
Attempt = dict[str, Any]  # method, calibration_method, utility, worst_ssim, ops_quantized, ops_total, passed, reasons


def attempt_all(cfg: Config, step: Callable[[str, list[Attempt]], Attempt]) -> tuple[list[Attempt], GateFailed | None]:
    """Run `step(method, earlier attempts)` for each method of `quantize.method` until one passes the gate; returns
    the attempts and, when none passed, a GateFailed naming each attempt's reasons and the next thing to try."""
    plan = METHODS[cfg.quantize.method] if cfg.quantize.mode == "int8" else ("ptq",)
    attempts: list[Attempt] = []
    for i, method in enumerate(plan):
        attempts.append(step(method, attempts))
        if attempts[-1]["passed"]:
            return attempts, None
        if i + 1 < len(plan):
            status(f"gate FAILED on {LABELS[method]}: {'; '.join(attempts[-1]['reasons'])}. Next: "
                   f"{LABELS[plan[i + 1]]}, {cfg.quantize.qat.epochs} epoch(s).")
    tried = " then ".join(LABELS[m] for m in plan)
    reasons = "; ".join(f"{a['method']}: {', '.join(a['reasons'])}" for a in attempts)
    if cfg.quantize.mode != "int8":
        more = "try quantize.mode int8 (with quantization-aware fine-tuning as the fallback)"
    elif "qat" in plan:
        more = "raise quantize.qat.epochs or quantize.calibration_images"
    else:
        more = "set quantize.method: auto (falls back to quantization-aware fine-tuning) or qat"
    return attempts, GateFailed(f"privacy gate FAILED after {tried}: {reasons}.", f"keep the float edge, or {more}")


def deploy_edge(cfg: Config, run: RunFolder) -> GateFailed | None:
    """`run`'s deployment: quantize RUN/patrol's edge and gate each attempt with `verify`; returns the GateFailed
    of the last attempt, or None when one passed (its edge is RUN/quantize/edge.<mode>.onnx for PTQ,
    RUN/quantize/qat/edge.int8.onnx for QAT; report.json's `quantized.edge` names it). The report stage
    (pipeline/render.py) renders report.json afterwards."""
    from patrol_deploy.deployment.export import export_model_dir
    from patrol_deploy.deployment.quantize import quantize_edge
    from patrol_deploy.pipeline.render import recorded_attempts
    from patrol_deploy.pipeline.verify import verify_run

    def step(method: str, earlier: list[Attempt]) -> Attempt:
        source = run.path("patrol")  # the torch route and QAT export at export.opset themselves
        if method == "ptq" and cfg.quantize.route == "onnx":
            source = export_model_dir(source, run, cfg.export).edge
        quantize_edge(source, run, cfg.quantize.mode, cfg.quantize.route, cfg.quantize.calibration_images,
                      cfg.export, calibration_method=cfg.quantize.calibration_method,
                      qat=cfg if method == "qat" else None)
        with contextlib.suppress(GateFailed):  # the verdict and its reasons are in the attempt verify recorded
            verify_run(run.root, cfg.gate, attempts=earlier, quantized=STAGES[method])
        return recorded_attempts(run)[-1]  # verify recorded it (RUN/verify/attempts.json)

    return attempt_all(cfg, step)[1]


def quantize_gated(source: Path, run: RunFolder, cfg: Config, model_dir: Path,
                   location: DataLocation = DataLocation()) -> tuple[Any, list[Attempt], GateFailed | None]:
    """`quantize --method`: quantize `source` into RUN/quantize (ptq, qat, or auto), gating each attempt against
    the float model folder `model_dir` (`gate`, cached in RUN/gate). Returns the last QuantizeResult, the attempts
    and the GateFailed when none passed. Only `--method ptq` skips the gate."""
    from patrol_deploy.deployment.quantize import quantize_edge
    from patrol_deploy.pipeline.verify import attempt_of, gate_edge, quantized_coverage

    results: list[Any] = []

    def step(method: str, earlier: list[Attempt]) -> Attempt:
        results.append(quantize_edge(source, run, cfg.quantize.mode, cfg.quantize.route,
                                     cfg.quantize.calibration_images, cfg.export, location=location,
                                     calibration_method=cfg.quantize.calibration_method,
                                     qat=cfg if method == "qat" else None))
        coverage = quantized_coverage(results[-1].path)
        return {**attempt_of(gate_edge(model_dir, cfg, model=results[-1].path, out=run.root)), "method": method,
                **{k: coverage[k] for k in ("calibration_method", "ops_quantized", "ops_total") if k in coverage}}

    attempts, failed = attempt_all(cfg, step)
    return results[-1], attempts, failed
