"""The probes a new user ran (issue 17): crashes that must not read as "gate failed", a foreign checkpoint, two
commands on one run folder, non-finite numbers, and a budget that is checked only after training.

Each CLI probe goes through `refused`: the documented exit code, one error line without a traceback, the FAILED
verdict line, and the run folder left as it was.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from onnx import TensorProto, helper, save_model

from patrol_deploy.config import ModelConfig, TrainConfig
from patrol_deploy.data import DataBundle
from patrol_deploy.errors import TrainingError
from patrol_deploy.models import create_model
from patrol_deploy.runlock import HOLDER_FILE, LOCK_FILE
from patrol_deploy.training import check_finite_parameters, fit
from tests.hostile.conftest import refused

EXIT_BAD_INPUT, EXIT_INTERNAL = 2, 4
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training is a bug in these probes: the budget or config must be refused before it (exit 4 otherwise)."""
    def trained(*args: object, **kwargs: object) -> None:
        raise AssertionError("training started before the check")

    monkeypatch.setattr("patrol_deploy.baseline.fit", trained)


# --- item 3: crashes get their own exit codes and one line -----------------------------------------------------------

def test_negative_seed_is_a_config_error(toy_config: Path, out_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    refused(["splits", str(toy_config), "--set", "seed=-1"], capsys, EXIT_BAD_INPUT, "seed", watch=(out_dir,))


def test_huge_image_size_is_a_config_error(toy_config: Path, out_dir: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", str(toy_config), "--set", "data.image_size=100000", "--out", str(out_dir)], capsys,
            EXIT_BAD_INPUT, "data.image_size", watch=(out_dir,))


def test_out_of_memory_is_one_line(toy_config: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    def huge(*args: object, **kwargs: object) -> None:
        raise MemoryError("Unable to allocate 3.64 TiB for an array with shape (100, 100000, 100000, 1)")

    monkeypatch.setattr("patrol_deploy.data.load_data", huge)
    refused(["splits", str(toy_config)], capsys, EXIT_BAD_INPUT, "out of host memory", watch=(out_dir,))


def _dynamic_onnx(path: Path) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "H", "W"])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["out"])], "g", [x], [y])
    save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_profile_of_dynamic_height_and_width_is_one_line(tmp_path: Path, out_dir: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    onnx = _dynamic_onnx(tmp_path / "dynamic.onnx")
    refused(["profile", str(onnx), "--backend", "ort", "--runs", "1", "--warmup", "0"], capsys, EXIT_BAD_INPUT,
            "dynamic", watch=(out_dir, tmp_path))


@pytest.mark.parametrize("failure", ["oserror", "torch_runtime_error"])
def test_disk_full_while_saving_is_one_line(failure: str, toy_config: Path, out_dir: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """torch.save on a full disk: an OSError(ENOSPC), or torch's RuntimeError that has lost the errno."""
    def full(obj: object, f: object, *args: object, **kwargs: object) -> None:
        Path(str(f)).write_bytes(b"half a checkpoint")
        if failure == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(torch, "save", full)
    refused(["train", str(toy_config), "--set", "train.epochs=1", "--out", str(out_dir)], capsys, EXIT_BAD_INPUT,
            "disk full", watch=(out_dir,))
    assert not list(out_dir.rglob("*.tmp")), "a half-written file was left"


def test_unexpected_exception_is_exit_4_with_a_crash_log(toy_config: Path, out_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def bug(*args: object, **kwargs: object) -> None:
        raise ValueError("an internal invariant broke")

    monkeypatch.setattr("patrol_deploy.data.load_data", bug)
    line = refused(["splits", str(toy_config)], capsys, EXIT_INTERNAL, "internal error", watch=(out_dir,))
    assert "not a failed gate" in line and "ValueError: an internal invariant broke" in line
    log = Path(line.split("the traceback is in ")[1].split(";")[0])
    try:
        text = log.read_text(encoding="utf-8")
        assert "Traceback (most recent call last)" in text and "an internal invariant broke" in text
        assert "splits" in text.splitlines()[1]  # the command line
    finally:
        log.unlink()


# --- item 4: a foreign checkpoint is an error, a checkpoint with another head is fine-tuned ---------------------------

@pytest.mark.parametrize("kind", ["resnet18_state_dict", "one_foreign_key"])
@pytest.mark.parametrize("command", ["splits", "train"])
def test_foreign_checkpoint_is_refused(kind: str, command: str, tmp_path: Path, toy_config: Path, out_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    state = (torchvision.models.resnet18(weights=None).state_dict() if kind == "resnet18_state_dict"
             else {"foo": torch.zeros(3)})
    torch.save(state, tmp_path / "foreign.pt")
    args = [command, str(toy_config), "--set", f"model.checkpoint={tmp_path / 'foreign.pt'}"]
    line = refused(args + (["--out", str(out_dir)] if command == "train" else []), capsys, EXIT_BAD_INPUT,
                   "does not fit model 'small_resnet'", watch=(out_dir,))
    assert f"0 of its {len(state)} tensors match" in line


def test_checkpoint_with_another_head_loads_its_backbone(tmp_path: Path) -> None:
    source = create_model(ModelConfig(width=4), 3, 1)
    torch.save(source.state_dict(), tmp_path / "three_classes.pt")
    model = create_model(ModelConfig(width=4, checkpoint=tmp_path / "three_classes.pt"), 10, 1)
    assert model.head_loaded is False  # type: ignore[attr-defined]  # fine-tuned from the checkpoint's backbone
    ours, theirs = model.state_dict(), source.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in theirs.items() if k.startswith("blocks."))
    same = create_model(ModelConfig(width=4, checkpoint=tmp_path / "three_classes.pt"), 3, 1)
    assert same.head_loaded is True  # type: ignore[attr-defined]


# --- item 5: one command at a time per run folder --------------------------------------------------------------------

HOLD = """
import sys, time
from patrol_deploy.runlock import lock_run_folder
lock_run_folder(sys.argv[1])
print("held", flush=True)
time.sleep(60)
"""


def test_second_command_on_a_busy_folder_is_refused(toy_config: Path, out_dir: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out_dir), "patrol-deploy run cfg.yaml"],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert json.loads((out_dir / HOLDER_FILE).read_text())["pid"] == holder.pid
        started = time.perf_counter()
        line = refused(["train", str(toy_config), "--out", str(out_dir)], capsys, EXIT_BAD_INPUT,
                       "is in use by another command", watch=(out_dir,))
        assert f"pid {holder.pid}" in line and time.perf_counter() - started < 60  # at once, not after waiting
    finally:
        holder.kill()
        holder.wait()
    assert (out_dir / LOCK_FILE).exists()  # SIGKILL: the file stays, the kernel's lock does not
    refused(["train", str(toy_config), "--set", "budget.edge_macs=1000", "--out", str(out_dir)], capsys,
            EXIT_BAD_INPUT, "no split fits")  # not "in use": a dead holder never blocks
    assert not (out_dir / LOCK_FILE).exists() and not (out_dir / HOLDER_FILE).exists()


# --- item 7: numbers that must be finite are finite ------------------------------------------------------------------

NON_FINITE = ["train.lr=.inf", "train.weight_decay=.nan", "patrol.lr=.inf", "patrol.adversarial.beta=.inf",
              "patrol.adversarial.lr=.inf", "patrol.lipschitz.sigma=.nan", "patrol.lipschitz.alpha=-1",
              "patrol.lipschitz.alpha=[0.1, .inf]", "attacks.whitebox.lr=.inf", "attacks.blackbox.lr=.nan",
              "export.atol=.inf", "export.rtol=.nan", "gate.max_ssim_increase=.inf", "gate.max_utility_drop=-1",
              "defenses.utility_tolerance=.inf", "defenses.grids={noise: [-1]}",
              "defenses.grids={noise: [.inf]}", "patrol.prune.sparsity_weight=.nan"]


@pytest.mark.parametrize("override", NON_FINITE)
def test_non_finite_or_negative_number_is_refused(override: str, toy_config: Path, out_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", str(toy_config), "--set", override, "--out", str(out_dir)], capsys, EXIT_BAD_INPUT,
            override.split("=")[0], watch=(out_dir,))


def test_unknown_defense_in_grids_is_refused_before_training(toy_config: Path, out_dir: Path, no_training: None,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    refused(["run", str(toy_config), "--set", "defenses.grids={bogus: [1]}", "--out", str(out_dir)], capsys,
            EXIT_BAD_INPUT, "defenses.grids: unknown defense 'bogus'", watch=(out_dir,))


def test_diverged_weights_are_never_returned(digits_bundle: DataBundle) -> None:
    """One step whose loss is finite but whose update overflows the weights: fit refuses the model."""
    bundle = replace(digits_bundle, train=digits_bundle.train.subset(np.arange(32)))  # one batch, one step
    torch.manual_seed(0)
    model = create_model(ModelConfig(width=4), 10, 1)
    first = next(model.parameters())

    def explode(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return first.flatten()[0] * 1e37  # finite; times lr 100 the update is not (float32 ends at 3.4e38)

    with pytest.raises(TrainingError, match="diverged") as info:
        fit(model, bundle, TrainConfig(epochs=1, batch_size=64, lr=100), seed=0, loss_fn=explode)
    assert info.value.fix and "learning rate" in info.value.fix
    with pytest.raises(TrainingError, match="NaN/Inf"):
        check_finite_parameters(model, "check")


def test_divergence_through_the_cli_records_nothing(toy_config: Path, out_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """The first step overflows the weights; the clamped loss stays finite, so only the parameter check sees it."""
    def explode(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, margin: float) -> torch.Tensor:
        return next(model.parameters()).flatten()[0].clamp(-1, 1) * 1e37

    monkeypatch.setattr("patrol_deploy.training.task_loss", explode)
    refused(["train", str(toy_config), "--set", "train.epochs=1", "--set", "train.lr=100", "--out", str(out_dir)],
            capsys, EXIT_BAD_INPUT, "training diverged", watch=(out_dir,))


@pytest.mark.parametrize("value", ["1e300", "1e39", "101"])
def test_absurd_learning_rate_is_refused(value: str, toy_config: Path, out_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Above float32's range torch's SGD crashed on it (exit 4 before): a config error now."""
    refused(["train", str(toy_config), "--set", f"train.lr={value}", "--out", str(out_dir)], capsys, EXIT_BAD_INPUT,
            "train.lr", watch=(out_dir,))


# --- item 8: the budget is checked before any training ---------------------------------------------------------------

def test_train_checks_the_budget_before_training(toy_config: Path, tmp_path: Path, out_dir: Path, no_training: None,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    refused(["train", str(toy_config), "--set", "budget.edge_macs=1000", "--out", str(out_dir)], capsys,
            EXIT_BAD_INPUT, "no split fits the edge budget", watch=(out_dir,))
    fresh = tmp_path / "fresh" / "run"
    refused(["train", str(toy_config), "--set", "budget.edge_macs=1000", "--out", str(fresh)], capsys,
            EXIT_BAD_INPUT, "no split fits the edge budget")
    assert not (tmp_path / "fresh").exists(), "a refused command created its run folder"


@pytest.mark.parametrize("command", ["patrol", "run"])
def test_patrol_and_run_check_that_pruning_can_reach_the_budget(command: str, toy_config: Path, out_dir: Path,
                                                                no_training: None,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """layer2 fits 300,000 MACs only with 36 % of its edge removed; allow 10 %."""
    refused([command, str(toy_config), "--set", "budget.edge_macs=300000", "--set", "patrol.prune.max_reduction=0.1",
             "--out", str(out_dir)], capsys, EXIT_BAD_INPUT, "max_reduction", watch=(out_dir,))


def test_splits_prints_the_table_when_nothing_fits(toy_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    printed: list[str] = []
    refused(["splits", str(toy_config), "--set", "budget.edge_macs=1000"], capsys, EXIT_BAD_INPUT, "no split fits",
            stdout=printed)
    rows = printed[0].splitlines()
    assert rows[0].split()[0] == "split" and len(rows) == 6 and all(r.split()[5] == "no" for r in rows[1:]), rows
    refused(["splits", str(toy_config), "--set", "budget.edge_macs=1000", "--json"], capsys, EXIT_BAD_INPUT,
            "no split fits", stdout=printed)
    result = json.loads(printed[1])
    assert result["deepest_fitting"] is None and not any(s["fits"] for s in result["splits"])
