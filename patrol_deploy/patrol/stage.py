"""The PATROL stage: pick a deeper split, train with masks, prune to the budget, fine-tune, fold, save.

With pruning off (ablation, or the `adversarial_only` defense) the same
objective is trained at the deepest unpruned split instead.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patrol_deploy.attacks.decoder import parameter_count
from patrol_deploy.baseline import model_meta
from patrol_deploy.baseline import stage_config as baseline_config
from patrol_deploy.budget import EdgeCost, deepest_fitting, edge_cost, split_costs
from patrol_deploy.checkpoint import Checkpoint, Checkpoints, set_rng_state
from patrol_deploy.config import BudgetConfig, Config, PatrolConfig
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.distributed import DistContext
from patrol_deploy.errors import BudgetError, ConfigError
from patrol_deploy.modelio import load_model_dir, resize_to_state, save_model_dir
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.patrol.importance import TAYLOR
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.objective import PatrolNet
from patrol_deploy.patrol.prune import EdgePruner, PruneResult
from patrol_deploy.patrol.search import Candidate, closest, coarse_guard, guard_utility, proxy_ssim, scaled, winner
from patrol_deploy.patrol.trainer import surrogate_decoder, train_patrol, warm_up_surrogate
from patrol_deploy.progress import status, warn
from patrol_deploy.results import PatrolSummary, typed
from patrol_deploy.runfolder import RunFolder, read_json, write_json
from patrol_deploy.split import cut
from patrol_deploy.stages import run_stage
from patrol_deploy.training import Stream, evaluate, train_batches, utility_metric

FLOOR_KEYS = ("patrol.prune.min_channels, patrol.prune.deploy_min_channels and patrol.prune.round_to, set by "
              "deploy.target unless given")


def stage_config(cfg: Config) -> dict[str, Any]:
    return {**baseline_config(cfg), "budget": cfg.budget.model_dump(mode="json"),
            "patrol": cfg.patrol.model_dump(mode="json")}


def required_reduction(cost: EdgeCost, budget: BudgetConfig, keep_split_width: bool) -> float:
    """Share of edge MACs/params that pruning must remove for `cost` to fit (inf if pruning cannot help)."""
    need = 0.0
    for value, limit in ((cost.edge_macs, budget.edge_macs), (cost.edge_params, budget.edge_params)):
        if limit is not None and value > limit:
            need = max(need, 1.0 - limit / value)
    if budget.upload_bytes is not None and cost.upload_bytes > budget.upload_bytes:
        if keep_split_width:
            return float("inf")
        need = max(need, 1.0 - budget.upload_bytes / cost.upload_bytes)
    return need


def candidate_splits(costs: list[EdgeCost], baseline: EdgeCost, cfg: Config) -> list[EdgeCost]:
    """Splits deeper than the unpruned baseline that pruning can plausibly bring under budget, deepest first.

    `auto` considers intermediate splits only (the cloud keeps a block with parameters on spatial feature maps),
    unless `patrol.prune.allow_terminal_split`; naming a terminal split needs that opt-in too.
    """
    prune = cfg.patrol.prune
    names = [c.split for c in costs]
    deeper = costs[names.index(baseline.split) + 1:]
    if prune.split != "auto":
        chosen = [c for c in costs if c.split == prune.split]
        if not chosen:
            raise BudgetError(f"patrol.prune.split '{prune.split}' is not a split point.",
                              f"use one of: {', '.join(names)} or auto")
        if chosen[0].terminal and not prune.allow_terminal_split:
            raise ConfigError(f"patrol.prune.split '{prune.split}' is a terminal split: the edge would run the whole "
                              "backbone and the cloud no layer on spatial feature maps, which is not collaborative "
                              "inference.", "set patrol.prune.allow_terminal_split: true to use it anyway, or pick "
                              "an intermediate split")
        if chosen[0] not in deeper:
            raise BudgetError(f"patrol.prune.split '{prune.split}' is not deeper than the unpruned split "
                              f"'{baseline.split}' that already fits.",
                              f"pick one of: {', '.join(c.split for c in deeper)}")
        return chosen
    if not prune.allow_terminal_split:
        deeper = [c for c in deeper if not c.terminal]
    if not deeper:
        raise BudgetError(f"no intermediate split is deeper than '{baseline.split}', where the unpruned model "
                          "already fits; pruning cannot buy a deeper split.",
                          "lower the budget, set patrol.prune.allow_terminal_split: true, or set "
                          "patrol.prune.enabled=false")
    ok = [c for c in deeper if required_reduction(c, cfg.budget, prune.keep_split_width) <= prune.max_reduction]
    if not ok:
        closest = min(deeper, key=lambda c: required_reduction(c, cfg.budget, prune.keep_split_width))
        need = required_reduction(closest, cfg.budget, prune.keep_split_width)
        raise BudgetError(
            f"no split deeper than '{baseline.split}' can be pruned into the budget: the closest, "
            f"'{closest.split}', needs {need:.0%} of its edge removed (limit patrol.prune.max_reduction="
            f"{prune.max_reduction:.0%}).", "raise the budget or patrol.prune.max_reduction")
    return list(reversed(ok))


def taylor_scores(model: BlockNet, split: str, masks: SoftMasks, decoder: torch.nn.Module | None,
                  bundle: DataBundle, cfg: Config, teacher: BlockNet | None = None) -> dict[int, torch.Tensor]:
    """|m * dL/dm| of the full PATROL objective (distillation included when `teacher` is given) per mask entry,
    averaged over a few batches, mean-normalized."""
    net = PatrolNet(model, split, cfg.patrol, decoder, masks, cfg.train.triplet_margin, teacher)
    acc = {id(p): torch.zeros(p.numel()) for p in masks.parameters()}
    device = torch.device(cfg.train.device)
    batches = train_batches(bundle.train, cfg.train, False, cfg.seed, Stream.IMPORTANCE, DistContext())
    for i, (x, y) in enumerate(batches):
        if i >= cfg.patrol.prune.taylor_batches:
            break
        model.zero_grad(set_to_none=True)
        net(x.to(device), y.to(device))["total"].backward()
        for p in masks.parameters():
            if p.grad is not None:
                acc[id(p)] += (p.detach() * p.grad).abs().flatten().cpu()
    model.zero_grad(set_to_none=True)
    mean = torch.cat(list(acc.values())).mean().clamp_min(1e-12)
    return {k: v / mean for k, v in acc.items()}


def _prune_at(base_model: BlockNet, cand: EdgeCost, bundle: DataBundle, cfg: Config, ctx: DistContext,
              ckpts: Checkpoints | None) -> tuple[BlockNet, PruneResult, dict[str, Any]]:
    """Masks, pruning and fine-tuning at one candidate split; each phase resumes from `ckpts` on a re-run."""
    model = copy.deepcopy(base_model)
    teacher = _teacher(base_model, cfg)
    edge = cut(model, cand.split)[0]
    masks = SoftMasks(model, edge)
    decoder = surrogate_at(model, cand.split, bundle, cfg)
    p = cfg.patrol
    pruned = _file(ckpts, "pruned")
    saved = pruned.load() if pruned is not None else None
    if pruned is not None and saved is not None:
        status(f"PATROL: resuming after pruning at split '{cand.split}'")
        with pruned.restoring():
            resize_to_state(model, saved["model"])  # the pruned shapes, as load_model_dir rebuilds a pruned model
            model.load_state_dict(saved["model"])
            if decoder is not None:  # its input layers follow a pruned split width
                resize_to_state(decoder, saved["decoder"])
                decoder.load_state_dict(saved["decoder"])
            set_rng_state(saved["rng"])
            result, mask_hist = _prune_result(saved["result"]), list(saved["mask_history"])
            scales = list(saved.get("scales", []))
    else:
        if decoder is not None:
            warm_up_surrogate(model, cand.split, decoder, bundle, cfg, ctx, _file(ckpts, "warmup"))
        status(f"PATROL: {p.mask_epochs} epochs with soft masks at split '{cand.split}'")
        mask_hist = train_patrol(model, cand.split, bundle, cfg, p.mask_epochs, masks, decoder, ctx, "PATROL masks",
                                 _file(ckpts, "masks"), teacher).epochs
        shape = (bundle.channels, bundle.image_size, bundle.image_size)
        model.train()
        pruner = EdgePruner(model, cand.split, masks, shape, p.prune.keep_split_width, p.prune.round_to or 1,
                            decoder, p.prune.min_channels, p.prune.deploy_min_channels or 1, p.prune.importance)
        taylor = (lambda: taylor_scores(model, cand.split, masks, decoder, bundle, cfg, teacher)) \
            if p.prune.importance in TAYLOR else None
        scales = masks.scale_values()  # before pruning: the distribution the sparsity term shaped

        def recover(step: int) -> None:
            status(f"PATROL: {p.prune.recovery_epochs} recovery epoch(s) after pruning step {step} of "
                   f"{p.prune.progressive_steps} at split '{cand.split}'")
            train_patrol(model, cand.split, bundle, cfg, p.prune.recovery_epochs, masks, decoder, ctx,
                         f"PATROL recovery {step}", None, teacher)
            model.train()

        result = prune_progressively(pruner, cfg, recover, taylor)
        if pruned is not None and ctx.is_main:
            pruned.save(model=model.state_dict(), decoder=decoder.state_dict() if decoder is not None else None,
                        result=_prune_state(result), mask_history=mask_hist, scales=scales)
    hist: dict[str, Any] = {"mask": mask_hist, "mask_scales": mask_histogram(scales)}
    if result.after.fits:
        status(f"PATROL: pruned '{cand.split}' from {result.before.edge_macs:,} to {result.after.edge_macs:,} MACs "
               f"in {result.rounds} rounds; fine-tuning {p.finetune_epochs} epochs")
        settled = cfg.model_copy(deep=True)  # the channels are chosen: fine-tuning no longer pushes them apart
        settled.patrol.prune.sparsity_weight = 0.0
        hist["finetune"] = train_patrol(model, cand.split, bundle, settled, p.finetune_epochs, masks, decoder, ctx,
                                        "PATROL fine-tune", _file(ckpts, "finetune"), teacher).epochs
    masks.fold()
    return model.eval(), result, hist


def _step_budget(budget: BudgetConfig, first: EdgeCost, share: float) -> BudgetConfig:
    """The budget a progressive step prunes to: each MACs / parameter limit the edge is over shrinks
    geometrically from the edge's cost to the limit (`share` 1 is the real budget)."""
    if share >= 1:
        return budget
    update: dict[str, Any] = {"upload_bytes": None}  # the split width is what it is until the last step
    for key, value in (("edge_macs", first.edge_macs), ("edge_params", first.edge_params)):
        limit = getattr(budget, key)
        if limit is not None and value > limit:
            update[key] = value * (limit / value) ** share
    return budget.model_copy(update=update)


