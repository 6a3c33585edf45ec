"""Experiment trackers: log a run's config, the report's numbers and its artifacts to MLflow and the like.

A tracker is a plugin (entry-point group `patrol_deploy.trackers`) registered in
`TRACKERS` as a factory `(TrackingConfig, run folder) -> Tracker`; the MLflow
one is `plugins/mlflow`. `tracked_run(cfg, run)` wraps a pipeline run: it starts
every tracker named in `tracking.trackers`, and at the end logs the flattened
config as params, `report_metrics(report)` as metrics and the report, ONNX
files, engines and reconstruction grids as artifacts, then ends the run as
FINISHED or FAILED. What is logged is decided here, once, for every tracker;
a tracker only decides where it goes. A tracker that fails is a warning (on
stderr and in the manifest's `tracking` entry), never a lost run.
"""

from __future__ import annotations

import contextlib
import math
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from patrol_deploy.config import Config, TrackingConfig
from patrol_deploy.errors import ConfigError
from patrol_deploy.registry import Registry
from patrol_deploy.runfolder import RunFolder, atomic_path, read_json

FINISHED = "FINISHED"
FAILED = "FAILED"
STAGE = "tracking"
ENGINE_SUFFIXES = (".engine", ".plan")
GRID_IMAGES = 8


class Tracker(Protocol):
    """One tracked run in an experiment tracker; every call may raise (the caller turns that into a warning)."""

    def start(self, run_name: str, config: dict[str, Any]) -> None:
        """Open a run called `run_name` for the run's full config."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Flat `section.key -> value` params (str, number, bool or None)."""

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """Flat `name -> finite number` metrics."""

    def log_artifact(self, path: Path, folder: str = "") -> None:
        """Copy the file at `path` into the run's artifacts, under `folder`."""

    def end(self, status: str) -> None:
        """Close the run as FINISHED or FAILED."""


TrackerFactory = Callable[[TrackingConfig, Path], Tracker]
TRACKERS: Registry[TrackerFactory] = Registry("tracker", "patrol_deploy.trackers")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config sections as `section.key` params; lists and empty mappings become their string form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name))
        elif isinstance(value, list | tuple | dict):
            flat[name] = str(list(value) if not isinstance(value, dict) else value)
        else:
            flat[name] = value
    return flat


def _put(metrics: dict[str, float], name: str, value: Any) -> None:
    if isinstance(value, bool):
        value = float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        metrics[name] = float(value)


def _privacy_metrics(metrics: dict[str, float], prefix: str, privacy: dict[str, Any]) -> None:
    _put(metrics, f"{prefix}/worst_ssim", privacy.get("worst_ssim"))
    for attack, scores in privacy.get("attacks", {}).items():
        _put(metrics, f"{prefix}/{attack}/ssim", scores.get("ssim"))
        _put(metrics, f"{prefix}/{attack}/psnr", scores.get("psnr"))


def report_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The report's numbers as flat metrics: per variant utility, edge MACs, worst and per-attack SSIM / PSNR,
    the quantized edge's utility and SSIM, and `gate_passed` (1 or 0); unmeasured (null) numbers are left out."""
    metrics: dict[str, float] = {}
    for name, variant in report.get("variants", {}).items():
        _put(metrics, f"{name}/utility", variant.get("utility"))
        _put(metrics, f"{name}/edge_macs", variant.get("split", {}).get("edge_macs"))
        _privacy_metrics(metrics, name, variant.get("privacy", {}))
    quantized = report.get("quantized")
    if quantized:
        _put(metrics, "quantized/utility", quantized.get("utility"))
        _privacy_metrics(metrics, "quantized", quantized.get("privacy", {}))
        _put(metrics, "gate_passed", bool(quantized.get("gate", {}).get("passed")))
    return metrics


def run_artifacts(run: RunFolder) -> list[tuple[Path, str]]:
    """(file, artifact folder) for the report, the ONNX files recorded by export / quantize, and any engine."""
    found: list[tuple[Path, str]] = [(run.path(name), "report") for name in ("report.json", "report.html")]
    for stage in ("export", "quantize"):
        entry = run.stage(stage) or {}
        found += [(run.path(rel), "onnx") for rel in entry.get("files", {}) if rel.endswith(".onnx")]
    if run.root.is_dir():
        found += [(p, "engine") for p in sorted(run.root.rglob("*")) if p.suffix in ENGINE_SUFFIXES]
    return [(path, folder) for path, folder in found if path.is_file()]


