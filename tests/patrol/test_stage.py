"""The PATROL stage end to end on real digits: deeper split, budget met, ablations, unreachable budgets."""

from __future__ import annotations

from pathlib import Path

import pytest

from patrol_deploy.budget import edge_cost
from patrol_deploy.config import Config
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import BudgetError
from patrol_deploy.modelio import load_model_dir
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol import patrol_stage, run_patrol
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.split import cut, split_points

from .conftest import small_config

SHAPE = (1, 16, 16)


def test_patrol_prunes_to_a_deeper_split_within_budget(trained: tuple[Config, BlockNet], digits_bundle: DataBundle,
                                                       tmp_path: Path) -> None:
    baseline = trained[1]
    cfg = small_config(finetune_epochs=2)  # 1 fine-tune epoch after pruning: see below
    run = RunFolder(tmp_path)
    model, summary = patrol_stage(cfg, digits_bundle, baseline, run)
    assert summary.pruning is not None
    points = split_points(model)
    assert summary.baseline_split["split"] == "layer1"
    assert points.index(summary.split) > points.index("layer1")
    assert summary.edge_after["edge_macs"] <= cfg.budget.edge_macs < summary.edge_before["edge_macs"]
    cost = edge_cost(cut(model, summary.split)[0], summary.split, SHAPE, cfg.budget)
    assert cost.fits and cost.edge_macs == summary.edge_after["edge_macs"]
    assert sum(summary.pruning["removed_channels"].values()) > 0
    # PATROL keeps most of the baseline's utility (measured in the same run), not a fixed number. Measured with 1
    # mask + 2 fine-tune epochs (seeds 0-4 of the baseline, ATEN_CPU_CAPABILITY default/avx2 x OMP_NUM_THREADS 1/2,
    # 20 runs): utility_after / utility_before 0.75-1.32; 0.4 leaves a factor of 1.9 for other CPUs, and a PATROL
    # model at chance (10 %) would be at about 0.13. With 1 + 1 epochs, default/avx2 with 1 thread gave 19-66 %
    # after a 72-88 % baseline, which no threshold can carry.
    assert summary.utility_after > 0.4 * summary.utility_before
    loaded, meta = load_model_dir(run.path("patrol"))
    assert meta.split == summary.split
    assert not any("patrol_masks" in k for k in loaded.state_dict())
    assert run.is_current("patrol", __import__("patrol_deploy.patrol.stage", fromlist=["x"]).stage_config(cfg))
    assert (run.path("patrol", "pruning_history.json")).exists()


def test_pruning_off_trains_at_the_unpruned_split(trained: tuple[Config, BlockNet],
                                                  digits_bundle: DataBundle) -> None:
    cfg = small_config(prune={"enabled": False}, lipschitz={"enabled": False})
    _, summary = run_patrol(cfg, digits_bundle, trained[1])
    assert summary["split"] == "layer1" and summary["pruning"] is None
    assert summary["edge_after"]["edge_macs"] == summary["baseline_split"]["edge_macs"]
    assert summary["ablation"] == {"lipschitz": False, "adversarial": True, "prune": False, "distill": True}


def test_unreachable_budget_names_the_closest_split(trained: tuple[Config, BlockNet],
                                                    digits_bundle: DataBundle) -> None:
    cfg = small_config(prune={"max_reduction": 0.3})
    with pytest.raises(BudgetError, match=r"closest, 'layer2', needs 44% of its edge removed"):
        run_patrol(cfg, digits_bundle, trained[1])


def test_pruning_rounds_exhausted_reports_how_far(trained: tuple[Config, BlockNet],
                                                  digits_bundle: DataBundle) -> None:
    cfg = small_config(prune={"max_rounds": 1, "step_ratio": 0.02, "split": "layer3", "allow_terminal_split": True},
                       adversarial={"enabled": False})
    with pytest.raises(BudgetError, match=r"closest was 'layer3' with edge MACs [\d,]+ > budget 1,000,000 after 1 "):
        run_patrol(cfg, digits_bundle, trained[1])
