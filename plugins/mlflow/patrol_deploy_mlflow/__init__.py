"""MLflow tracker for patrol-deploy, registered in the `patrol_deploy.trackers` entry-point group as `mlflow`.

patrol-deploy decides what is logged (`patrol_deploy.tracking`); this class
only sends it to MLflow, through `MlflowClient` so no global active run of the
host program is touched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH, MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH

from patrol_deploy import __version__
from patrol_deploy.config import TrackingConfig

__all__ = ["MlflowTracker"]
T = TypeVar("T")


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _param_text(value: Any) -> str:
    text = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return text[:MAX_PARAM_VAL_LENGTH]


class MlflowTracker:
    """One patrol-deploy run as one MLflow run in `tracking.experiment` at `tracking.mlflow_uri`."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path) -> None:
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.client = MlflowClient(tracking_uri=cfg.mlflow_uri)
        self.run_id: str | None = None

    def _experiment_id(self) -> str:
        experiment = self.client.get_experiment_by_name(self.cfg.experiment)
        if experiment is not None:
            return str(experiment.experiment_id)
        return self.client.create_experiment(self.cfg.experiment, artifact_location=self.cfg.mlflow_artifact_location)

    def _run(self) -> str:
        if self.run_id is None:
            raise RuntimeError("the MLflow run was not started")
        return self.run_id

    def start(self, run_name: str, config: dict[str, Any]) -> None:
        """Create the MLflow run, tagged with the run folder and the patrol-deploy version."""
        tags = {**self.cfg.tags, "patrol_deploy.run_folder": str(self.run_dir.resolve()),
                "patrol_deploy.version": __version__}
        self.run_id = self.client.create_run(self._experiment_id(), run_name=run_name, tags=tags).info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params in batches of MLflow's per-request limit."""
        items = [Param(key, _param_text(value)) for key, value in params.items()]
        for chunk in _chunks(items, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self._run(), params=chunk)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Log the report's numbers at step 0, in batches of MLflow's per-request limit."""
        now = int(time.time() * 1000)
        items = [Metric(key, float(value), now, 0) for key, value in metrics.items()]
        for chunk in _chunks(items, MAX_METRICS_PER_BATCH):
            self.client.log_batch(self._run(), metrics=chunk)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.client.log_artifact(self._run(), str(path), folder or None)

    def end(self, status: str) -> None:
        self.client.set_terminated(self._run(), status=status)
