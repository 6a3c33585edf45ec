"""What every baseline defense shares: fine-tuning a copy of the model with the defense in place.

A defense fine-tunes a copy of the baseline at a given split, with the full
model trained so the cloud adapts. Defenses that transform the uploaded
features (noise, dropout) become part of the split block, so they stay active
at inference, in the deployed edge, in its ONNX export, and in front of every
attacker. `match_utility` searches each defense's strength until its
validation utility is within a tolerance of the target, from above or below:
that is how defenses are compared "at matched utility".
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from patrol_deploy.checkpoint import Checkpoint, Checkpoints
from patrol_deploy.config import Config
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.errors import ConfigError
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.progress import status
from patrol_deploy.split import CloudNet, cut, split_index
from patrol_deploy.training import Stream, evaluate, fit, head_loss, utility_metric

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (images, uploaded features) -> scalar loss


@dataclass
class DefenseJob:
    """The inputs every defense gets: the baseline (left untouched), the split, the data and the config.

    With `checkpoints`, each strength's fine-tuning is checkpointed there after every epoch, so a re-run
    resumes an interrupted strength and does not redo a finished one.
    """

    model: BlockNet
    split: str
    bundle: DataBundle
    cfg: Config
    seed: int = 0
    checkpoints: Checkpoints | None = None

    def checkpoint(self, name: str, strength: float) -> Checkpoint | None:
        """Where the defense `name` at `strength` keeps its state (None without checkpoints)."""
        return self.checkpoints.file(f"{name}-{strength}") if self.checkpoints is not None else None

    @property
    def metric(self) -> str:
        return utility_metric(self.cfg.model.task)


@dataclass
class DefendedModel:
    """A fine-tuned, defended model: the deployed edge (defense inside), the cloud and the measured utility.

    `utility` is measured on the test split, `val_utility` on the validation
    split (used to match utilities, so the test split never picks a setting).
    """

    name: str
    strength: float
    knob: str
    model: BlockNet
    edge: nn.Module
    cloud: CloudNet
    utility: dict[str, float]
    val_utility: dict[str, float]
    history: list[float] = field(default_factory=list)
    matched: bool | None = None
    tried: list[dict[str, float]] = field(default_factory=list)

    target: float | None = None

    def as_dict(self, metric: str) -> dict[str, Any]:
        """JSON-able summary for the report (the setting, utility and how it was matched)."""
        val = self.val_utility.get(metric)
        gap = val - self.target if val is not None and self.target is not None else None
        return {"defense": self.name, "knob": self.knob, "strength": self.strength,
                "utility": self.utility.get(metric), "val_utility": val, "val_gap_to_target": gap,
                "matched": self.matched, "tried": self.tried, "finetune_loss": self.history}


@dataclass(frozen=True)
class Defense:
    """A registered defense: `train(job, strength)` and the strengths `match_utility` tries, strongest first."""

    name: str
    knob: str
    train: Callable[[DefenseJob, float], DefendedModel]
    grid: tuple[float, ...]
    max_strength: float = math.inf  # the search never goes past it (dropout's p < 1)


def _task_loss(cloud: CloudNet, z: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
    """The baseline's task loss computed from uploaded features (cross-entropy, plus triplet for re-ID)."""
    return head_loss(cloud.head, cloud.features(z), y, margin)[0]


def defended_copy(model: BlockNet, split: str, feature_defense: nn.Module | None) -> BlockNet:
    """A copy of `model` whose split block ends with `feature_defense` (so the deployed edge contains it)."""
    split_index(model, split)
    out = copy.deepcopy(model)
    if feature_defense is not None:
        out.blocks[split] = nn.Sequential(out.blocks[split], feature_defense)
    return out


@torch.no_grad()
def feature_std(model: BlockNet, split: str, job: DefenseJob, images: int = 256) -> float:
    """Std of the undefended uploaded features on training images (the unit of the noise defense)."""
    edge = cut(model, split)[0].eval()
    x, _ = job.bundle.train.tensors(slice(0, images))
    return float(edge(x.to(job.cfg.train.device)).float().std())