def reconstruction_grids(run: RunFolder, folder: Path) -> list[Path]:
    """One PNG per attacked variant in `folder`: a row per attack of its first reconstructions."""
    from patrol_deploy.lazy import require
    from patrol_deploy.report import image_strip

    image_mod = require("PIL.Image", "reconstruction grids for the tracker")
    grids = []
    for npz_path in sorted(run.root.glob("variants/*/reconstructions.npz")):
        with np.load(npz_path) as npz:
            rows = [image_strip(npz[attack][:GRID_IMAGES]) for attack in sorted(npz.files)]
        if not rows:
            continue
        width = max(r.shape[1] for r in rows)
        padded = [np.pad(r, [(0, 4), (0, width - r.shape[1])] + [(0, 0)] * (r.ndim - 2), constant_values=255)
                  for r in rows]
        out = folder / f"{npz_path.parent.name}.png"
        with atomic_path(out) as tmp:
            image_mod.fromarray(np.concatenate(padded, axis=0)).save(tmp, format="PNG")
        grids.append(out)
    return grids


class _Session:
    """The trackers of one run. Every call is guarded: a tracker that raises is warned about, then only ended."""

    def __init__(self, cfg: Config, run: RunFolder) -> None:
        self.cfg, self.run = cfg, run
        self.warnings: list[str] = []
        self.started: dict[str, Tracker] = {}
        self.broken: set[str] = set()

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        print(f"patrol-deploy: warning: {message}", file=sys.stderr, flush=True)

    def call(self, name: str, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` for tracker `name`, unless it already failed; a failure marks it broken and returns None."""
        if name in self.broken:
            return None
        try:
            return fn(*args)
        except Exception as exc:  # a tracker must never lose the run
            self.broken.add(name)
            self.warn(f"tracker '{name}' failed in {what}: {type(exc).__name__}: {exc}; the run goes on without it")
            return None

    def start(self) -> None:
        unavailable = TRACKERS.unavailable()
        run_name = self.cfg.tracking.run_name or self.run.root.resolve().name
        for name in self.cfg.tracking.trackers:
            if name in unavailable:
                self.warn(f"tracker '{name}' is installed but failed to load ({unavailable[name]}); skipped")
                continue
            tracker = self.call(name, "setup", TRACKERS.get(name), self.cfg.tracking, self.run.root)
            if name not in self.broken:
                self.call(name, "start", tracker.start, run_name, self.cfg.dump())
            if name not in self.broken:
                self.started[name] = tracker

    def finish(self, status: str) -> None:
        """Log params, metrics and artifacts to every started tracker, then end each run."""
        params, metrics, artifacts = flatten(self.cfg.dump()), {}, []
        try:
            report_path = self.run.path("report.json")
            metrics = report_metrics(read_json(report_path)) if report_path.is_file() else {}
            artifacts = run_artifacts(self.run)
        except Exception as exc:  # an unreadable run folder must not hide the run's own outcome
            self.warn(f"the run's results could not be collected for tracking: {type(exc).__name__}: {exc}")
        with tempfile.TemporaryDirectory(prefix="patrol-track-") as tmp:
            try:
                artifacts += [(p, "reconstructions") for p in reconstruction_grids(self.run, Path(tmp))]
            except Exception as exc:  # pictures are a nicety
                self.warn(f"reconstruction grids could not be drawn: {type(exc).__name__}: {exc}")
            for name, tracker in self.started.items():
                self.call(name, "log_params", tracker.log_params, params)
                self.call(name, "log_metrics", tracker.log_metrics, metrics)
                for path, folder in artifacts:
                    self.call(name, f"log_artifact({path.name})", tracker.log_artifact, path, folder)
        failed, self.broken = self.broken, set()  # still close every started run; FAILED if logging to it failed
        for name, tracker in self.started.items():
            self.call(name, "end", tracker.end, FAILED if name in failed else status)
        self.broken |= failed


def check_trackers(names: list[str]) -> None:
    """Refuse tracker names that no installed package provides (a typo must not cost a whole run)."""
    missing = [n for n in names if n not in TRACKERS and n not in TRACKERS.unavailable()]
    if missing:
        installed = ", ".join(TRACKERS.names()) or "none"
        raise ConfigError(f"tracking.trackers names {', '.join(repr(n) for n in missing)}, which no installed "
                          f"plugin provides (installed: {installed}).",
                          "install the tracker's plugin (for mlflow: pip install ./plugins/mlflow), or remove it "
                          "from tracking.trackers")


@contextlib.contextmanager
def tracked_run(cfg: Config, run: RunFolder) -> Iterator[list[str]]:
    """Track the pipeline run inside the block with every tracker in `cfg.tracking.trackers`; yields the warnings.

    The run is FAILED when the block raises (a failed gate included); the exception always propagates.
    """
    if not cfg.tracking.trackers:
        yield []
        return
    check_trackers(cfg.tracking.trackers)
    session = _Session(cfg, run)
    started = time.time()
    session.start()
    status = FAILED
    try:
        yield session.warnings
        status = FINISHED
    finally:
        session.finish(status)
        run.record(STAGE, [], {"trackers": cfg.tracking.trackers}, seed=cfg.seed, started=started,
                   status=status, logged_to=sorted(set(session.started) - session.broken),
                   warnings=session.warnings)
