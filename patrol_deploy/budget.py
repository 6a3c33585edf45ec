"""Edge cost per split point (MACs, parameters, upload size) and the deepest split within a budget."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from patrol_deploy.config import BudgetConfig
from patrol_deploy.errors import BudgetError
from patrol_deploy.models.blocknet import BlockNet
from patrol_deploy.split import cut, split_points

DTYPE_BYTES = {"float32": 4, "float16": 2, "int8": 1}


@dataclass
class EdgeCost:
    """What the edge partition of one split costs, per image."""

    split: str
    edge_macs: int
    edge_params: int
    feature_shape: tuple[int, ...]
    upload_bytes: int
    violations: list[str]
    terminal: bool = False  # the cloud keeps no block with parameters working on spatial maps (see split_costs)

    @property
    def fits(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "feature_shape": list(self.feature_shape), "fits": self.fits}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EdgeCost:
        """The inverse of `as_dict`."""
        return cls(d["split"], int(d["edge_macs"]), int(d["edge_params"]), tuple(d["feature_shape"]),
                   int(d["upload_bytes"]), list(d["violations"]), bool(d.get("terminal", False)))


def count_macs_params(module: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int, tuple[int, ...]]:
    """MACs and parameters of `module` for one input of `input_shape` (C,H,W), and its output shape."""
    import torch_pruning as tp

    was_training = module.training
    module.eval()
    try:
        example = torch.zeros(1, *input_shape, device=next(module.parameters()).device)
        with torch.no_grad():
            out = module(example)
            macs, params = tp.utils.count_ops_and_params(module, example)
    finally:
        module.train(was_training)
    return int(macs), int(params), tuple(out.shape[1:])


def violations(macs: int, params: int, upload: int, budget: BudgetConfig) -> list[str]:
    """Human-readable budget violations (empty when it fits)."""
    out = []
    for label, value, limit in (("edge MACs", macs, budget.edge_macs), ("edge params", params, budget.edge_params),
                                ("upload bytes", upload, budget.upload_bytes)):
        if limit is not None and value > limit:
            out.append(f"{label} {value:,} > budget {int(limit):,}")
    return out


def edge_cost(edge: nn.Module, split: str, input_shape: tuple[int, ...], budget: BudgetConfig) -> EdgeCost:
    macs, params, feat = count_macs_params(edge, input_shape)
    upload = int(torch.tensor(feat).prod()) * DTYPE_BYTES[budget.upload_dtype]
    return EdgeCost(split, macs, params, feat, upload, violations(macs, params, upload, budget))


def split_costs(model: BlockNet, input_shape: tuple[int, ...], budget: BudgetConfig) -> list[EdgeCost]:
    """The edge cost of every candidate split, shallowest first, each marked terminal or intermediate.

    A split is terminal when the cloud after it keeps no block with parameters that works on a spatial feature
    map (e.g. the pooled embedding, or the last stage before pooling): the edge then runs the whole backbone,
    a different deployment from collaborative inference.
    """
    costs = [edge_cost(cut(model, name)[0], name, input_shape, budget) for name in split_points(model)]
    blocks = list(model.blocks.values())
    for k, cost in enumerate(costs):
        cost.terminal = not any(
            any(p.numel() for p in blocks[j].parameters()) and len(costs[j - 1].feature_shape) == 3
            and costs[j - 1].feature_shape[1] * costs[j - 1].feature_shape[2] > 1 for j in range(k + 1, len(blocks)))
    return costs


def deepest_fitting(costs: list[EdgeCost]) -> EdgeCost:
    """The deepest split whose unpruned edge fits; BudgetError naming the smallest split if none does."""
    fitting = [c for c in costs if c.fits]
    if not fitting:
        first = costs[0]
        raise BudgetError(
            f"no split fits the edge budget: even the shallowest split '{first.split}' has "
            f"{'; '.join(first.violations)}.",
            "raise the budget (budget.edge_macs / edge_params / upload_bytes) or use a smaller model",
        )
    return fitting[-1]
