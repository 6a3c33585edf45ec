"""PATROL: privacy-oriented pruning (soft masks, block-wise Lipschitz penalty, adversarial reconstruction training,
structured pruning to the edge budget)."""

from patrol_deploy.patrol.masks import SoftMasks
from patrol_deploy.patrol.prune import EdgePruner
from patrol_deploy.patrol.stage import patrol_stage, run_patrol

__all__ = ["EdgePruner", "SoftMasks", "patrol_stage", "run_patrol"]
