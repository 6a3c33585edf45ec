"""Channel importance for structured pruning: one registry, PATROL's scores and torch-pruning's baselines.

A criterion maps one torch-pruning group (a root layer's channels and every
layer coupled to them) to one score per root channel; lower is pruned first.
Scores are ranked globally across groups, so every criterion puts all layers
on one scale:

- `mask_gamma` (default): the channel's normalized scale |m * gamma| / (its
  layer's mean |gamma| at the start), the quantity PATROL's sparsity term
  drives to zero (patrol/masks.py), averaged over the group's masked layers.
- `mask`: |m| alone (the mask is redundant with gamma, so this ranks on drift).
- `mask_taylor`: |m| x the first-order Taylor score |m * dL/dm| of the full
  PATROL objective (patrol/stage.py `taylor_scores`).
- `magnitude`, `bn_scale`: torch-pruning's group L1 weight norm and BN-scale
  criteria (mean-normalized per group), ablation baselines that ignore the
  masks.

Plugins register more under the entry-point group `patrol_deploy.importances`
(a callable `(group, ImportanceInputs) -> Tensor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.registry import Registry


@dataclass
class ImportanceInputs:
    """What a criterion may read besides the group: the soft masks and, for `mask_taylor`, Taylor scores."""

    masks: SoftMasks | None = None
    taylor: dict[int, torch.Tensor] | None = None  # id(mask parameter) -> |m * dL/dm| per entry


Importance = Callable[[Any, ImportanceInputs], torch.Tensor]
IMPORTANCES: Registry[Importance] = Registry("pruning importance", "patrol_deploy.importances")
TAYLOR = {"mask_taylor"}  # criteria that need the Taylor scores computed before each round


def _over_masks(group: Any, inputs: ImportanceInputs,
                value: Callable[[nn.Parameter], torch.Tensor]) -> torch.Tensor | None:
    """Mean of `value(mask)` over the group's mask parameters, per root channel; None if it has no mask."""
    n = len(group[0].idxs)
    total, count = torch.zeros(n), torch.zeros(n)
    seen: set[int] = set()
    for item in group:
        layer = item.dep.target.module
        if not isinstance(layer, nn.Parameter) or id(layer) in seen:
            continue
        seen.add(id(layer))
        vals = value(layer).detach().flatten().cpu()
        root = torch.tensor(item.root_idxs)
        total.index_add_(0, root, vals[torch.tensor(item.idxs)])
        count.index_add_(0, root, torch.ones(len(root)))
    return total / count.clamp_min(1) if count.max() > 0 else None


def _weight_l1(group: Any) -> torch.Tensor:
    """The root layer's per-channel L1 weight norm, mean-normalized (for groups without a mask)."""
    w = group[0].dep.target.module.weight.detach().cpu()
    total = w.abs().flatten(1).sum(1)
    return total / total.mean().clamp_min(1e-12)


def _masked(value: Callable[[nn.Parameter, ImportanceInputs], torch.Tensor]) -> Importance:
    """A mask-based criterion; groups without a mask fall back to the root weight's L1 norm."""
    def score(group: Any, inputs: ImportanceInputs) -> torch.Tensor:
        out = _over_masks(group, inputs, lambda p: value(p, inputs))
        return out if out is not None else _weight_l1(group)
    score.__doc__ = value.__doc__
    return score


def _mask_gamma(mask: nn.Parameter, inputs: ImportanceInputs) -> torch.Tensor:
    """|m * gamma| / the layer's reference |gamma|: the normalized scale the sparsity term shrinks."""
    assert inputs.masks is not None
    bn, ref = inputs.masks.by_parameter()[id(mask)]
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mask.flatten())
    return (mask.detach().flatten() * gamma).abs() / ref


def _mask(mask: nn.Parameter, inputs: ImportanceInputs) -> torch.Tensor:
    """|m|."""
    return mask.detach().abs()


def _mask_taylor(mask: nn.Parameter, inputs: ImportanceInputs) -> torch.Tensor:
    """|m| x the Taylor score of the PATROL objective."""
    vals = mask.detach().abs().flatten()
    if inputs.taylor is not None and id(mask) in inputs.taylor:
        vals = vals * inputs.taylor[id(mask)].to(vals.device)
    return vals


def _torch_pruning(name: str, **kwargs: Any) -> Importance:
    def score(group: Any, inputs: ImportanceInputs) -> torch.Tensor:
        import torch_pruning as tp

        out = getattr(tp.importance, name)(**kwargs)(group)
        return out.detach().cpu() if out is not None else _weight_l1(group)
    score.__doc__ = f"torch-pruning's {name} ({kwargs or 'defaults'})."
    return score


IMPORTANCES.add("mask_gamma", _masked(_mask_gamma))
IMPORTANCES.add("mask", _masked(_mask))
IMPORTANCES.add("mask_taylor", _masked(_mask_taylor))
IMPORTANCES.add("magnitude", _torch_pruning("GroupMagnitudeImportance", p=1))
IMPORTANCES.add("bn_scale", _torch_pruning("BNScaleImportance"))

__all__ = ["IMPORTANCES", "TAYLOR", "Importance", "ImportanceInputs"]
