"""Trackers: what a run logs (params, metrics, artifacts), and that a failing tracker never loses the run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from patrol_deploy.config import Config, TrackingConfig
from patrol_deploy.errors import ConfigError, GateFailed
from patrol_deploy.registry import Registry
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.tracking import (
    FAILED,
    FINISHED,
    TRACKERS,
    flatten,
    report_metrics,
    tracked_run,
)
from tests.fake_run import artifact_names, finished_run
from tests.test_registry import fake_distribution
from tests.test_report import sample_report


class Recorder:
    """A tracker that keeps every call (the `fail_in` method raises, as a tracker with a bad server would)."""

    made: list[Recorder] = []  # noqa: RUF012 - one list per test run, reset by the fixture

    def __init__(self, cfg: TrackingConfig, run_dir: Path, fail_in: str = "") -> None:
        self.cfg, self.run_dir, self.fail_in = cfg, run_dir, fail_in
        self.calls: list[tuple[str, Any]] = []
        Recorder.made.append(self)

    def _call(self, method: str, value: Any) -> None:
        if method == self.fail_in:
            raise ConnectionError(f"{method}: tracking server unreachable")
        self.calls.append((method, value))

    def start(self, run_name: str, config: dict[str, Any]) -> None:
        self._call("start", (run_name, config))

    def log_params(self, params: dict[str, Any]) -> None:
        self._call("log_params", params)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self._call("log_metrics", metrics)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        assert path.is_file()
        self._call("log_artifact", f"{folder}/{path.name}")
        if path.suffix == ".png":
            with Image.open(path) as img:
                self.calls.append(("png_size", img.size))

    def end(self, status: str) -> None:
        self._call("end", status)

    def logged(self, method: str) -> list[Any]:
        return [value for name, value in self.calls if name == method]


def recorder_factory(fail_in: str) -> Any:
    def make(cfg: TrackingConfig, run_dir: Path) -> Recorder:
        return Recorder(cfg, run_dir, fail_in)

    return make


for _name, _fail in (("test-recorder", ""), ("test-faulty", "log_metrics"), ("test-unreachable", "start")):
    if _name not in TRACKERS:
        TRACKERS.add(_name, recorder_factory(_fail), origin="tests")


@pytest.fixture(autouse=True)
def _fresh_recorders() -> None:
    Recorder.made = []


def tracked_config(*trackers: str) -> Config:
    return Config.model_validate({"tracking": {"trackers": list(trackers), "run_name": "nightly"}})


def test_flatten_makes_section_key_params() -> None:
    flat = flatten(Config().dump())
    assert flat["budget.edge_macs"] == 1.5e7 and flat["patrol.adversarial.beta"] == 1.0
    assert flat["attacks.names"] == "['whitebox', 'blackbox', 'query_free']" and flat["tracking.tags"] == "{}"
    assert flat["model.checkpoint"] is None and all(not isinstance(v, dict | list) for v in flat.values())


def test_report_metrics_cover_variants_attacks_quantized_and_gate() -> None:
    metrics = report_metrics(sample_report())
    assert metrics["patrol/utility"] == 96.2 and metrics["patrol/worst_ssim"] == 0.27
    assert metrics["patrol/edge_macs"] == 13_900_112
    assert metrics["undefended/blackbox/ssim"] == pytest.approx(0.81)
    assert metrics["undefended/blackbox/psnr"] == pytest.approx(10 + 15 * 0.81)
    assert metrics["quantized/utility"] == 95.9 and metrics["quantized/worst_ssim"] == 0.3
    assert metrics["quantized/query_free/ssim"] == pytest.approx(0.3)
    assert metrics["gate_passed"] == 0.0
    assert "nopeek/worst_ssim" not in metrics and "nopeek/query_free/ssim" not in metrics  # unmeasured: left out
    assert all(isinstance(v, float) for v in metrics.values())


def test_a_finished_run_logs_params_metrics_and_artifacts(tmp_path: Path) -> None:
    cfg = tracked_config("test-recorder")
    run = RunFolder(tmp_path / "run")
    with tracked_run(cfg, run) as warnings:
        finished_run(run.root)  # the pipeline's work
    assert warnings == []
    (tracker,) = Recorder.made
    assert tracker.run_dir == run.root and tracker.cfg.run_name == "nightly"
    assert tracker.logged("start") == [("nightly", cfg.dump())]
    assert tracker.logged("log_params") == [flatten(cfg.dump())]
    assert tracker.logged("log_metrics") == [report_metrics(json.loads(run.path("report.json").read_text()))]
    assert set(tracker.logged("log_artifact")) == artifact_names(run)
    assert all(w >= 64 and h >= 64 for w, h in tracker.logged("png_size"))  # one row per attack, enlarged
    assert tracker.logged("end") == [FINISHED] and tracker.calls[-1] == ("end", FINISHED)
    entry = run.stage("tracking")
    assert entry is not None and entry["status"] == FINISHED and entry["logged_to"] == ["test-recorder"]


def test_a_failing_tracker_is_a_warning_and_the_others_carry_on(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    run = RunFolder(tmp_path / "run")
    with pytest.raises(GateFailed), tracked_run(tracked_config("test-faulty", "test-unreachable", "test-recorder"),
                                                 run) as warnings:
        finished_run(run.root)
        raise GateFailed("privacy gate FAILED: SSIM rose.", "keep the float edge")
    faulty, unreachable, good = Recorder.made
    assert len(warnings) == 2
    assert "tracker 'test-unreachable' failed in start: ConnectionError" in warnings[0]
    assert "tracker 'test-faulty' failed in log_metrics: ConnectionError" in warnings[1]
    assert "the run goes on without it" in capsys.readouterr().err
    assert faulty.logged("log_params") and not faulty.logged("log_artifact")  # dropped after the failure ...
    assert faulty.logged("end") == [FAILED]  # ... but its run is still closed
    assert unreachable.calls == []  # never started, so never ended
    assert set(good.logged("log_artifact")) == artifact_names(run) and good.logged("end") == [FAILED]
    entry = run.stage("tracking")
    assert entry is not None and entry["status"] == FAILED and entry["logged_to"] == ["test-recorder"]
    assert entry["warnings"] == warnings


def test_unknown_tracker_is_refused_before_the_run(tmp_path: Path) -> None:
    ran = []
    with pytest.raises(ConfigError, match="'nope', which no installed plugin provides") as info, \
            tracked_run(tracked_config("nope"), RunFolder(tmp_path)):
        ran.append(True)
    assert ran == [] and "pip install ./plugins/mlflow" in (info.value.fix or "")


def test_broken_tracker_plugin_is_skipped_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distribution(tmp_path / "site", "broken-tracker", {"patrol_deploy.trackers": {"crashy": "crashy_mod"}},
                      {"crashy_mod": "raise RuntimeError('crashy needs a newer server')\n"}, monkeypatch)
    fresh: Registry[Any] = Registry("tracker", "patrol_deploy.trackers")
    fresh.add("test-recorder", recorder_factory(""), origin="tests")
    monkeypatch.setattr("patrol_deploy.tracking.TRACKERS", fresh)
    run = RunFolder(tmp_path / "run")
    with tracked_run(tracked_config("crashy", "test-recorder"), run) as warnings:
        finished_run(run.root)
    assert len(warnings) == 1 and "tracker 'crashy' is installed but failed to load" in warnings[0]
    assert "RuntimeError: crashy needs a newer server" in warnings[0] and "broken-tracker" in warnings[0]
    assert Recorder.made[0].logged("end") == [FINISHED]


def test_no_trackers_means_no_tracking_entry(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "run")
    with tracked_run(Config(), run) as warnings:
        finished_run(run.root)
    assert warnings == [] and run.stage("tracking") is None