def finetune(job: DefenseJob, name: str, strength: float, knob: str, feature_defense: nn.Module | None = None,
             penalty: Penalty | None = None) -> DefendedModel:
    """Fine-tune a defended copy of the baseline (task loss + optional penalty) and measure its utility."""
    cfg, dcfg = job.cfg.train, job.cfg.defenses
    torch.manual_seed(job.seed)
    model = defended_copy(job.model, job.split, feature_defense).to(cfg.device)
    edge, cloud = cut(model, job.split)
    desc = f"defense {name} ({knob} {strength})"

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z = edge(x)
        task = _task_loss(cloud, z, y, cfg.triplet_margin)
        return task + penalty(x, z) if penalty is not None else task

    history = fit(model, job.bundle, cfg, job.seed, epochs=job.cfg.defense_epochs, lr=dcfg.lr, desc=desc,
                  checkpoint=job.checkpoint(name, strength), loss_fn=loss, stream=Stream.DEFENSE)
    model.eval()
    torch.manual_seed(job.seed)  # noise / dropout are random at inference: measure reproducibly
    utility = evaluate(model, job.bundle, job.cfg.model.task, cfg.device)
    val = evaluate(model, job.bundle, job.cfg.model.task, cfg.device, split=job.bundle.val)
    return DefendedModel(name, strength, knob, model, edge, cloud, utility, val, history)


SEARCH_STEPS = 3  # trainings to refine a crossing, and doublings past the grid's strongest strength


def match_utility(defense: Defense, job: DefenseJob, target: float | None = None, tolerance: float | None = None,
                  grid: tuple[float, ...] | list[float] | None = None) -> DefendedModel:
    """A strength whose validation utility is within `tolerance` of `target`, from above or below.

    The grid is walked strongest first. The first strength within the tolerance wins; when one strength is too
    strong (utility below target - tolerance) and the next too weak (above target + tolerance), the crossing
    between them is refined by interpolating utility linearly in strength (regula falsi, kept inside the
    bracket); when even the strongest is too weak, the strength is doubled first. Each search is bounded by
    SEARCH_STEPS trainings. `target` defaults to the baseline's validation utility and `tolerance` to
    `defenses.utility_tolerance` (points). When nothing lands within the tolerance, the closest strength tried
    is returned with `matched=False`, so the report marks the defense unmatched instead of calling it matched.
    """
    strengths = tuple(grid or job.cfg.defenses.grids.get(defense.name) or defense.grid)
    if not strengths:
        raise ConfigError(f"defense '{defense.name}' has no strengths to try.",
                          f"set defenses.grids.{defense.name} to a list of strengths, strongest first")
    if target is None:
        target = evaluate(job.model, job.bundle, job.cfg.model.task, job.cfg.train.device,
                          split=job.bundle.val)[job.metric]
    tol = job.cfg.defenses.utility_tolerance if tolerance is None else tolerance
    tried: list[dict[str, float]] = []
    results: list[DefendedModel] = []

    def trial(strength: float) -> float:
        """Train at `strength`; its signed distance from the tolerance band (0 inside, < 0 too strong)."""
        result = defense.train(job, strength)
        value = result.val_utility[job.metric]
        tried.append({"strength": strength, "val_utility": value, "utility": result.utility[job.metric]})
        results.append(result)
        status(f"defense {defense.name}: {defense.knob} {strength:g} -> validation {job.metric} {value:.2f} "
               f"(target {target:.2f} +- {tol})")
        return min(0.0, value - (target - tol)) + max(0.0, value - (target + tol))

    strong: float | None = None  # the last strength that cost too much utility
    weak: float | None = None  # the first that kept too much
    side = 1.0
    for strength in strengths:
        side = trial(strength)
        if side < 0.0:
            strong = strength
            continue
        weak = strength if side > 0.0 else None
        break
    if weak is not None and strong is None:  # even the strongest keeps too much utility: go stronger
        for _ in range(SEARCH_STEPS):
            stronger = min(2.0 * weak, defense.max_strength)
            if stronger <= weak:
                break
            side = trial(stronger)
            if side > 0.0:
                weak = stronger
                continue
            strong = stronger if side < 0.0 else None
            break
    if weak is not None and strong is not None and side != 0.0:  # refine the crossing inside the bracket
        value = {t["strength"]: t["val_utility"] for t in tried}
        for _ in range(SEARCH_STEPS):
            u_strong, u_weak = value[strong], value[weak]
            share = (target - u_strong) / (u_weak - u_strong) if u_weak != u_strong else 0.5
            share = min(max(share, 0.1), 0.9)  # never the bracket's ends again, even on a flat or noisy curve
            mid = strong + share * (weak - strong)
            side = trial(mid)
            value[mid] = tried[-1]["val_utility"]
            if side == 0.0:
                break
            strong, weak = (mid, weak) if side < 0.0 else (strong, mid)
    best = min(range(len(tried)), key=lambda k: abs(tried[k]["val_utility"] - target))
    inside = [k for k, t in enumerate(tried) if abs(t["val_utility"] - target) <= tol]
    pick = inside[0] if inside else best
    result = results[pick]
    result.matched, result.tried, result.target = bool(inside), tried, target
    return result
