"""Epoch checkpoints: an interrupted training resumes to the same weights; NaN keeps the last good checkpoint;
every RNG survives a checkpoint; stale, foreign and corrupt checkpoints are ignored."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import patrol_deploy.training as training
from patrol_deploy import __version__
from patrol_deploy.checkpoint import Checkpoint, Checkpoints, rng_state, set_rng_state
from patrol_deploy.config import ModelConfig, TrainConfig
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import PatrolError, TrainingError
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
    ckpt = Checkpoint(tmp_path / "checkpoint.pt", "k")
    with pytest.raises(KeyboardInterrupt):
        training.fit(interrupted, digits_bundle, CFG, seed=0, checkpoint=ckpt)
    assert torch.load(ckpt.path, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(training, "train_batches", real)

    resumed = _fresh()  # a new process would start from a fresh model too
    history = training.fit(resumed, digits_bundle, CFG, seed=0, checkpoint=ckpt)
    assert len(history) == 3
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_a_checkpoint_of_the_previous_loop_resumes(digits_bundle: DataBundle, tmp_path: Path) -> None:
    """Before the training loops were one, `fit` kept the bare mean loss per epoch in its checkpoint."""
    ckpt = Checkpoint(tmp_path / "checkpoint.pt", "k")
    cfg = TrainConfig(epochs=2, batch_size=128)
    training.fit(_fresh(), digits_bundle, TrainConfig(epochs=1, batch_size=128), seed=0, checkpoint=ckpt)
    state = torch.load(ckpt.path, weights_only=True)
    model = _fresh()
    model.load_state_dict(state["model"])
    opt = training.make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    sched = training.cosine(opt, 2 * -(-len(digits_bundle.train) // 128))
    ckpt.save_epoch(0, [1.25], {"model": model, "optimizer": opt, "scheduler": sched})  # the old layout
    history = training.fit(_fresh(), digits_bundle, cfg, seed=0, checkpoint=ckpt)
    assert len(history) == 2 and history[0] == 1.25 and np.isfinite(history[1])


def test_checkpoint_of_another_run_is_ignored(digits_bundle: DataBundle, tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.pt"
    training.fit(_fresh(), digits_bundle, TrainConfig(epochs=1, batch_size=128), seed=0,
                 checkpoint=Checkpoint(path, "other config"))
    history = training.fit(_fresh(), digits_bundle, TrainConfig(epochs=1, batch_size=128), seed=0,
                           checkpoint=Checkpoint(path, "this config"))
    assert len(history) == 1 and torch.load(path, weights_only=True)["key"] == "this config"


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
    ckpt = Checkpoint(tmp_path / "checkpoint.pt", "k")
    with pytest.raises(TrainingError, match=r"epoch 2: the loss became nan"):
        training.fit(_fresh(), digits_bundle, CFG, seed=0, checkpoint=ckpt)
    state = torch.load(ckpt.path, weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _draws() -> tuple[float, float, float]:
    return float(torch.rand(())), float(np.random.rand()), random.random()


def test_rng_states_round_trip_through_a_weights_only_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached gaussian in numpy's state
    random.gauss(0, 1)  # and in Python's
    ckpt = Checkpoint(tmp_path / "rng.pt", "k")
    ckpt.save(step=7)
    expected = _draws()
    _draws()
    state = ckpt.load()
    assert state is not None and state["step"] == 7
    set_rng_state(state["rng"])
    assert _draws() == expected
    set_rng_state(rng_state())  # capturing does not move any RNG


def test_stale_foreign_and_corrupt_checkpoints_read_as_none(tmp_path: Path) -> None:
    ckpts = Checkpoints(tmp_path / "checkpoints", "this config")
    ckpts.file("a").save(x=1)
    assert ckpts.file("a").load() is not None
    assert Checkpoints(ckpts.folder, "another config").file("a").load() is None
    state = torch.load(ckpts.file("a").path, weights_only=True)
    torch.save({**state, "version": "0.0.1"}, ckpts.file("b").path)
    assert ckpts.file("b").load() is None and __version__ != "0.0.1"
    ckpts.file("c").path.write_bytes(b"not a checkpoint")
    assert ckpts.file("c").load() is None and ckpts.file("missing").load() is None
    ckpts.sub("inner").file("d").save(x=2)
    ckpts.clear()
    assert not ckpts.folder.exists()


def test_a_checkpoint_that_does_not_fit_is_a_clear_error(tmp_path: Path) -> None:
    ckpt = Checkpoint(tmp_path / "c.pt", "key")
    ckpt.save(epoch=0, history=[], model=create_model(ModelConfig(width=8), 10, 1).state_dict())
    with pytest.raises(PatrolError, match=r"c\.pt does not fit this run \(RuntimeError") as info:
        ckpt.resume({"model": _fresh()}, "test")  # width 4: every shape differs
    assert str(tmp_path) in (info.value.fix or "")
