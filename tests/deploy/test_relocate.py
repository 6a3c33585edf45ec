"""A run folder copied elsewhere, with its data moved, keeps working from any directory: the downstream commands
take --data-root (and --set) to find the data, and nothing refuses the folder as "another config"."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from patrol_deploy.relocate import DataLocation
from patrol_deploy.runfolder import RunFolder
from tests.deploy.folder_run import ATTACKS, build_run
from tests.deploy.test_gate import GENEROUS, run_cli

pytest.importorskip("modelopt.onnx.quantization")


def test_a_copied_run_folder_with_moved_data_works_from_another_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    original = build_run(tmp_path / "project", monkeypatch)
    with monkeypatch.context() as mp:  # the CLI with a relative config path, from the project folder
        mp.chdir(tmp_path / "project")
        code, _, err = run_cli(["-q", "train", "cfg.yaml", "--out", "run", "--set", "train.epochs=1"], capsys)
        assert code == 0, err
    recorded = RunFolder(original).manifest()["stages"]["train"]["config"]["data"]["root"]
    assert recorded == str(tmp_path / "project" / "imgs")  # resolved against the config file, not the cwd
    assert RunFolder(original).manifest()["run"]["identity"]["data"]["root"] == recorded
    run, data = tmp_path / "jetson" / "run", tmp_path / "datasets" / "pictures"
    shutil.copytree(original, run)
    shutil.move(tmp_path / "project" / "imgs", data)
    shutil.rmtree(tmp_path / "project")  # nothing of the original place is left
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    quantize = ["quantize", run / "export" / "edge.onnx", "--out", run, "--calibration-images", "12"]
    code, _, err = run_cli(quantize, capsys)  # other calibration images: the data is needed, and not found
    assert code == 2 and "is not on this machine" in err and "--data-root" in err and "Traceback" not in err
    code, out, err = run_cli([*quantize, "--data-root", data, "--json"], capsys)
    assert code == 0, err
    info = json.loads(out)["info"]
    assert info["quantization"]["calibration"]["images_used"] == 12
    assert info["source"]["data"]["root"] == recorded  # what the model was made from is still what it was
    code, _, err = run_cli(["export", run / "patrol", "--out", run, "--data-root", data], capsys)
    assert code == 0 and "export: reusing" in err

    code, out, err = run_cli(["verify", run, *ATTACKS, *GENEROUS, "--data-root", data, "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["passed"] and (run / "verify" / "gate.json").is_file()
    code, out, err = run_cli(["verify", run, *ATTACKS, *GENEROUS, "--data-root", data, "--json"], capsys)
    assert code == 0 and json.loads(out)["reused"] is True

    code, out, err = run_cli(["profile", run / "quantize" / "edge.int8.onnx", "--runs", "3", "--warmup", "1",
                              "--threads", "1", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["threads"] == 1
    code, _, err = run_cli(["profile", run / "patrol", "--runs", "2", "--warmup", "0"], capsys)
    assert code == 0, err


def test_data_location_overrides() -> None:
    recorded = {"source": "imagefolder", "root": "/old/imgs", "image_size": 16}
    moved = DataLocation(Path("/new/imgs"), ("data.image_size=24",))
    assert moved.apply({"data": recorded})["data"] == {"source": "imagefolder", "root": "/new/imgs", "image_size": 24}
    assert moved.changes(recorded) == {"image_size": 24}  # the folder's location is not a change of data
    assert DataLocation(Path("/new/imgs")).changes(recorded) == {}
    from patrol_deploy.errors import ConfigError

    with pytest.raises(ConfigError, match="takes only data keys"):
        DataLocation(None, ("attacks.eval_images=4",)).data(recorded)
