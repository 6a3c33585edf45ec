"""The edge runner: what an attack needs from the deployed edge, torch or exported.

Attacks read target features through `features()`, which may be an ONNX /
INT8 model run by ONNX Runtime or TensorRT. Gradient-based attacks
(white-box rMLE) need a differentiable model: they use `torch_module` (the
float torch edge) for gradients and the runner only for the target features;
`differentiable` says whether those two are the same model.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class EdgeRunner(Protocol):
    name: str
    differentiable: bool
    torch_module: nn.Module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Uploaded features for normalized images x (N,C,H,W), as a float CPU tensor, no grad."""
        ...


class TorchEdgeRunner:
    """The float torch edge itself."""

    differentiable = True

    def __init__(self, edge: nn.Module, name: str = "torch") -> None:
        self.name = name
        self.torch_module = edge.eval()

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        dev = next(self.torch_module.parameters()).device
        return self.torch_module(x.to(dev)).float().cpu()
