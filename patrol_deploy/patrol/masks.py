"""Soft channel masks on the edge's batch-norm outputs, trained with a sparsity penalty and folded away.

The penalty acts on what actually scales a channel, its normalized scale
s = |m * gamma| / (the layer's mean |gamma| when the masks were attached):
penalizing the mask alone lets gamma grow back. It is scale-invariant per
layer, the Hoyer measure ||s||_1 / ||s||_2 summed over layers (DeepHoyer, Yang
et al. 2020): behind every edge convolution sits a batch norm that undoes a
uniform scaling of its input channels, so an L1 penalty (network slimming's)
only shrinks a whole layer uniformly at no cost to the task (measured here on
CIFAR-10: every scale ended between 0.076 and 0.083, nothing to rank), while
the Hoyer measure is lowest when few channels carry the layer and the rest go
to zero. Its value does not depend on the layer's gamma scale or on a
uniform rescaling of the layer, so one `patrol.prune.sparsity_weight` is meant
to carry across models (measured on the small ResNet only, README). The same scales rank
channels for pruning (patrol/importance.py, `mask_gamma`).

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


def _gamma(bn: nn.BatchNorm2d) -> torch.Tensor:
    """The layer's scale (its affine weight; ones without one)."""
    return bn.weight if bn.weight is not None else torch.ones(bn.num_features, device=bn.running_mean.device
                                                              if bn.running_mean is not None else None)


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
        # each layer's mean |gamma| when the masks were attached: the per-layer unit of the normalized scales
        self.ref = {k: float(_gamma(bn).detach().abs().mean().clamp_min(1e-12)) for k, bn in self.bns.items()}
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

    def scales(self) -> dict[str, torch.Tensor]:
        """|m * gamma| / (the layer's mean |gamma| at the start) per channel, per layer (differentiable)."""
        return {k: (self.params[k].flatten() * _gamma(bn)).abs() / self.ref[k] for k, bn in self.bns.items()}

    def sparsity(self) -> torch.Tensor:
        """The sparsity penalty: sum over layers of ||s||_1 / ||s||_2 of the normalized scales (module doc)."""
        zero = torch.zeros((), device=self.parameters()[0].device)
        return sum((s.sum() / s.norm().clamp_min(1e-12) for s in self.scales().values()), zero)

    def scale_values(self) -> list[float]:
        """Every channel's normalized scale, for the report's histogram."""
        with torch.no_grad():
            return [float(v) for s in self.scales().values() for v in s.cpu()]

    def by_parameter(self) -> dict[int, tuple[nn.BatchNorm2d, float]]:
        """id(mask parameter) -> (its batch-norm, the layer's reference |gamma|), for importance scores."""
        return {id(self.params[k]): (bn, self.ref[k]) for k, bn in self.bns.items()}

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
