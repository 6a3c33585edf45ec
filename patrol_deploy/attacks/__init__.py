"""Model-inversion attacks on the uploaded features: white-box rMLE, black-box inverse network, query-free.

Each attack is a function `AttackContext -> Reconstruction` registered in
`ATTACKS` (plugins arrive through the `patrol_deploy.attacks` entry-point
group); `run_attacks(names, ctx)` runs and scores them. Attacks reach the edge
only through an `EdgeRunner`, so the same suite attacks the torch edge and an
exported ONNX / INT8 one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patrol_deploy.registry import Registry

if TYPE_CHECKING:
    from patrol_deploy.attacks.suite import Attack

ATTACKS: Registry[Attack] = Registry("attack", "patrol_deploy.attacks")

# The built-in attacks register themselves on import; they need ATTACKS defined above.
from patrol_deploy.attacks import blackbox, query_free, whitebox  # noqa: E402, F401
from patrol_deploy.attacks.decoder import build_decoder  # noqa: E402
from patrol_deploy.attacks.metrics import ImageScores, score_images  # noqa: E402
from patrol_deploy.attacks.runner import EdgeRunner, TorchEdgeRunner  # noqa: E402
from patrol_deploy.attacks.suite import (  # noqa: E402
    Attack,
    AttackContext,
    AttackResult,
    Reconstruction,
    SuiteResult,
    run_attacks,
)

__all__ = ["ATTACKS", "Attack", "AttackContext", "AttackResult", "EdgeRunner", "ImageScores", "Reconstruction",
           "SuiteResult", "TorchEdgeRunner", "build_decoder", "run_attacks", "score_images"]
