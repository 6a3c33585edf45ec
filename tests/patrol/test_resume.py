"""An interrupted PATROL stage resumes from its checkpoints to the same model as an uninterrupted run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import patrol_deploy.patrol.stage as stage
import patrol_deploy.patrol.trainer as trainer
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import Config, DataConfig
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.models import BlockNet
from patrol_deploy.patrol import run_patrol

from .conftest import small_config


@pytest.fixture(scope="module")
def few_digits() -> DataBundle:
    """500 digits: enough for PATROL to prune and train, fast enough for five interrupted runs."""
    return load_data(DataConfig(source="digits", image_size=16, limit=500), seed=0)


class Interrupt(Exception):
    """Stands for the process being killed."""


def dies_on_call(real: Callable[..., Any], n: int, when: Callable[..., bool] = lambda *a: True) -> Callable[..., Any]:
    """`real`, except that its n-th call for which `when(*args)` holds raises Interrupt."""
    calls = {"n": 0}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if when(*args):
            calls["n"] += 1
            if calls["n"] == n:
                raise Interrupt
        return real(*args, **kwargs)
    return wrapper


def _run(cfg: Config, bundle: DataBundle, baseline: BlockNet, ckpts: Checkpoints | None) -> tuple[BlockNet, Any]:
    torch.manual_seed(cfg.seed)  # as patrol_stage does; a resumed process starts from the same seed
    return run_patrol(cfg, bundle, baseline, ckpts=ckpts)


def _assert_same(a: BlockNet, b: BlockNet) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        torch.testing.assert_close(sa[name], sb[name], rtol=0, atol=0, msg=name)


def test_patrol_resumes_after_each_phase(trained: tuple[Config, BlockNet], few_digits: DataBundle,
                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = small_config(mask_epochs=2, finetune_epochs=2, prune={"progressive_steps": 2}, search={"enabled": False})
    baseline = trained[1]
    reference, ref_summary = _run(cfg, few_digits, baseline, None)

    ckpts = Checkpoints(tmp_path / "checkpoints", "key")
    second_epoch = lambda split, c, reid, seed, epoch, ctx: epoch == 1  # noqa: E731
    kills = [  # (module, function, n-th call that dies, filter, checkpoint files present afterwards)
        (stage, "train_patrol", 1, None, {"warmup"}),  # after the surrogate warm-up
        (trainer, "train_batches", 1, second_epoch, {"warmup", "masks"}),  # in mask epoch 2
        (stage, "train_patrol", 2, None, {"warmup", "masks"}),  # in the recovery between two pruning steps
        (stage, "train_patrol", 3, None, {"warmup", "masks", "pruned"}),  # after pruning, before fine-tuning
        (trainer, "train_batches", 1, second_epoch, {"warmup", "masks", "pruned", "finetune"}),  # fine-tune epoch 2
    ]
    for module, name, n, when, files in kills:
        real = getattr(module, name)
        monkeypatch.setattr(module, name, dies_on_call(real, n, when or (lambda *a: True)))
        with pytest.raises(Interrupt):
            _run(cfg, few_digits, baseline, ckpts)
        monkeypatch.setattr(module, name, real)
        split = ref_summary["split"]
        assert {f.stem for f in (ckpts.folder / split).glob("*.pt")} == files
    resumed, summary = _run(cfg, few_digits, baseline, ckpts)
    _assert_same(reference, resumed)
    for s in (summary, ref_summary):  # how long the candidate took is the one thing a resumed run changes
        for c in s["search"]["candidates"]:
            c.pop("seconds")
    assert summary == ref_summary


def test_stale_checkpoints_are_ignored(trained: tuple[Config, BlockNet], few_digits: DataBundle,
                                       tmp_path: Path) -> None:
    cfg = small_config(prune={"enabled": False}, lipschitz={"enabled": False})
    reference, _ = _run(cfg, few_digits, trained[1], None)
    other = small_config(prune={"enabled": False}, lipschitz={"enabled": False}, lr=0.5)
    _run(other, few_digits, trained[1], Checkpoints(tmp_path, "another config"))
    assert {f.name for f in tmp_path.glob("*.pt")} == {"warmup.pt", "train.pt"}
    resumed, _ = _run(cfg, few_digits, trained[1], Checkpoints(tmp_path, "this config"))
    _assert_same(reference, resumed)
