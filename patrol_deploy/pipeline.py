"""The full comparison on one config, stage by stage in one run folder.

train (baseline) -> patrol -> each variant (undefended, PATROL, every baseline
defense at matched utility) attacked with every attack -> report.json /
report.html -> export -> quantize -> verify (the privacy gate). Each stage
records itself in the manifest and is skipped on a re-run when its config is
unchanged and its files are intact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from patrol_deploy.attacks.runner import TorchEdgeRunner
from patrol_deploy.attacks.suite import AttackContext, run_attacks
from patrol_deploy.baseline import baseline_model
from patrol_deploy.baseline import stage_config as baseline_config
from patrol_deploy.budget import deepest_fitting, edge_cost, split_costs
from patrol_deploy.checkpoint import Checkpoints, stage_checkpoints
from patrol_deploy.config import Config
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.defenses import DEFENSES, DefenseJob, match_utility
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.patrol import defense as _adversarial_only  # noqa: F401 - registers the adversarial_only defense
from patrol_deploy.patrol import patrol_stage
from patrol_deploy.patrol.stage import stage_config as patrol_config
from patrol_deploy.progress import status
from patrol_deploy.report import REPORT_JSON, SCHEMA_VERSION, write_report
from patrol_deploy.runfolder import RunFolder, atomic_path, read_json, write_json
from patrol_deploy.split import cut
from patrol_deploy.training import evaluate, utility_metric

VARIANTS = "variants"
REPORT_STAGE = "report"


@dataclass
class Variant:
    """A model to attack: the full model, its split, and what produced it."""

    model: BlockNet
    split: str
    params: dict[str, Any]


def eval_images(bundle: DataBundle, cfg: Config) -> tuple[torch.Tensor, np.ndarray]:
    """The attacked evaluation images (normalized) and the same images in [0, 1] for pictures."""
    n = min(cfg.attacks.eval_images, len(bundle.test))
    x, _ = bundle.test.tensors(np.arange(n))
    return x, bundle.denormalize(x).numpy().astype(np.float32)


def attack_edge(edge: nn.Module, cloud: nn.Module, bundle: DataBundle, cfg: Config, runner: Any = None,
                names: list[str] | None = None,
                checkpoints: Checkpoints | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run the attack suite against an edge (torch, or `runner` for an exported one); privacy dict + images.

    With `checkpoints`, finished attacks are reused on a re-run (see `run_attacks`).
    """
    runner = runner or TorchEdgeRunner(edge)
    ctx = AttackContext.from_test_split(runner, cloud, bundle, cfg.attacks, seed=cfg.seed, device=cfg.train.device)
    suite = run_attacks(names or cfg.attacks.names, ctx, checkpoints)
    images = {name: bundle.denormalize(r.reconstructions).numpy().astype(np.float32)
              for name, r in suite.results.items() if r.reconstructions is not None}
    return suite.privacy_dict(), images


