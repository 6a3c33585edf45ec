"""Cheap checks before any training: the budget can be met, and every named component exists.

`train`, `patrol` and `run` call `preflight` right after loading the config. It builds the model (no training,
no data) and counts the edge cost of every split, so a budget nothing can meet fails in seconds with the table
of costs, instead of after the baseline's training (which then left a checkpoint in a folder without manifest).
"""

from __future__ import annotations

from patrol_deploy.budget import EdgeCost, deepest_fitting, split_costs
from patrol_deploy.config import Config
from patrol_deploy.errors import ConfigError

_ANY_CLASSES = 2  # the edge's cost does not depend on the number of classes (the head runs in the cloud)


def preflight(cfg: Config, patrol: bool = True, components: bool = False) -> list[EdgeCost]:
    """Refuse a budget that cannot be met (and, with `components`, unknown defense / attack names) before training.

    The baseline needs a split whose unpruned edge fits; with `patrol` (and pruning enabled), pruning must also be
    able to reach a deeper split within `patrol.prune.max_reduction`. Returns the edge cost of every split.
    """
    if components:
        check_component_names(cfg)
    from patrol_deploy.models import create_model

    model = create_model(cfg.model, _ANY_CLASSES, cfg.data.channels)
    costs = split_costs(model, (cfg.data.channels, cfg.data.image_size, cfg.data.image_size), cfg.budget)
    base = deepest_fitting(costs)  # BudgetError naming the shallowest split's violations
    if patrol and cfg.patrol.prune.enabled:
        from patrol_deploy.patrol.stage import candidate_splits

        candidate_splits(costs, base, cfg)  # BudgetError when pruning cannot buy a deeper split
    return costs


def check_component_names(cfg: Config) -> None:
    """Every defense in `defenses.names` and `defenses.grids`, every attack in `attacks.names` and the pruning
    importance `patrol.prune.importance` is registered (plugins included), and INT8's calibration method is one
    the route offers; ConfigError naming the key otherwise. Checked here, not in config.py: plugins register
    more names, and the registries import torch."""
    if cfg.quantize.mode == "int8":
        from patrol_deploy.deployment.quantize import calibration_method_for

        calibration_method_for(cfg.quantize.route, cfg.quantize.calibration_method)
    from patrol_deploy.attacks import ATTACKS
    from patrol_deploy.defenses import DEFENSES
    from patrol_deploy.patrol.importance import IMPORTANCES

    for key, registry, names in (("defenses.names", DEFENSES, cfg.defenses.names),
                                 ("defenses.grids", DEFENSES, list(cfg.defenses.grids)),
                                 ("attacks.names", ATTACKS, cfg.attacks.names),
                                 ("patrol.prune.importance", IMPORTANCES, [cfg.patrol.prune.importance])):
        for name in names:
            try:
                registry.get(name)
            except ConfigError as exc:
                raise ConfigError(f"{key}: {exc.problem}", exc.fix) from exc
