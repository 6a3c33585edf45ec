"""Baseline defenses PATROL is compared with: feature noise, feature dropout and NoPeek.

Each is a `Defense` in `DEFENSES` (defenses/registry.py), built-ins (PATROL's
`adversarial_only` included) and plugins alike declared in the
`patrol_deploy.defenses` entry-point group and loaded on first use. `defense.train(job, strength)`
fine-tunes a defended copy of the baseline; `match_utility` picks the
strongest setting that keeps utility within a tolerance.
"""

from __future__ import annotations

from patrol_deploy.defenses.base import DefendedModel, Defense, DefenseJob, defended_copy, finetune, match_utility
from patrol_deploy.defenses.registry import DEFENSES

__all__ = ["DEFENSES", "DefendedModel", "Defense", "DefenseJob", "defended_copy", "finetune", "match_utility"]