def evaluate_variant(name: str, upstream: dict[str, Any], build: Callable[[Checkpoints], Variant],
                     bundle: DataBundle, cfg: Config, run: RunFolder) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Attack one variant and measure its utility, or reuse the result when nothing upstream changed.

    `build` may checkpoint its training in the folder it is given; finished attacks are checkpointed too, so an
    interrupted variant resumes. The checkpoints are deleted once the variant is recorded.
    """
    stage = f"{VARIANTS}/{name}"
    folder = run.path(VARIANTS, name)
    conf = {"upstream": upstream, "attacks": cfg.attacks.model_dump(mode="json"),
            "budget": cfg.budget.model_dump(mode="json")}
    ckpts = stage_checkpoints(run, stage, conf)
    if run.is_current(stage, conf):
        ckpts.clear()  # left behind if a run was killed between recording the variant and deleting them
        status(f"variant {name}: reusing {folder}")
        with np.load(folder / "reconstructions.npz") as npz:
            return read_json(folder / "entry.json"), {k: npz[k] for k in npz.files}
    started = time.time()
    v = build(ckpts.sub("build"))
    edge, cloud = cut(v.model, v.split)
    shape = (bundle.channels, bundle.image_size, bundle.image_size)
    cost = edge_cost(edge, v.split, shape, cfg.budget)
    utility = evaluate(v.model, bundle, cfg.model.task, cfg.train.device)
    privacy, images = attack_edge(edge, cloud, bundle, cfg, checkpoints=ckpts.sub("attacks"))
    entry = {"split": {"name": v.split, "edge_macs": cost.edge_macs, "edge_params": cost.edge_params,
                       "feature_shape": list(cost.feature_shape), "upload_bytes": cost.upload_bytes,
                       "fits_budget": cost.fits},
             "utility": utility[utility_metric(cfg.model.task)], "utility_detail": utility, "params": v.params,
             "privacy": privacy}
    files = [write_json(folder / "entry.json", entry), _save_npz(folder / "reconstructions.npz", images)]
    run.record(stage, files, conf, seed=cfg.seed, started=started)
    ckpts.clear()
    return entry, images


def _save_npz(path: Any, arrays: dict[str, np.ndarray]) -> Any:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    return path


def compare(cfg: Config, run: RunFolder) -> dict[str, Any]:
    """Baseline, PATROL and every defense, attacked; writes RUN/report.json and RUN/report.html."""
    bundle = load_data(cfg.data, cfg.seed)
    metric = utility_metric(cfg.model.task)
    baseline = baseline_model(cfg, bundle, run)
    shape = (bundle.channels, bundle.image_size, bundle.image_size)
    base_split = deepest_fitting(split_costs(baseline, shape, cfg.budget)).split
    patrol_model, summary = patrol_stage(cfg, bundle, baseline, run)
    variants: dict[str, Any] = {}
    pictures: dict[str, dict[str, np.ndarray]] = {}

    def add(name: str, upstream: dict[str, Any], build: Callable[[Checkpoints], Variant]) -> None:
        variants[name], pictures[name] = evaluate_variant(name, upstream, build, bundle, cfg, run)

    add("undefended", baseline_config(cfg), lambda _: Variant(baseline, base_split, {"defense": "none"}))
    add("patrol", patrol_config(cfg), lambda _: Variant(patrol_model, summary["split"], {
        "defense": "patrol", "pruning": summary.get("pruning"), "ablation": summary["ablation"],
        "edge_before_pruning": summary["edge_before"]}))
    # Defenses at the unpruned split (same edge budget), matched to PATROL's validation utility.
    target = evaluate(patrol_model, bundle, cfg.model.task, cfg.train.device, split=bundle.val)[metric]
    for name in cfg.defenses.names:
        defense = DEFENSES.get(name)

        def build(ckpts: Checkpoints, defense: Any = defense) -> Variant:
            job = DefenseJob(baseline, base_split, bundle, cfg, cfg.seed, ckpts)
            d = match_utility(defense, job, target=target)
            return Variant(d.model, base_split, {**d.as_dict(metric), "matched_to": "patrol",
                                                 "target_val_utility": target})

        add(name, {**patrol_config(cfg), "defenses": cfg.defenses.model_dump(mode="json"), "name": name}, build)
    report = {"schema_version": SCHEMA_VERSION, "utility_metric": metric,
              "budget": cfg.budget.model_dump(mode="json"), "data": bundle.summary(),
              "baseline_split": base_split, "variants": variants, "config": cfg.dump(),
              "notes": _notes(variants, cfg)}
    _, originals = eval_images(bundle, cfg)
    started = time.time()
    files = write_report(run.root, report, originals, pictures)
    run.record(REPORT_STAGE, files, {"variants": sorted(variants)}, seed=cfg.seed, started=started)
    return report


def _notes(variants: dict[str, Any], cfg: Config) -> list[str]:
    notes = [f"Every attacker is trained from scratch on the auxiliary split (disjoint from the "
             f"{cfg.attacks.eval_images} evaluation images); PATROL's training surrogate is never used to evaluate."]
    und, pat = variants.get("undefended"), variants.get("patrol")
    if und and pat:
        u, p = und["privacy"]["worst_ssim"], pat["privacy"]["worst_ssim"]
        if u and p == p and u == u:
            notes.append(f"PATROL worst-case SSIM {p:.3f} vs undefended {u:.3f} at the same edge budget "
                         f"(ratio {p / u:.2f}; target <= 0.5).")
    return notes


def report_of(run: RunFolder) -> dict[str, Any]:
    report: dict[str, Any] = read_json(run.path(REPORT_JSON))
    return report