def prune_progressively(pruner: EdgePruner, cfg: Config, recover: Callable[[int], None],
                        taylor: Callable[[], dict[int, torch.Tensor]] | None = None) -> PruneResult:
    """Prune to the budget in `patrol.prune.progressive_steps` steps, calling `recover(step)` (recovery training)
    after every step but the last; stops early when a step cannot reach its intermediate budget."""
    prune = cfg.patrol.prune
    first = pruner.cost(cfg.budget)
    rounds = 0
    result = None
    for step in range(1, prune.progressive_steps + 1):
        result = pruner.prune_to_budget(_step_budget(cfg.budget, first, step / prune.progressive_steps),
                                        prune.step_ratio, prune.max_rounds, taylor)
        rounds += result.rounds
        if step == prune.progressive_steps or not result.after.fits:
            break
        if prune.recovery_epochs:
            recover(step)
    assert result is not None
    after = pruner.cost(cfg.budget)
    return PruneResult(first, after, rounds, result.removed, result.history,
                       not after.fits and pruner.all_at_floor())


SCALE_BINS = [0.05 * i for i in range(41)]  # 0 .. 2 in steps of 0.05; larger scales count in the last bin


def mask_histogram(scales: list[float]) -> dict[str, Any]:
    """The normalized mask scales before pruning as a histogram, and the share near zero (< 0.1)."""
    counts = np.histogram(np.clip(scales, 0, SCALE_BINS[-1]), bins=SCALE_BINS)[0] if scales else np.zeros(40)
    return {"bins": SCALE_BINS, "counts": [int(c) for c in counts], "channels": len(scales),
            "near_zero_share": float(np.mean(np.asarray(scales) < 0.1)) if scales else None}


