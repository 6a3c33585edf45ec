"""Structured pruning of the edge partition on torch-pruning's DependencyGraph.

Channel importance comes from a registered criterion (patrol/importance.py;
by default the soft masks' normalized scale |m * gamma| that PATROL's sparsity
term shapes). Pruning runs in rounds; `patrol.prune.progressive_steps` splits
the way to the budget into steps with recovery training between them
(patrol/stage.py). Channels are
removed physically, residual groups stay consistent because torch-pruning
prunes a whole coupled group at once, and the uploaded tensor's width is
either kept (groups that reach the cloud are skipped) or pruned together with
the cloud's consumers and the surrogate decoder's input. Pruning repeats until
the edge meets the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from patrol_deploy.budget import EdgeCost, edge_cost
from patrol_deploy.config import BudgetConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.patrol.importance import IMPORTANCES, ImportanceInputs
from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.split import cut

MIN_KEEP_FRACTION = 0.25  # default floor: a quarter of a group's original channels (patrol.prune.min_channels)


@dataclass
class PruneResult:
    before: EdgeCost
    after: EdgeCost
    rounds: int
    removed: dict[str, int] = field(default_factory=dict)  # root layer -> channels removed
    history: list[Any] = field(default_factory=list)  # torch-pruning's pruning history
    at_floor: bool = False  # stopped because every group is at its channel floor


def check_trainable(model: nn.Module) -> None:
    """torch-pruning silently prunes nothing on frozen parameters or under no_grad; refuse both up front."""
    if not torch.is_grad_enabled():
        raise ModelError("pruning was called under torch.no_grad(): the dependency graph would be empty and "
                         "nothing would be pruned.", "call it with gradients enabled")
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad and not n.endswith("bnneck.bias")]
    if frozen:
        raise ModelError(f"{len(frozen)} parameters are frozen (e.g. '{frozen[0]}'); torch-pruning would silently "
                         "skip their layers.", "unfreeze them (p.requires_grad_(True)) before PATROL")


def _overshoot(cost: EdgeCost, budget: BudgetConfig) -> float:
    """How far over budget the edge is (value / limit, worst of MACs and params); cost scales ~ channels^2."""
    over = 1.0
    for value, limit in ((cost.edge_macs, budget.edge_macs), (cost.edge_params, budget.edge_params)):
        if limit is not None:
            over = max(over, value / limit)
    return over


def _out_channels(layer: nn.Module) -> int:
    return int(layer.out_channels if isinstance(layer, nn.Conv2d) else layer.out_features)  # type: ignore[arg-type]


class _WithSurrogate(nn.Module):
    """The model plus the surrogate decoder reading its split tensor, traced as one graph so that pruning the
    uploaded tensor's channels also prunes the decoder's input layers."""

    def __init__(self, model: BlockNet, split: str, decoder: nn.Module) -> None:
        super().__init__()
        self.model, self.decoder, self.split = model, decoder, split

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        edge, cloud = cut(self.model, self.split)
        z = edge(x)
        return cloud(z), self.decoder(z)


class EdgePruner:
    """Removes edge channels in rounds, ranked globally by importance, until the budget is met."""

    def __init__(self, model: BlockNet, split: str, masks: SoftMasks | None, input_shape: tuple[int, ...],
                 keep_split_width: bool = True, round_to: int = 1, decoder: nn.Module | None = None,
                 min_channels: int | None = None, deploy_min_channels: int = 1, importance: str = "mask_gamma") -> None:
        import torch_pruning as tp

        self.model, self.split, self.masks, self.input_shape = model, split, masks, input_shape
        self.keep_split_width = keep_split_width
        self.round_to = round_to
        self.min_channels = min_channels
        self.importance = IMPORTANCES.get(importance)
        check_trainable(model)
        edge, cloud = cut(model, split)
        self.edge_modules = set(edge.modules())
        self.cloud_layers = [m for m in cloud.modules() if isinstance(m, nn.Conv2d | nn.Linear | nn.BatchNorm2d |
                                                                      nn.BatchNorm1d)]
        self.cloud_set = set(self.cloud_layers)
        device = next(model.parameters()).device
        example = torch.zeros(2, *input_shape, device=device)
        was = model.training
        traced: nn.Module = model if decoder is None or keep_split_width else _WithSurrogate(model, split, decoder)
        traced.eval()
        try:
            with torch.enable_grad():
                self.dg = tp.DependencyGraph().build_dependency(
                    traced, example_inputs=example, unwrapped_parameters=masks.unwrapped() if masks else None)
        except Exception as exc:  # torch-pruning raises many types while tracing unusual graphs
            raise ModelError(
                f"torch-pruning cannot trace this model ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}).",
                "set patrol.prune.enabled=false, or pick a split before the module that fails to trace",
            ) from exc
        finally:
            traced.train(was)
        self._original: dict[nn.Module, int] = {}
        for g in self.groups():
            self._original[g[0].dep.target.module] = len(g[0].idxs)
        narrow = {r: n for r, n in self._original.items() if min_channels is not None and n < min_channels}
        if narrow:
            root, n = min(narrow.items(), key=lambda rn: rn[1])
            raise ModelError(
                f"patrol.prune.min_channels {min_channels} is more than layer '{self._name(root)}' has ({n} "
                f"channels{f'; {len(narrow) - 1} more layers are narrower too' if len(narrow) > 1 else ''}) "
                f"at split '{split}'.", f"set patrol.prune.min_channels to at most {min(self._original.values())} "
                "(the narrowest prunable layer), or leave it unset for a quarter of each layer's width")
        if not self._original:
            raise ModelError(f"no prunable channel group in the edge at split '{split}'"
                             + (" (every group reaches the uploaded tensor)" if keep_split_width else "") + ".",
                             "use a deeper split or set patrol.prune.keep_split_width=false")
        self.deploy_floor = self._deploy_floors(edge, deploy_min_channels)

    def groups(self) -> list[Any]:
        """Prunable groups rooted in the edge; groups that reach the cloud only if the split width may change."""
        out = []
        for g in self.dg.get_all_groups(ignored_layers=self.cloud_layers, root_module_types=[nn.Conv2d, nn.Linear]):
            root = g[0].dep.target.module
            if root not in self.edge_modules:
                continue
            touches_cloud = any(item.dep.target.module in self.cloud_set for item in g)
            if touches_cloud and self.keep_split_width:
                continue
            out.append(g)
        return out

    def scores(self, group: Any, taylor: dict[int, torch.Tensor] | None = None) -> torch.Tensor:
        """Importance per root channel, by the pruner's criterion (patrol/importance.py)."""
        return self.importance(group, ImportanceInputs(self.masks, taylor))

    def _deploy_floors(self, edge: nn.Module, minimum: int) -> dict[nn.Module, int]:
        """Groups that must keep `minimum` channels so that every edge convolution with `minimum` channels on one
        side (what ModelOpt's INT8 rule quantizes, patrol_deploy.targets) still has them after pruning.

        Widest-coupled groups are pinned first (a ResNet's residual stream touches every block), then a group is
        pinned only if one of its convolutions would otherwise have no guaranteed wide side: the blocks' inner
        widths stay free to prune. The convolution reading the image is exempt (ModelOpt quantizes it anyway).
        """
        if minimum <= 1:
            return {}
        convs = [m for m in edge.modules() if isinstance(m, nn.Conv2d)]
        side: dict[tuple[nn.Conv2d, str], nn.Module] = {}  # (conv, "in" | "out") -> root of its prunable group
        for g in self.groups():
            root = g[0].dep.target.module
            for item in g:
                layer = item.dep.target.module
                if isinstance(layer, nn.Conv2d) and layer in self.edge_modules:
                    kind = "out" if self.dg.is_out_channel_pruning_fn(item.dep.handler) else "in"
                    side[(layer, kind)] = root
        touched: dict[nn.Module, int] = {}
        for root in side.values():
            touched[root] = touched.get(root, 0) + 1
        pinned: set[nn.Module] = set()

        def wide(conv: nn.Conv2d, kind: str) -> bool:  # this side keeps >= minimum channels whatever pruning does
            root = side.get((conv, kind))
            width = conv.in_channels if kind == "in" else conv.out_channels
            return root in pinned if root is not None else width >= minimum

        for root in sorted(touched, key=lambda r: -touched[r]):  # stable: model order among equals
            if self._original[root] < minimum:
                continue
            for (conv, kind), owner in side.items():
                covered = max(conv.in_channels, conv.out_channels) >= minimum
                other = "in" if kind == "out" else "out"
                if owner is root and covered and conv is not convs[0] and not wide(conv, other):
                    pinned.add(root)
                    break
        return {root: minimum for root in pinned}

    def floor(self, root: nn.Module, width: int) -> int:
        """The fewest channels a group rooted at `root` may keep: `min_channels` (never more than a layer has: the
        constructor refuses that), or by default the larger of
        `round_to` and a quarter of its original width; at least its deploy floor (`_deploy_floors`); rounded
        up to a multiple of `round_to` (a count the rounding can reach), and never more than it had."""
        original = self._original.get(root, width)
        wanted = self.min_channels if self.min_channels is not None else max(1, math.ceil(MIN_KEEP_FRACTION * original))
        wanted = max(wanted, self.deploy_floor.get(root, 1))
        return min(original, math.ceil(wanted / self.round_to) * self.round_to)

    def all_at_floor(self) -> bool:
        """Whether no prunable group can lose another channel."""
        return all(len(g[0].idxs) <= self.floor(g[0].dep.target.module, len(g[0].idxs)) for g in self.groups())

    def prune_round(self, ratio: float, taylor: dict[int, torch.Tensor] | None = None) -> int:
        """Remove the `ratio` least important of the remaining prunable channels; returns how many were removed."""
        candidates: list[tuple[float, int, int]] = []  # (score, group index, channel)
        groups = self.groups()
        allowance = []
        scores = [self.scores(g, taylor) for g in groups]
        for gi, (g, s) in enumerate(zip(groups, scores, strict=True)):
            allowance.append(max(0, len(s) - self.floor(g[0].dep.target.module, len(s))))
            candidates += [(float(v), gi, c) for c, v in enumerate(s.tolist())]
        total = sum(len(g[0].idxs) for g in groups)
        budget = max(1, round(ratio * total))
        chosen: dict[int, list[int]] = {}
        for _, gi, c in sorted(candidates):
            if budget == 0:
                break
            if len(chosen.get(gi, [])) < allowance[gi]:
                chosen.setdefault(gi, []).append(c)
                budget -= 1
        if self.round_to > 1:
            chosen = self._rounded(groups, chosen, allowance, scores)
        for gi, idxs in chosen.items():
            if idxs:
                groups[gi].prune(idxs=sorted(idxs))
        return sum(len(v) for v in chosen.values())

    def _rounded(self, groups: list[Any], chosen: dict[int, list[int]], allowance: list[int],
                 scores: list[torch.Tensor]) -> dict[int, list[int]]:
        """Adjust each group's removal so the channels it keeps are a multiple of `round_to` (to the nearest
        multiple, within the group's floor): narrow, odd channel counts do not turn MACs into speed. When
        rounding to the nearest multiple removes nothing at all, the group the round wanted to cut most (that
        still can be cut) drops to the next multiple below, so pruning keeps making progress."""
        def removal(gi: int, kept: float) -> list[int]:
            n = len(groups[gi][0].idxs)
            keep = max(self.round_to, int(kept) * self.round_to)
            remove = min(max(0, n - keep), allowance[gi])
            if (n - remove) % self.round_to:  # the floor forbids the rounded count: keep the group as it is
                remove = 0
            return torch.argsort(scores[gi]).tolist()[:remove]

        def share(gi: int) -> float:
            return (len(groups[gi][0].idxs) - len(chosen[gi])) / self.round_to

        out = {gi: removal(gi, round(share(gi))) for gi in chosen}
        if not any(out.values()):
            for gi in sorted(chosen, key=lambda g: -len(chosen[g])):
                out[gi] = removal(gi, math.ceil(share(gi)) - 1)
                if out[gi]:
                    break
        return out

    def prune_to_budget(self, budget: BudgetConfig, step_ratio: float, max_rounds: int,
                        taylor_fn: Callable[[], dict[int, torch.Tensor]] | None = None) -> PruneResult:
        """Prune in rounds until the edge fits `budget`; the result says whether it does.

        Each round removes at most `step_ratio` of the prunable channels, less when close to the budget
        (MACs scale roughly with the square of the kept channel share), so the edge lands just under it.
        """
        before = self.cost(budget)
        cost = before
        rounds = 0
        while not cost.fits and rounds < max_rounds:
            ratio = min(step_ratio, max(0.02, 1.0 - _overshoot(cost, budget) ** -0.5))
            n_removed = self.prune_round(ratio, taylor_fn() if taylor_fn else None)
            rounds += 1
            cost = self.cost(budget)
            if n_removed == 0:
                break
        at_floor = not cost.fits and self.all_at_floor()
        removed = {self._name(m): n - _out_channels(m) for m, n in self._original.items()}
        history = [[self._name(h[0]), *h[1:]] for h in self.dg.pruning_history()]
        return PruneResult(before, cost, rounds, {k: v for k, v in removed.items() if v}, history, at_floor)

    def _name(self, module: nn.Module | str) -> str:
        """The module's name in the model (not in the traced model-plus-decoder wrapper)."""
        name = module if isinstance(module, str) else self.dg._module2name[module]
        return name.removeprefix("model.") if isinstance(self.dg.model, _WithSurrogate) else name

    def cost(self, budget: BudgetConfig) -> EdgeCost:
        return edge_cost(cut(self.model, self.split)[0], self.split, self.input_shape, budget)
