"""The privacy gate: attack the quantized edge as deployed and compare it with the float PATROL model.

The quantized edge runs in ONNX Runtime on the CPU (or as a TensorRT engine
where one is given and TensorRT is present); gradient-based attacks use the
float torch edge for gradients and the deployed edge only for the target
features. The gate fails closed: an attack that errors, a NaN metric or a
utility that cannot be measured is a failure with its reason.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patrol_deploy.config import Config, GateConfig
from patrol_deploy.data import load_data
from patrol_deploy.errors import GateFailed, PatrolError
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.onnx_runner import OnnxEdgeRunner, with_edge_runner
from patrol_deploy.pipeline import REPORT_STAGE, VARIANTS, attack_edge, eval_images
from patrol_deploy.progress import status
from patrol_deploy.report import REPORT_JSON, write_report
from patrol_deploy.runfolder import RunFolder, read_json
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate, utility_metric

STAGE = "verify"


class EngineEdgeRunner:
    """A TensorRT engine as an EdgeRunner (target features only; gradients from the float torch edge)."""

    differentiable = False

    def __init__(self, engine: Path, torch_module: torch.nn.Module) -> None:
        from patrol_deploy.engine.runner import EngineRunner

        self.name = f"TensorRT {engine.name}"
        self.torch_module = torch_module.eval()
        self.runner = EngineRunner(engine)
        self.input_name = self.runner.input_specs()[0].name

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        outputs, _ = self.runner.run({self.input_name: x.detach().float().cpu().numpy()})
        return torch.from_numpy(np.asarray(next(iter(outputs.values())), dtype=np.float32))


def gate_reasons(float_entry: dict[str, Any], quantized: dict[str, Any], gate: GateConfig) -> list[str]:
    """Why the gate fails (empty when it passes); any missing or NaN number is a failure."""
    reasons = [f"attack '{n}' failed: {e}" for n, e in quantized["privacy"].get("errors", {}).items()]
    q_ssim, f_ssim = quantized["privacy"].get("worst_ssim"), float_entry["privacy"].get("worst_ssim")
    q_util, f_util = quantized.get("utility"), float_entry.get("utility")
    if not isinstance(q_ssim, float | int) or not isinstance(f_ssim, float | int) or not _finite(q_ssim) \
            or not _finite(f_ssim):
        reasons.append(f"worst-case SSIM could not be measured (float {f_ssim}, quantized {q_ssim})")
    elif q_ssim - f_ssim > gate.max_ssim_increase:
        reasons.append(f"worst-case SSIM rose by {q_ssim - f_ssim:.3f} after quantization ({f_ssim:.3f} -> "
                       f"{q_ssim:.3f}, attack {quantized['privacy'].get('worst_attack')}), more than "
                       f"--max-ssim-increase {gate.max_ssim_increase}")
    if not isinstance(q_util, float | int) or not isinstance(f_util, float | int) or not _finite(q_util) \
            or not _finite(f_util):
        reasons.append(f"utility could not be measured (float {f_util}, quantized {q_util})")
    elif f_util - q_util > gate.max_utility_drop:
        reasons.append(f"utility dropped by {f_util - q_util:.2f} points after quantization ({f_util:.2f} -> "
                       f"{q_util:.2f}), more than --max-utility-drop {gate.max_utility_drop}")
    return reasons


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def quantized_onnx(run: RunFolder) -> tuple[Path, dict[str, Any]]:
    entry = run.stage("quantize")
    if entry is None:
        raise PatrolError(f"'{run.root}' has no quantized edge.",
                          f"run `patrol-deploy quantize {run.path('patrol')} --out {run.root}` first")
    onnx = [f for f in entry["files"] if f.endswith(".onnx")]
    if not onnx or not run.path(onnx[0]).is_file():
        raise PatrolError(f"the quantized edge recorded in {run.manifest_path} is missing.",
                          "re-run `patrol-deploy quantize`")
    return run.path(onnx[0]), entry.get("config", {})


def verify_run(run_dir: str | Path, gate: GateConfig, engine: Path | None = None) -> dict[str, Any]:
    """Attack and evaluate the quantized PATROL edge; writes `quantized` into report.json and returns it.

    Raises GateFailed (exit 1) with the reasons when the gate does not pass.
    """
    run = RunFolder(run_dir)
    if not run.path(REPORT_JSON).is_file():
        raise PatrolError(f"'{run.root}' has no {REPORT_JSON}.", "run `patrol-deploy run CONFIG --out DIR` first")
    report = read_json(run.path(REPORT_JSON))
    if "patrol" not in report.get("variants", {}) or "config" not in report:
        raise PatrolError(f"{run.path(REPORT_JSON)} has no float PATROL entry to compare with.",
                          "run `patrol-deploy run` into this folder")
    cfg = Config.model_validate(report["config"])
    started = time.time()
    model, meta = load_model_dir(run.path("patrol"))
    edge, cloud = cut(model, meta.split)
    bundle = load_data(cfg.data, cfg.seed)
    onnx_path, qconf = quantized_onnx(run)
    runner: Any = EngineEdgeRunner(engine, edge) if engine else OnnxEdgeRunner(onnx_path, edge, name=onnx_path.name)
    metric = utility_metric(cfg.model.task)
    status(f"verify: utility and attacks against the deployed edge ({runner.name})")
    quantized: dict[str, Any] = {"mode": qconf.get("mode", "int8"), "route": qconf.get("route"),
                                 "edge": str(engine or onnx_path), "runtime": runner.name}
    try:
        util = evaluate(with_edge_runner(model, meta.split, runner), bundle, cfg.model.task, cfg.train.device)
        quantized.update(utility=util[metric], utility_detail=util)
    except PatrolError:
        raise
    except Exception as exc:  # fail closed: an unmeasurable utility is a failed gate, with the reason
        quantized.update(utility=None, utility_detail={"error": f"{type(exc).__name__}: {exc}"})
    privacy, _ = attack_edge(edge, cloud, bundle, cfg, runner=runner)
    if not runner.differentiable:
        privacy.setdefault("notes", []).append(
            "gradient-based attacks used the float torch edge for gradients and the deployed edge for targets")
    quantized["privacy"] = privacy
    float_entry = report["variants"]["patrol"]
    quantized["float"] = {"utility": float_entry.get("utility"), "worst_ssim": float_entry["privacy"]["worst_ssim"]}
    reasons = gate_reasons(float_entry, quantized, gate)
    quantized["gate"] = {"passed": not reasons, "reasons": reasons, **gate.model_dump()}
    report["quantized"] = quantized
    pictures = {}
    for name in report["variants"]:
        with np.load(run.path(VARIANTS, name, "reconstructions.npz")) as npz:
            pictures[name] = {k: npz[k] for k in npz.files}
    _, originals = eval_images(bundle, cfg)
    files = write_report(run.root, report, originals, pictures)
    previous = run.stage(REPORT_STAGE)  # the report files changed: keep the manifest's hashes true
    run.record(REPORT_STAGE, files, previous["config"] if previous else {}, seed=cfg.seed, started=started)
    run.record(STAGE, files, {"gate": gate.model_dump(), "engine": str(engine) if engine else None},
               seed=cfg.seed, started=started)
    if reasons:
        raise GateFailed("privacy gate FAILED: " + "; ".join(reasons) + ".",
                         "keep the float edge, calibrate with more images, or quantize fewer layers")
    return quantized
