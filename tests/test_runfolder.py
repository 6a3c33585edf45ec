"""Run-folder safety: a folder from another config or version, or with changed files, is refused unless forced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patrol_deploy import __version__
from patrol_deploy.cli.main import main
from patrol_deploy.config import Config
from patrol_deploy.errors import PatrolError
from patrol_deploy.modelio import ModelMeta, save_model_dir
from patrol_deploy.models import create_model
from patrol_deploy.runfolder import RunFolder, check_run_folder, run_identity, write_json, write_text

CFG = Config.model_validate({"data": {"source": "digits", "image_size": 16}, "model": {"width": 4}})


def finished_stage(run: RunFolder, cfg: Config = CFG) -> None:
    """A 'train' stage as the pipeline records it: two files and a config naming seed, data and model."""
    files = [write_text(run.path("train", "model.pt"), "weights"), write_json(run.path("train", "model.json"), {})]
    conf = {"seed": cfg.seed, "data": cfg.data.model_dump(mode="json"), "model": cfg.model.model_dump(mode="json"),
            "train": cfg.train.model_dump(mode="json")}
    run.record("train", files, conf, seed=cfg.seed)


def claimed(tmp_path: Path, cfg: Config = CFG) -> RunFolder:
    """A folder as a finished run leaves it: claimed by the check, which its first recorded stage writes."""
    run = RunFolder(tmp_path / "run")
    assert check_run_folder(run, run_identity(cfg)) == []
    assert not run.manifest_path.exists()  # the claim waits for a stage to finish
    finished_stage(run, cfg)
    return RunFolder(run.root)


def test_same_config_is_reused_and_claimed(tmp_path: Path) -> None:
    run = claimed(tmp_path)
    other_attacks = CFG.model_copy(update={"attacks": CFG.attacks.model_copy(update={"eval_images": 8})})
    assert check_run_folder(run, run_identity(other_attacks)) == []  # attack settings may change
    manifest = run.manifest()
    assert manifest["run"]["patrol_deploy"] == __version__
    assert manifest["run"]["identity"]["data"]["image_size"] == 16 and "train" in manifest["stages"]


@pytest.mark.parametrize(("update", "named"), [
    ({"data": {"source": "digits", "image_size": 32}}, "data.image_size: 16 -> 32"),
    ({"seed": 3}, "seed: 0 -> 3"),
    ({"model": {"width": 8}}, "model.width: 4 -> 8"),
])
def test_another_config_is_refused_unless_forced(tmp_path: Path, update: dict[str, object], named: str) -> None:
    run = claimed(tmp_path)
    other = Config.model_validate({**CFG.model_dump(mode="json"), **update})
    with pytest.raises(PatrolError, match="cannot be reused") as info:
        check_run_folder(run, run_identity(other))
    assert named in str(info.value) and "models made from another config" in str(info.value)
    assert "--force" in (info.value.fix or "")
    assert "train" in run.manifest()["stages"]  # refusing changes nothing
    problems = check_run_folder(run, run_identity(other), force=True)
    assert any(named in p for p in problems)
    assert run.manifest()["stages"] == {}  # every stage will be redone
    assert check_run_folder(run, run_identity(other)) == []  # the folder now belongs to the new config


def test_folder_of_single_stages_is_checked_from_their_configs(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    finished_stage(run)  # e.g. `patrol-deploy train --out`, no run record yet
    other = Config.model_validate({**CFG.model_dump(mode="json"), "seed": 1})
    with pytest.raises(PatrolError, match="seed: 0 -> 1"):
        check_run_folder(run, run_identity(other))
    assert check_run_folder(run, run_identity(CFG)) == []


def test_another_version_is_refused_unless_forced(tmp_path: Path) -> None:
    run = claimed(tmp_path)
    manifest = run.manifest()
    manifest["run"]["patrol_deploy"] = "0.0.1"
    manifest["stages"]["train"]["versions"]["patrol-deploy"] = "0.0.1"
    write_json(run.manifest_path, manifest)
    with pytest.raises(PatrolError, match=rf"written by patrol-deploy 0\.0\.1 \(this is {__version__}\)"):
        check_run_folder(run, run_identity(CFG))
    check_run_folder(run, run_identity(CFG), force=True)
    assert run.manifest()["stages"] == {} and run.manifest()["run"]["patrol_deploy"] == __version__


def test_changed_file_is_named_and_forcing_redoes_its_stage(tmp_path: Path) -> None:
    run = claimed(tmp_path)
    run.path("train", "model.pt").write_text("tampered")
    with pytest.raises(PatrolError, match=r"'train/model\.pt' changed after stage 'train' recorded it"):
        check_run_folder(run, run_identity(CFG))
    conf = run.manifest()["stages"]["train"]["config"]
    assert check_run_folder(run, run_identity(CFG), force=True) == [
        "'train/model.pt' changed after stage 'train' recorded it (SHA-256 mismatch)"]
    assert "train" in run.manifest()["stages"] and not run.is_current("train", conf)  # the stage is redone


def test_deleted_file_is_not_an_error(tmp_path: Path) -> None:
    run = claimed(tmp_path)
    run.path("train", "model.pt").unlink()  # deleting a stage's output is how a user asks for it to be redone
    assert check_run_folder(run, run_identity(CFG)) == []


def test_checkpoint_content_is_part_of_the_identity(tmp_path: Path) -> None:
    ckpt = write_text(tmp_path / "weights.pt", "one")
    cfg = Config.model_validate({**CFG.model_dump(mode="json"), "model": {"width": 4, "checkpoint": str(ckpt)}})
    run = claimed(tmp_path, cfg)
    ckpt.write_text("two")  # the user overwrote their checkpoint in place
    with pytest.raises(PatrolError, match="the model checkpoint's content"):
        check_run_folder(run, run_identity(cfg))
    # forced: what a killed stage saved to resume from was made from the old weights, so it must not be resumed
    stale = write_text(run.path("patrol", "checkpoints", "finetune.pt"), "old weights' state")
    kept = write_text(run.path("train", "notes.txt"), "not a checkpoint")
    check_run_folder(run, run_identity(cfg), force=True)
    assert not stale.parent.exists() and kept.exists()


def test_corrupt_manifest_is_refused_unless_forced(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    write_text(run.manifest_path, "{not json")
    with pytest.raises(PatrolError, match="not valid JSON"):
        check_run_folder(run, run_identity(CFG))
    check_run_folder(run, run_identity(CFG), force=True)
    assert run.manifest()["stages"] == {}


def test_cli_run_refuses_a_foreign_folder_before_any_work(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    run = claimed(tmp_path)
    config = write_text(tmp_path / "other.yaml", "data:\n  source: digits\n  image_size: 24\nmodel:\n  width: 4\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "--out", str(run.root)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0].startswith("patrol-deploy: error: run folder") and "data.image_size: 16 -> 24" in lines[0]
    assert "Fix:" in lines[0] and "--force" in lines[0] and lines[-1] == "FAILED | patrol-deploy run"
    assert json.loads(run.manifest_path.read_text())["run"]["identity"]["data"]["image_size"] == 16


@pytest.mark.parametrize("command", ["train", "patrol", "export", "quantize"])
def test_single_stage_commands_refuse_a_foreign_folder(command: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    run = claimed(tmp_path)
    other = Config.model_validate({**CFG.model_dump(mode="json"), "data": {"source": "digits", "image_size": 24}})
    config = write_text(tmp_path / "other.yaml", "data: {source: digits, image_size: 24}\nmodel: {width: 4}\n")
    model_dir = tmp_path / "model"  # a model folder made from the other config
    save_model_dir(model_dir, create_model(other.model, 10, 1), ModelMeta(
        model=other.model.model_dump(mode="json"), split="layer1", num_classes=10, input_shape=[1, 24, 24],
        mean=[0.5], std=[0.25], extra={"data": other.data.model_dump(mode="json"), "seed": other.seed}))
    source = {"train": [str(config)], "patrol": [str(config)], "export": [str(model_dir)],
              "quantize": [str(model_dir)]}[command]
    before = run.manifest_path.read_bytes()
    with pytest.raises(SystemExit) as exit_info:
        main([command, *source, "--out", str(run.root)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "cannot be reused" in err and "data.image_size: 16 -> 24" in err and "--force" in err
    assert run.manifest_path.read_bytes() == before


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_artifacts_get_the_users_umask_not_mkstemps_0600(tmp_path: Path, umask: int, mode: int) -> None:
    import os
    import stat

    previous = os.umask(umask)
    try:
        written = [write_json(tmp_path / "a.json", {"x": 1}), write_text(tmp_path / "sub" / "b.txt", "b")]
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [mode, mode]