def surrogate_at(model: BlockNet, split: str, bundle: DataBundle, cfg: Config) -> torch.nn.Module | None:
    """The training-time surrogate decoder at `split`, or None when the adversarial term is off."""
    if not cfg.patrol.adversarial.enabled:
        return None
    return surrogate_decoder(model, split, bundle.train.tensors(slice(0, 1))[0], cfg.patrol.adversarial.surrogate_width)


def _teacher(baseline: BlockNet, cfg: Config) -> BlockNet | None:
    """A frozen copy of the unpruned baseline to distill from, or None when `patrol.distill` is off."""
    if not cfg.patrol.distill.active:
        return None
    teacher = copy.deepcopy(baseline).eval()
    teacher.requires_grad_(False)
    return teacher


def _file(ckpts: Checkpoints | None, name: str) -> Checkpoint | None:
    return ckpts.file(name) if ckpts is not None else None


def _prune_state(result: PruneResult) -> dict[str, Any]:
    """A PruneResult as plain values (for a checkpoint)."""
    return {"before": result.before.as_dict(), "after": result.after.as_dict(), "rounds": result.rounds,
            "removed": result.removed, "history": result.history, "at_floor": result.at_floor}


def _prune_result(state: dict[str, Any]) -> PruneResult:
    return PruneResult(EdgeCost.from_dict(state["before"]), EdgeCost.from_dict(state["after"]), int(state["rounds"]),
                       dict(state["removed"]), list(state["history"]), bool(state.get("at_floor", False)))


