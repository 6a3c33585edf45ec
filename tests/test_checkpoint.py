"""Epoch checkpoints: an interrupted training resumes to the same weights; NaN keeps the last good checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import patrol_deploy.training as training
from patrol_deploy.config import ModelConfig, TrainConfig
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import TrainingError
from patrol_deploy.models import create_model

CFG = TrainConfig(epochs=3, batch_size=128)


def _fresh() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(width=4), 10, 1)


def test_resume_after_interruption_gives_identical_weights(digits_bundle: DataBundle, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    reference = _fresh()
    training.fit(reference, digits_bundle, CFG, seed=0)

    interrupted = _fresh()
    real = training.train_batches

    def dies_in_epoch_2(split, cfg, reid, seed, epoch, ctx):  # type: ignore[no-untyped-def]
        if epoch == 2:
            raise KeyboardInterrupt
        return real(split, cfg, reid, seed, epoch, ctx)

    monkeypatch.setattr(training, "train_batches", dies_in_epoch_2)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):
        training.fit(interrupted, digits_bundle, CFG, seed=0, checkpoint=ckpt, checkpoint_key="k")
    assert torch.load(ckpt, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(training, "train_batches", real)

    resumed = _fresh()  # a new process would start from a fresh model too
    history = training.fit(resumed, digits_bundle, CFG, seed=0, checkpoint=ckpt, checkpoint_key="k")
    assert len(history) == 3
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_checkpoint_of_another_run_is_ignored(digits_bundle: DataBundle, tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoint.pt"
    training.fit(_fresh(), digits_bundle, TrainConfig(epochs=1, batch_size=128), seed=0, checkpoint=ckpt,
                 checkpoint_key="other config")
    history = training.fit(_fresh(), digits_bundle, TrainConfig(epochs=1, batch_size=128), seed=0,
                           checkpoint=ckpt, checkpoint_key="this config")
    assert len(history) == 1 and torch.load(ckpt, weights_only=True)["key"] == "this config"


def test_nan_stops_and_keeps_last_good_checkpoint(digits_bundle: DataBundle, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    real = training.task_loss
    calls = {"n": 0}
    steps_per_epoch = -(-len(digits_bundle.train) // 128)

    def nan_in_epoch_2(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > steps_per_epoch else loss

    monkeypatch.setattr(training, "task_loss", nan_in_epoch_2)
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(TrainingError, match=r"epoch 2: the loss became nan"):
        training.fit(_fresh(), digits_bundle, CFG, seed=0, checkpoint=ckpt, checkpoint_key="k")
    state = torch.load(ckpt, weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
