"""The full comparison on one config, stage by stage in one run folder.

train (baseline) -> patrol -> pruned (the same split and budget without
PATROL's training terms) -> each variant attacked with every attack ->
comparison.json (the report stage renders report.json / report.html from it
at the end of the run, pipeline/render.py). The variants: `undefended` (the baseline at the
deepest unpruned split within budget), `deep_undefended` (the baseline at
PATROL's split: over budget, a reference that separates what depth buys),
`pruned`, `patrol`, and every baseline defense at utility matched to
PATROL's. The CLI's `run` then exports, quantizes and verifies (the gate).
Each stage records itself in the manifest and is skipped on a re-run when its
config is unchanged and its files are intact.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch
from torch import nn

from patrol_deploy.attacks.runner import TorchEdgeRunner
from patrol_deploy.attacks.suite import AttackContext, run_attacks
from patrol_deploy.baseline import baseline_model
from patrol_deploy.baseline import stage_config as baseline_config
from patrol_deploy.budget import deepest_fitting, edge_cost, split_costs
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import AdversarialConfig, Config, GateConfig, LipschitzConfig, SearchConfig
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.defenses import DEFENSES, DefenseJob, match_utility
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.patrol import patrol_stage
from patrol_deploy.patrol.stage import stage_config as patrol_config
from patrol_deploy.pipeline.render import COMPARISON_JSON, COMPARISON_STAGE, ORIGINALS, VARIANTS
from patrol_deploy.report import REPORT_JSON
from patrol_deploy.results import SCHEMA_VERSION, Report, VariantEntry, plain, typed
from patrol_deploy.runfolder import RunFolder, read_json, write_json, write_npz
from patrol_deploy.split import cut
from patrol_deploy.stages import run_stage
from patrol_deploy.training import evaluate, utility_metric


@dataclass
class Variant:
    """A model to attack: the full model, its split, and what produced it."""

    model: BlockNet
    split: str
    params: dict[str, Any]


def eval_images(bundle: DataBundle, cfg: Config) -> tuple[torch.Tensor, np.ndarray]:
    """The attacked evaluation images (normalized) and the same images in [0, 1] for pictures."""
    x, _ = bundle.test.tensors(np.arange(min(cfg.attacks.eval_images, len(bundle.test))))
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
                     bundle: DataBundle, cfg: Config, run: RunFolder) -> tuple[VariantEntry, dict[str, np.ndarray]]:
    """Attack one variant and measure its utility, or reuse the result when nothing upstream changed.

    `build` may checkpoint its training in the folder it is given; finished attacks are checkpointed too, so an
    interrupted variant resumes. The checkpoints are deleted once the variant is recorded.
    """
    folder = run.path(VARIANTS, name)
    conf = {"upstream": upstream, "attacks": cfg.attacks.model_dump(mode="json"),
            "budget": cfg.budget.model_dump(mode="json")}

    def reuse() -> tuple[VariantEntry, dict[str, np.ndarray]]:
        with np.load(folder / "reconstructions.npz") as npz:
            return typed(VariantEntry, read_json(folder / "entry.json")), {k: npz[k] for k in npz.files}

    def measure(ckpts: Checkpoints) -> tuple[tuple[VariantEntry, dict[str, np.ndarray]], list[Path]]:
        v = build(ckpts.sub("build"))
        edge, cloud = cut(v.model, v.split)
        shape = (bundle.channels, bundle.image_size, bundle.image_size)
        cost = edge_cost(edge, v.split, shape, cfg.budget)
        utility = evaluate(v.model, bundle, cfg.model.task, cfg.train.device)
        privacy, images = attack_edge(edge, cloud, bundle, cfg, checkpoints=ckpts.sub("attacks"))
        entry = {"split": {"name": v.split, "edge_macs": cost.edge_macs, "edge_params": cost.edge_params,
                           "feature_shape": list(cost.feature_shape), "upload_bytes": cost.upload_bytes,
                           "fits_budget": cost.fits, "terminal": _is_terminal(v.model, v.split, shape, cfg)},
                 "utility": utility[utility_metric(cfg.model.task)], "utility_detail": utility, "params": v.params,
                 "privacy": privacy}
        return (typed(VariantEntry, entry), images), [write_json(folder / "entry.json", entry),
                                                      write_npz(folder / "reconstructions.npz", images)]

    return run_stage(run, f"{VARIANTS}/{name}", conf, label=f"variant {name}", seed=cfg.seed, reuse=reuse,
                     build=measure)


def _is_terminal(model: BlockNet, split: str, shape: tuple[int, int, int], cfg: Config) -> bool:
    return next(c.terminal for c in split_costs(model, shape, cfg.budget) if c.split == split)


def pruned_config(cfg: Config, split: str) -> Config:
    """PATROL's config without its training terms, pruned at `split`: the `pruned` ablation variant.

    The switched-off sections are reset to their defaults, so a key that cannot change this variant (the
    surrogate's learning rate, alpha, the search's strengths) does not make a re-run retrain it.
    """
    out = cfg.model_copy(deep=True)
    out.patrol.lipschitz = LipschitzConfig(enabled=False)
    out.patrol.adversarial = AdversarialConfig(enabled=False)
    out.patrol.prune.split = split
    out.patrol.search = SearchConfig(enabled=False)  # no privacy terms to scale, and the split is PATROL's
    return out


def compare(cfg: Config, run: RunFolder) -> dict[str, Any]:
    """Baseline, PATROL, its ablations and every defense, attacked; writes RUN/comparison.json (the report without
    the deployed edge's gate; the report stage, pipeline/render.py, renders report.json and report.html)."""
    bundle = load_data(cfg.data, cfg.seed)
    metric = utility_metric(cfg.model.task)
    baseline = baseline_model(cfg, bundle, run)
    shape = (bundle.channels, bundle.image_size, bundle.image_size)
    base_split = deepest_fitting(split_costs(baseline, shape, cfg.budget)).split
    patrol_model, summary = patrol_stage(cfg, bundle, baseline, run)
    surrogate = cfg.patrol.adversarial.surrogate_width if cfg.patrol.adversarial.enabled else None
    variants: dict[str, VariantEntry] = {}
    pictures: dict[str, dict[str, np.ndarray]] = {}

    def add(name: str, upstream: dict[str, Any], build: Callable[[Checkpoints], Variant]) -> None:
        variants[name], pictures[name] = evaluate_variant(name, upstream, build, bundle, cfg, run)

    add("undefended", baseline_config(cfg), lambda _: Variant(baseline, base_split, {"defense": "none"}))
    if summary.split != base_split:
        add("deep_undefended", {**baseline_config(cfg), "split": summary.split},
            lambda _: Variant(baseline, summary.split, {
                "defense": "none", "reference": "the unpruned baseline at PATROL's split: over the edge budget, not a "
                "deployable option; it shows what depth alone buys"}))
    if summary.pruning is not None:
        plain_cfg = pruned_config(cfg, summary.split)
        pruned_model, pruned_summary = patrol_stage(plain_cfg, bundle, baseline, run, name="pruned")
        add("pruned", patrol_config(plain_cfg), lambda _: Variant(pruned_model, pruned_summary.split, {
            "defense": "pruning only", "pruning": pruned_summary.pruning, "ablation": pruned_summary.ablation}))
    add("patrol", patrol_config(cfg), lambda _: Variant(patrol_model, summary.split, {
        "defense": "patrol", "pruning": summary.pruning, "ablation": summary.ablation,
        "edge_before_pruning": summary.edge_before, "surrogate_width": surrogate,
        "surrogate_parameters": summary.surrogate_parameters}))
    # Defenses at the unpruned split (same edge budget), matched to PATROL's validation utility.
    target = evaluate(patrol_model, bundle, cfg.model.task, cfg.train.device, split=bundle.val)[metric]
    for name in cfg.defenses.names:
        defense = DEFENSES.get(name)

        def build(ckpts: Checkpoints, defense: Any = defense) -> Variant:
            job = DefenseJob(baseline, base_split, bundle, cfg, cfg.seed, ckpts)
            d = match_utility(defense, job, target=target)
            return Variant(d.model, base_split, {**d.as_dict(metric), "matched_to": "patrol",
                                                 "target_val_utility": target, "epochs": cfg.defense_epochs})

        add(name, {**patrol_config(cfg), "defenses": cfg.defenses.model_dump(mode="json"), "name": name}, build)
    report = Report(schema_version=SCHEMA_VERSION, utility_metric=metric, budget=cfg.budget.model_dump(mode="json"),
                    data=bundle.summary(), variants=variants, patrol_search=summary.search,
                    mask_scales=summary.mask_scales, baseline_split=base_split, config=cfg.dump(),
                    privacy_gain=privacy_gain(variants), notes=_notes(variants, cfg))
    report.patrol_verdict = patrol_verdict(report, cfg.gate)  # type: ignore[attr-defined]
    _, originals = eval_images(bundle, cfg)
    started = time.time()
    document = report.model_dump(exclude_unset=True)
    files = [write_json(run.path(COMPARISON_JSON), plain(document, finite_only=True)),
             write_npz(run.path(VARIANTS, ORIGINALS), {"images": originals})]
    run.record(COMPARISON_STAGE, files, {"variants": sorted(variants)}, seed=cfg.seed, started=started)
    return document


GAIN_STEPS = (("depth", "undefended", "deep_undefended"), ("pruning", "deep_undefended", "pruned"),
              ("terms", "pruned", "patrol"))


def privacy_gain(variants: Mapping[str, VariantEntry]) -> dict[str, Any]:
    """Where PATROL's drop in worst-case SSIM comes from: depth, pruning, and PATROL's training terms.

    undefended -> deep_undefended (depth) -> pruned (pruning) -> patrol (the Lipschitz and adversarial terms);
    a step whose variants are missing (no pruning, split unchanged) is None.
    """
    worst = {n: v.privacy.worst_ssim for n, v in variants.items()}
    out: dict[str, Any] = {"worst_ssim": {n: worst.get(n) for n in ("undefended", "deep_undefended", "pruned",
                                                                    "patrol")}}
    for step, a, b in GAIN_STEPS:
        wa, wb = worst.get(a), worst.get(b)
        out[step] = wa - wb if _finite(wa) and _finite(wb) else None
    und, pat = worst.get("undefended"), worst.get("patrol")
    if _finite(und) and _finite(pat):
        out["total"] = und - pat
        out["ratio"] = pat / und if und else None
    return out


def patrol_verdict(report: Report, gate: GateConfig) -> dict[str, Any]:
    """Does PATROL itself ship? Fails when its search kept no candidate within `patrol.max_utility_drop`, when it
    loses more than `gate.max_patrol_utility_drop` points against the baseline, when its worst-case SSIM is not
    below the undefended model's at the same budget (or above `gate.max_patrol_worst_ssim` when that is set), or
    when either number could not be measured (an attack failed)."""
    und, pat = report.variants.get("undefended"), report.variants.get("patrol")
    reasons: list[str] = []
    if und is None or pat is None:
        return {"passed": False, "reasons": ["the report has no undefended or no PATROL variant to judge"]}
    for name, v in (("PATROL", pat), ("undefended", und)):
        for attack, err in (getattr(v.privacy, "errors", None) or {}).items():
            reasons.append(f"attack '{attack}' against the {name} edge failed: {err}")
    drop = None
    if _finite(und.utility) and _finite(pat.utility):
        drop = und.utility - pat.utility
        if drop > gate.max_patrol_utility_drop:
            reasons.append(f"PATROL loses {drop:.2f} points of {report.utility_metric} against the baseline "
                           f"({und.utility:.2f} -> {pat.utility:.2f}), more than gate.max_patrol_utility_drop "
                           f"{gate.max_patrol_utility_drop}")
    else:
        reasons.append(f"utility could not be measured (baseline {und.utility}, PATROL {pat.utility})")
    search = report.patrol_search
    if search is not None and not search.passed:
        reasons.append(f"PATROL's search kept no candidate within patrol.max_utility_drop: {search.why}")
    u, p = und.privacy.worst_ssim, pat.privacy.worst_ssim
    if not (_finite(u) and _finite(p)):
        reasons.append(f"worst-case SSIM could not be measured (undefended {u}, PATROL {p})")
    elif p >= u:
        reasons.append(f"PATROL's worst-case SSIM {p:.3f} is not below the undefended model's {u:.3f} at the same "
                       "edge budget")
    if _finite(p) and gate.max_patrol_worst_ssim is not None and p > gate.max_patrol_worst_ssim:
        reasons.append(f"PATROL's worst-case SSIM {p:.3f} is above gate.max_patrol_worst_ssim "
                       f"{gate.max_patrol_worst_ssim}: its uploads can be inverted beyond the release bar")
    return {"passed": not reasons, "reasons": reasons, "utility_drop": drop,
            "max_patrol_utility_drop": gate.max_patrol_utility_drop}


def _finite(v: Any) -> TypeGuard[float]:
    return isinstance(v, int | float) and math.isfinite(v)


def _notes(variants: Mapping[str, VariantEntry], cfg: Config) -> list[str]:
    notes = [f"Every attacker is trained from scratch on images disjoint from the {cfg.attacks.eval_images} "
             "evaluation images; PATROL's training surrogate is never used to evaluate."]
    gain = privacy_gain(variants)
    if gain.get("ratio") is not None:
        notes.append(f"PATROL worst-case SSIM {gain['worst_ssim']['patrol']:.3f} vs undefended "
                     f"{gain['worst_ssim']['undefended']:.3f} at the same edge budget (ratio {gain['ratio']:.2f}).")
    return notes


def report_of(run: RunFolder) -> dict[str, Any]:
    report: dict[str, Any] = read_json(run.path(REPORT_JSON))
    return report