def run_patrol(cfg: Config, bundle: DataBundle, baseline: BlockNet, ctx: DistContext = DistContext(),
               ckpts: Checkpoints | None = None) -> tuple[BlockNet, dict[str, Any]]:
    """PATROL on a trained baseline; returns the pruned, trained model and its summary.

    With `ckpts`, every phase (surrogate warm-up, each mask and fine-tune epoch, pruning) is checkpointed there
    and a re-run with the same checkpoint key resumes after the last finished one, with the same result.
    """
    shape = (bundle.channels, bundle.image_size, bundle.image_size)
    costs = split_costs(baseline, shape, cfg.budget)
    base = deepest_fitting(costs)
    metric = utility_metric(cfg.model.task)
    before = evaluate(baseline, bundle, cfg.model.task, cfg.train.device)
    p = cfg.patrol
    summary: dict[str, Any] = {
        "baseline_split": base.as_dict(), "budget": cfg.budget.model_dump(mode="json"), "utility_metric": metric,
        "utility_before": before[metric], "ablation": {"lipschitz": p.lipschitz.enabled,
                                                        "adversarial": p.adversarial.enabled,
                                                        "distill": p.distill.enabled,
                                                        "prune": p.prune.enabled}}
    if not p.prune.enabled:
        model = copy.deepcopy(baseline)
        decoder = surrogate_at(model, base.split, bundle, cfg)
        if decoder is not None:
            warm_up_surrogate(model, base.split, decoder, bundle, cfg, ctx, _file(ckpts, "warmup"))
        epochs = p.mask_epochs + p.finetune_epochs
        status(f"PATROL (no pruning): {epochs} epochs at split '{base.split}'")
        hist = {"train": train_patrol(model, base.split, bundle, cfg, epochs, None, decoder, ctx, "PATROL",
                                      _file(ckpts, "train"), _teacher(baseline, cfg)).epochs}
        split, before_cost, after_cost, pruning = base.split, base, base, None
    else:
        model, result, hist, search = _search(baseline, costs, base, bundle, cfg, ctx, ckpts)
        split, before_cost, after_cost = result.before.split, result.before, result.after
        pruning = {"rounds": result.rounds, "removed_channels": result.removed,
                   "importance": p.prune.importance, "progressive_steps": p.prune.progressive_steps}
        summary["pruning_history"] = result.history
        summary["search"] = search
        summary["mask_scales"] = hist.pop("mask_scales")
    after_cost = _assert_budget(model, split, shape, cfg.budget)
    after = evaluate(model, bundle, cfg.model.task, cfg.train.device)
    summary.update({"split": split, "edge_before": before_cost.as_dict(), "edge_after": after_cost.as_dict(),
                    "utility_after": after[metric], "utility_detail": after, "pruning": pruning,
                    "loss_history": hist})
    surrogate = surrogate_at(model, split, bundle, cfg)
    if surrogate is not None:  # its size, for the report's attacker-vs-surrogate comparison
        summary["surrogate_parameters"] = parameter_count(surrogate)
    return model, summary


