"""Baseline defenses PATROL is compared with: feature noise, feature dropout and NoPeek.

Each is a `Defense` registered in `DEFENSES` (plugins arrive through the
`patrol_deploy.defenses` entry-point group; PATROL's `adversarial_only`
registers itself from the PATROL module). `defense.train(job, strength)`
fine-tunes a defended copy of the baseline; `match_utility` picks the
strongest setting that keeps utility within a tolerance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from patrol_deploy.registry import Registry

if TYPE_CHECKING:
    from patrol_deploy.defenses.base import Defense

DEFENSES: Registry[Defense] = Registry("defense", "patrol_deploy.defenses")

# The built-in defenses register themselves on import; they need DEFENSES defined above.
from patrol_deploy.defenses import feature, nopeek  # noqa: E402, F401
from patrol_deploy.defenses.base import (  # noqa: E402
    DefendedModel,
    Defense,
    DefenseJob,
    defended_copy,
    finetune,
    match_utility,
)
from patrol_deploy.defenses.feature import FeatureDropout, FeatureNoise  # noqa: E402
from patrol_deploy.defenses.nopeek import distance_correlation  # noqa: E402

__all__ = ["DEFENSES", "DefendedModel", "Defense", "DefenseJob", "FeatureDropout", "FeatureNoise",
           "defended_copy", "distance_correlation", "finetune", "match_utility"]
