"""The one stage helper: reuse a current stage, else build it from its checkpoints, record it, delete them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.runfolder import RunFolder, write_json
from patrol_deploy.stages import run_stage


class Stage:
    """A stage that writes RUN/demo/out.json and counts how often it was built or reused."""

    def __init__(self, run: RunFolder, record: bool = True) -> None:
        self.run, self.record, self.built, self.reused = run, record, 0, 0
        self.seen_checkpoints: list[Path] = []

    def __call__(self, config: dict[str, Any]) -> str:
        return run_stage(self.run, "demo", config, label="demo", seed=3, reuse=self._reuse, build=self._build)

    def _reuse(self) -> str:
        self.reused += 1
        return "reused"

    def _build(self, ckpts: Checkpoints) -> tuple[str, list[Path] | None]:
        self.built += 1
        self.seen_checkpoints.append(ckpts.folder)
        ckpts.folder.mkdir(parents=True, exist_ok=True)  # what an interrupted build leaves behind
        (ckpts.folder / "epoch.pt").write_bytes(b"state")
        out = write_json(self.run.path("demo", "out.json"), {"built": self.built})
        return "built", [out] if self.record else None


def test_a_stage_is_built_and_recorded_once_then_reused(tmp_path: Path, capsys: Any) -> None:
    run = RunFolder(tmp_path)
    stage = Stage(run)
    assert stage({"lr": 0.1}) == "built"
    entry = run.stage("demo")
    assert entry is not None and entry["seed"] == 3 and list(entry["files"]) == ["demo/out.json"]
    assert not stage.seen_checkpoints[0].exists()  # the recorded result supersedes the checkpoints
    assert stage({"lr": 0.1}) == "reused" and (stage.built, stage.reused) == (1, 1)
    assert f"demo: reusing {run.path('demo')}" in capsys.readouterr().err


def test_a_changed_config_or_file_rebuilds_with_fresh_checkpoints(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    stage = Stage(run)
    stage({"lr": 0.1})
    assert stage({"lr": 0.2}) == "built"
    assert stage.seen_checkpoints[0] == stage.seen_checkpoints[1]  # one folder; a checkpoint's key is its config
    run.path("demo", "out.json").write_text("{}", encoding="utf-8")  # tampered with
    assert stage({"lr": 0.2}) == "built" and stage.built == 3


def test_left_over_checkpoints_are_deleted_on_reuse(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    stage = Stage(run)
    stage({"lr": 0.1})
    stage.seen_checkpoints[0].mkdir(parents=True)  # a run killed between recording and deleting them
    assert stage({"lr": 0.1}) == "reused" and not stage.seen_checkpoints[0].exists()


def test_a_build_without_files_records_nothing_and_keeps_its_checkpoints(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    stage = Stage(run, record=False)  # a non-main process of a multi-GPU run
    assert stage({"lr": 0.1}) == "built" and run.stage("demo") is None
    assert stage.seen_checkpoints[0].exists()
    assert stage({"lr": 0.1}) == "built"  # nothing recorded, so nothing to reuse