def _search(baseline: BlockNet, costs: list[EdgeCost], base: EdgeCost, bundle: DataBundle, cfg: Config,
            ctx: DistContext, ckpts: Checkpoints | None
            ) -> tuple[BlockNet, PruneResult, dict[str, Any], dict[str, Any]]:
    """PATROL at each candidate (split, strength) the search tries (patrol/search.py); the winner's model,
    pruning result and loss history, and the search record (every candidate, the winner and why)."""
    p = cfg.patrol
    on = p.search.enabled
    splits = candidate_splits(costs, base, cfg)
    order = list(reversed(splits)) if on else splits  # the search goes shallow to deep; without it, deepest first
    strengths = p.search.strengths if on else [1.0]
    before = guard_utility(baseline, bundle, cfg) if on else None
    images = len(bundle.val) + len(bundle.aux) if on else None
    coarse = coarse_guard(images, cfg) if images is not None else None
    if coarse is not None:
        warn(coarse)
    tried: list[Candidate] = []
    models: dict[int, tuple[BlockNet, PruneResult, dict[str, Any]]] = {}
    over: PruneResult | None = None
    for cand in order:
        kept_here = False
        for strength in strengths:
            started = time.time()
            key = cand.split if strength == 1.0 else f"{cand.split}@{strength:g}"
            torch.manual_seed(cfg.seed)  # each candidate trains as if it were the only one, whatever ran before it
            model, result, hist = _prune_at(baseline, cand, bundle, scaled(cfg, strength), ctx,
                                            ckpts.sub(key) if ckpts is not None else None)
            c = Candidate(cand.split, strength, result.after.fits, result.after.edge_macs, 0.0)
            tried.append(c)
            if not result.after.fits:
                if over is None or result.after.edge_macs < over.after.edge_macs:
                    over = result
                why = f" with every channel group at its floor ({FLOOR_KEYS})" if result.at_floor else ""
                status(f"PATROL: '{cand.split}' still over budget after {result.rounds} rounds{why} "
                       f"({'; '.join(result.after.violations)})")
                c.seconds = time.time() - started
                break
            models[len(tried) - 1] = (model, result, hist)
            if not on:
                c.within_drop = c.chosen = True
                c.seconds = time.time() - started
                break
            assert before is not None
            c.val_utility = guard_utility(model, bundle, cfg)
            c.drop = before - c.val_utility
            c.within_drop = c.drop <= p.max_utility_drop
            if c.within_drop:
                c.proxy_ssim = proxy_ssim(model, cand.split, bundle, cfg)
            c.seconds = time.time() - started
            status(f"PATROL search: split '{cand.split}', strength {strength:g}: selection utility "
                   f"{c.val_utility:.2f} (drop {c.drop:.2f}, limit {p.max_utility_drop})"
                   + (f", proxy SSIM {c.proxy_ssim:.3f}" if c.proxy_ssim is not None else ""))
            if c.within_drop:
                kept_here = True
                break
        if not on and tried[-1].fits:
            break
        if on and not kept_here:
            break  # over budget here, or no strength kept utility: a deeper split would do worse on both
    if not models:
        assert over is not None
        raise BudgetError(
            f"pruning could not bring any deeper split under the budget: the closest was '{over.after.split}' with "
            f"{'; '.join(over.after.violations)} after {over.rounds} rounds"
            + (f", every channel group at its floor ({FLOOR_KEYS})." if over.at_floor else "."),
            "raise the budget, lower patrol.prune.min_channels (or deploy_min_channels / round_to: a narrower "
            "edge that INT8 quantizes less of), raise patrol.prune.max_rounds or patrol.prune.step_ratio, or "
            "prune at a shallower split")
    best = winner(tried) if on else next(c for c in tried if c.chosen)
    passed = best is not None
    if best is None:  # nothing kept utility: ship nothing; the closest is recorded and judged as failed
        best = closest(tried)
        assert best is not None
    best.chosen = True
    model, result, hist = models[tried.index(best)]
    record = {"enabled": on, "max_utility_drop": p.max_utility_drop, "baseline_val_utility": before,
              "guard_images": images, "coarse_guard": coarse,
              "candidates": [c.as_dict() for c in tried], "passed": passed, "why": _why(best, passed, tried, p)}
    return model, result, hist, record


