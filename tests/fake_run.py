"""A finished run folder built without running the pipeline: report, reconstructions, ONNX files and an engine.

Shared by the tracking tests and the MLflow plugin's tests (the repository root is on pytest's pythonpath).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patrol_deploy.report import write_report
from patrol_deploy.runfolder import RunFolder, atomic_path, write_text
from tests.test_report import sample_images, sample_report


def finished_run(root: Path) -> RunFolder:
    """The files and manifest stages a full `run` leaves (the ONNX and engine files are stand-in bytes)."""
    run = RunFolder(root)
    originals, pictures = sample_images()
    run.record("report", write_report(root, sample_report(), originals, pictures), {})
    for name, arrays in pictures.items():
        with atomic_path(run.path("variants", name, "reconstructions.npz")) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
    run.record("export", [write_text(run.path("export", f), f) for f in ("edge.onnx", "edge.json", "cloud.onnx")], {})
    run.record("quantize", [write_text(run.path("quantize", "edge.int8.onnx"), "int8")], {"mode": "int8"})
    write_text(run.path("engine", "edge.engine"), "engine")
    return run


def artifact_names(run: RunFolder) -> set[str]:
    """`folder/file` of every artifact a tracker should receive for `finished_run` (grids are per variant)."""
    grids = {f"reconstructions/{p.parent.name}.png" for p in run.root.glob("variants/*/reconstructions.npz")}
    return {"report/report.json", "report/report.html", "onnx/edge.onnx", "onnx/cloud.onnx",
            "onnx/edge.int8.onnx", "engine/edge.engine"} | grids
