"""Model-inversion attacks on the uploaded features: white-box rMLE, black-box inverse network, query-free.

Each attack is a function `AttackContext -> Reconstruction` in `ATTACKS`
(attacks/registry.py), built-ins and plugins alike declared in the
`patrol_deploy.attacks` entry-point group and loaded on first use;
`run_attacks(names, ctx)` runs and scores them. Attacks reach the edge only
through an `EdgeRunner`, so the same suite attacks the torch edge and an
exported ONNX / INT8 one.
"""

from __future__ import annotations

from patrol_deploy.attacks.decoder import build_decoder
from patrol_deploy.attacks.metrics import ImageScores, score_images
from patrol_deploy.attacks.registry import ATTACKS
from patrol_deploy.attacks.runner import EdgeRunner, TorchEdgeRunner
from patrol_deploy.attacks.suite import Attack, AttackContext, AttackResult, Reconstruction, SuiteResult, run_attacks

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "EdgeRunner", "ImageScores", "Reconstruction",
           "SuiteResult", "TorchEdgeRunner", "build_decoder", "run_attacks", "score_images"]