def _why(best: Candidate, passed: bool, tried: list[Candidate], p: PatrolConfig) -> str:
    """One sentence on why the winner won (or what the failed search tried)."""
    if not p.search.enabled:
        return f"search off (patrol.search.enabled=false): the deepest split that fits, '{best.split}', at strength 1"
    if not passed:
        return (f"no candidate kept selection utility (validation + auxiliary) within patrol.max_utility_drop "
                f"{p.max_utility_drop}: tried {len(tried)} ({', '.join(f'{c.split}@{c.strength:g}' for c in tried)}); "
                f"the closest, '{best.split}' at strength {best.strength:g}, lost {best.drop:.2f} points")
    kept = [c for c in tried if c.within_drop]
    return (f"'{best.split}' at strength {best.strength:g} has the lowest proxy SSIM ({best.proxy_ssim:.3f}) of the "
            f"{len(kept)} candidate(s) within {p.max_utility_drop} points of the baseline's selection utility "
            f"(drop {best.drop:.2f})")


def _assert_budget(model: BlockNet, split: str, shape: tuple[int, ...], budget: BudgetConfig) -> EdgeCost:
    cost = edge_cost(cut(model, split)[0], split, shape, budget)
    if not cost.fits:
        raise BudgetError(f"internal check failed: the PATROL edge at '{split}' is over budget "
                          f"({'; '.join(cost.violations)}).", "report this as a bug")
    return cost


def patrol_stage(cfg: Config, bundle: DataBundle, baseline: BlockNet, run: RunFolder, name: str = "patrol",
                 ctx: DistContext = DistContext()) -> tuple[BlockNet, PatrolSummary]:
    """Run (or reuse) PATROL into RUN/<name>/ (model folder + summary.json) and record it in the manifest.

    An interrupted stage resumes from RUN/<name>/checkpoints/, which is deleted once the stage is recorded.
    """
    folder = run.path(name)

    def build(ckpts: Checkpoints) -> tuple[tuple[BlockNet, PatrolSummary], list[Path] | None]:
        torch.manual_seed(cfg.seed)
        model, summary = run_patrol(cfg, bundle, baseline, ctx, ckpts)
        history = summary.pop("pruning_history", None)
        if not ctx.is_main:
            return (model, typed(PatrolSummary, summary)), None
        utility = {summary["utility_metric"]: summary["utility_after"]}
        files = save_model_dir(folder, model, model_meta(cfg, bundle, summary["split"], utility=utility))
        if history is not None:  # torch-pruning's history: long index lists, kept out of the summary
            files.append(write_json(folder / "pruning_history.json", history))
        files.append(write_json(folder / "summary.json", summary))
        return (model, typed(PatrolSummary, summary)), files

    def reuse() -> tuple[BlockNet, PatrolSummary]:
        return load_model_dir(folder)[0], typed(PatrolSummary, read_json(folder / "summary.json"))

    return run_stage(run, name, stage_config(cfg), label="PATROL", seed=cfg.seed, reuse=reuse, build=build)


__all__ = ["candidate_splits", "patrol_stage", "required_reduction", "run_patrol"]
