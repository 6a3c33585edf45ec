"""`run` from top to bottom: compare (baseline, PATROL, its ablations, defenses, attacks), then the deployment
(export, quantize, the privacy gate), then the report (report.json and report.html, rendered once from what the
stages wrote), then PATROL's verdict. The CLI (`run`, `demo`) and the Python API
(`optimize`) both call `run_all`; each stage records itself in the run folder's manifest (runfolder.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patrol_deploy.config import Config
from patrol_deploy.errors import GateFailed
from patrol_deploy.pipeline.compare import compare, report_of
from patrol_deploy.pipeline.deploy import deploy_edge
from patrol_deploy.pipeline.render import render_report
from patrol_deploy.preflight import preflight
from patrol_deploy.runfolder import RunFolder, check_run_folder, run_identity
from patrol_deploy.tracking import tracked_run


def run_all(cfg: Config, out: Path, deploy: bool, force: bool = False) -> dict[str, Any]:
    """compare -> export -> quantize -> verify -> report; returns the final report (GateFailed propagates).

    GateFailed is raised when PATROL itself does not ship (its verdict: utility against the baseline, privacy
    against the undefended model) or when the quantized edge fails the privacy gate; the deployment steps run
    either way, so the report holds every number behind the verdict.
    A run folder from another config or version, or with changed files, is refused unless `force`; every
    tracker in `tracking.trackers` logs the run.
    """
    run = RunFolder(out)
    check_run_folder(run, run_identity(cfg), force)
    preflight(cfg, components=True)  # an unmeetable budget or an unknown defense fails before any training
    deploy_failed: GateFailed | None = None
    with tracked_run(cfg, run):  # the trackers log report.json: it is rendered inside
        verdict = compare(cfg, run)["patrol_verdict"]
        if deploy:
            deploy_failed = deploy_edge(cfg, run)
        render_report(run, with_gate=deploy)
    if not verdict["passed"]:
        also = f" Also: {deploy_failed.problem}" if deploy_failed is not None else ""
        raise GateFailed("PATROL verdict FAILED: " + "; ".join(verdict["reasons"]) + "." + also,
                         "raise PATROL's utility (more fine-tuning epochs, a shallower split via patrol.prune.split, "
                         "a weaker beta / alpha) or its privacy (a deeper split, a stronger beta / alpha), or relax "
                         "gate.max_patrol_utility_drop / gate.max_patrol_worst_ssim knowingly")
    if deploy_failed is not None:
        raise deploy_failed
    return report_of(run)
