"""The MLflow tracker against a real MLflow tracking store (SQLite + local artifacts), read back with MlflowClient."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

try:
    metadata.distribution("patrol-deploy-mlflow")
except metadata.PackageNotFoundError:
    pytest.skip("the MLflow plugin is not installed (pip install ./plugins/mlflow)", allow_module_level=True)
mlflow_tracking = pytest.importorskip("mlflow.tracking", reason="mlflow is not installed")

from patrol_deploy.config import Config  # noqa: E402
from patrol_deploy.runfolder import RunFolder  # noqa: E402
from patrol_deploy.tracking import TRACKERS, flatten, report_metrics, tracked_run  # noqa: E402
from tests.fake_run import artifact_names, finished_run  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite tracking store and an artifact folder (the tables are created once per module)."""
    root = tmp_path_factory.mktemp("mlflow")
    return {"mlflow_uri": f"sqlite:///{root / 'mlflow.db'}", "mlflow_artifact_location": (root / "artifacts").as_uri()}


def config(store: dict[str, str], experiment: str, **tracking: Any) -> Config:
    return Config.model_validate({"tracking": {"trackers": ["mlflow"], "experiment": experiment, **store,
                                               "tags": {"team": "edge"}, **tracking}})


def logged_run(store: dict[str, str], experiment: str) -> Any:
    client = mlflow_tracking.MlflowClient(tracking_uri=store["mlflow_uri"])
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} was not created"
    (run,) = client.search_runs([exp.experiment_id])
    return client, run


def artifacts(client: Any, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for info in client.list_artifacts(run_id, path):
        found |= artifacts(client, run_id, info.path) if info.is_dir else {info.path}
    return found


def test_the_plugin_is_found_through_its_entry_point() -> None:
    assert "mlflow" in TRACKERS and TRACKERS.origin("mlflow") == "patrol-deploy-mlflow"


def test_a_run_is_logged_and_read_back(store: dict[str, str], tmp_path: Path) -> None:
    cfg = config(store, "finished", run_name="veri-nightly")
    run = RunFolder(tmp_path / "run")
    with tracked_run(cfg, run) as warnings:
        finished_run(run.root)
    assert warnings == []
    client, logged = logged_run(store, "finished")
    assert logged.info.status == "FINISHED" and logged.info.run_name == "veri-nightly"
    assert logged.data.tags["team"] == "edge" and logged.data.tags["patrol_deploy.run_folder"] == str(run.root)
    params = logged.data.params
    assert len(params) == len(flatten(cfg.dump()))
    assert params["budget.edge_macs"] == "15000000.0" and params["tracking.trackers"] == "['mlflow']"
    assert params["patrol.prune.enabled"] == "true" and params["model.checkpoint"] == "null"
    expected = report_metrics(json.loads(run.path("report.json").read_text()))
    assert logged.data.metrics == pytest.approx(expected)
    assert logged.data.metrics["gate_passed"] == 0.0 and logged.data.metrics["patrol/worst_ssim"] == 0.27
    assert artifacts(client, logged.info.run_id) == artifact_names(run)
    local = Path(client.download_artifacts(logged.info.run_id, "report/report.json", str(tmp_path / "dl")))
    assert json.loads(local.read_text()) == json.loads(run.path("report.json").read_text())


def test_a_failed_pipeline_is_a_failed_mlflow_run(store: dict[str, str], tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    with pytest.raises(RuntimeError, match="export crashed"), tracked_run(config(store, "failed"), run):
        raise RuntimeError("export crashed")  # before any report exists
    _, logged = logged_run(store, "failed")
    assert logged.info.status == "FAILED" and logged.info.run_name == "run"  # named after the run folder
    assert logged.data.metrics == {} and logged.data.params["tracking.experiment"] == "failed"


def test_an_unreachable_server_is_a_warning_not_a_lost_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail at once instead of backing off for minutes
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    unusable = {"mlflow_uri": "http://127.0.0.1:9"}  # nothing listens on the loopback discard port
    run = RunFolder(tmp_path / "run")
    with tracked_run(config(unusable, "nowhere"), run) as warnings:
        finished_run(run.root)
    assert len(warnings) == 1 and "tracker 'mlflow' failed in start" in warnings[0]
    assert run.path("report.json").is_file()
    entry = run.stage("tracking")
    assert entry is not None and entry["status"] == "FINISHED" and entry["logged_to"] == []
