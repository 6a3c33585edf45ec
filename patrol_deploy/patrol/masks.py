"""Soft channel masks on the edge's batch-norm outputs, trained with an L1 penalty and folded away.

Each mask is a (1, C, 1, 1) parameter held in `model.patrol_masks` (a
ParameterDict outside any prunable layer, so torch-pruning treats it as an
unwrapped parameter and prunes it together with its channels) and applied by
a forward hook on the batch-norm. Because the mask scales the BN output before
any nonlinearity, folding it into the BN's affine weights is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from patrol_deploy.errors import ModelError

ATTR = "patrol_masks"


def _key(name: str) -> str:
    return name.replace(".", "__")


class SoftMasks:
    """Masks attached to the batch-norm layers of `modules` (the edge partition) inside `model`."""

    def __init__(self, model: nn.Module, edge: nn.Module) -> None:
        self.model = model
        names = {id(m): n for n, m in model.named_modules()}
        self.bns: dict[str, nn.BatchNorm2d] = {}
        for m in edge.modules():
            if isinstance(m, nn.BatchNorm2d):
                self.bns[_key(names[id(m)])] = m
        if not self.bns:
            raise ModelError("the edge partition has no BatchNorm2d layer to put soft masks on.",
                             "use a split deeper than the first layer, or a model with batch norm")
        if hasattr(model, ATTR):
            raise ModelError("the model already carries PATROL masks.", "fold them (SoftMasks.fold) first")
        device = next(model.parameters()).device
        model.register_module(ATTR, nn.ParameterDict(
            {k: nn.Parameter(torch.ones(1, bn.num_features, 1, 1, device=device)) for k, bn in self.bns.items()}))
        self._hooks: list[RemovableHandle] = [
            bn.register_forward_hook(self._hook(k)) for k, bn in self.bns.items()]

    def _hook(self, key: str) -> Callable[[nn.Module, object, torch.Tensor], torch.Tensor]:
        def apply(module: nn.Module, inputs: object, output: torch.Tensor) -> torch.Tensor:
            return output * self.params[key]
        return apply

    @property
    def params(self) -> nn.ParameterDict:
        params: nn.ParameterDict = getattr(self.model, ATTR)
        return params

    def parameters(self) -> list[nn.Parameter]:
        return list(self.params.values())

    def l1(self) -> torch.Tensor:
        """Sum of |m| over every mask entry (the sparsity penalty)."""
        return sum((p.abs().sum() for p in self.params.values()), torch.zeros(()))

    def unwrapped(self) -> list[tuple[nn.Parameter, int]]:
        """(param, channel dim) pairs for torch-pruning's `unwrapped_parameters`."""
        return [(p, 1) for p in self.params.values()]

    def by_module(self) -> dict[nn.BatchNorm2d, torch.Tensor]:
        """Current |mask| per batch-norm layer (flattened to C)."""
        return {bn: self.params[k].detach().abs().flatten() for k, bn in self.bns.items()}

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the masks into the BN affine parameters and remove hooks and masks (output unchanged)."""
        for k, bn in self.bns.items():
            m = self.params[k].flatten()
            if bn.weight is None or bn.bias is None:
                raise ModelError(f"batch-norm '{k}' has no affine parameters to fold the mask into.",
                                 "use BatchNorm2d(affine=True) in the edge")
            if m.numel() != bn.num_features:
                raise ModelError(f"mask '{k}' has {m.numel()} entries but the layer has {bn.num_features} channels.",
                                 "prune masks together with their layers (pass SoftMasks.unwrapped())")
            bn.weight.mul_(m)
            bn.bias.mul_(m)
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        delattr(self.model, ATTR)
