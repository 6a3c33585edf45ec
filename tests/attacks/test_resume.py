"""Finished attacks are checkpointed and reused after an interruption, with the numbers of an uninterrupted run,
and on a randomized edge no attack's result depends on which attack ran first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import patrol_deploy.attacks.blackbox as blackbox
import patrol_deploy.attacks.whitebox as whitebox
from patrol_deploy.attacks import AttackContext, TorchEdgeRunner, run_attacks
from patrol_deploy.attacks.suite import SuiteResult
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.data import DataBundle
from patrol_deploy.defenses import defended_copy
from patrol_deploy.defenses.feature import FeatureNoise
from patrol_deploy.models import BlockNet
from patrol_deploy.split import cut
from tests.attacks.conftest import attack_config

NAMES = ["whitebox", "blackbox"]


def noisy_context(model: BlockNet, bundle: DataBundle) -> AttackContext:
    """A fresh context (nothing cached) against an edge that adds Gaussian noise, as the noise defense does."""
    edge, cloud = cut(defended_copy(model, "stem", FeatureNoise(1.0, 1.0)), "stem")
    cfg = attack_config(whitebox={"iterations": 20}, blackbox={"epochs": 3})
    return AttackContext.from_test_split(TorchEdgeRunner(edge), cloud, bundle, cfg.attacks, seed=0)


def numbers(suite: SuiteResult) -> dict[str, Any]:
    """Every attack's report entry without its wall time, and its reconstructions."""
    entries = {name: {k: v for k, v in r.as_dict().items() if k != "seconds"} for name, r in suite.results.items()}
    return {"entries": entries, "images": {name: r.reconstructions for name, r in suite.results.items()}}


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a["entries"] == b["entries"]
    for name, images in a["images"].items():
        torch.testing.assert_close(images, b["images"][name], rtol=0, atol=0)


def test_interrupted_suite_reuses_finished_attacks(mnist_model: BlockNet, mnist_bundle: DataBundle, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    reference = numbers(run_attacks(NAMES, noisy_context(mnist_model, mnist_bundle)))
    ckpts = Checkpoints(tmp_path, "key")

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt  # the process dies while the black-box decoder trains

    monkeypatch.setattr(blackbox, "train_inverse", killed)
    with pytest.raises(KeyboardInterrupt):
        run_attacks(NAMES, noisy_context(mnist_model, mnist_bundle), ckpts)
    monkeypatch.undo()
    assert sorted(f.name for f in tmp_path.iterdir()) == ["attack-whitebox.pt"]

    calls = {"rmle": 0}
    real_rmle = whitebox.rmle

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls["rmle"] += 1
        return real_rmle(*args, **kwargs)

    monkeypatch.setattr(whitebox, "rmle", counted)
    resumed = numbers(run_attacks(NAMES, noisy_context(mnist_model, mnist_bundle), ckpts))
    assert calls["rmle"] == 0  # the finished white-box attack was not run again
    assert_same(reference, resumed)


def test_attack_order_does_not_change_results_on_a_random_edge(mnist_model: BlockNet,
                                                               mnist_bundle: DataBundle) -> None:
    forward = numbers(run_attacks(NAMES, noisy_context(mnist_model, mnist_bundle)))
    backward = numbers(run_attacks(NAMES[::-1], noisy_context(mnist_model, mnist_bundle)))
    assert_same(forward, backward)
