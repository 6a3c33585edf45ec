"""A small run folder on an image folder, made as the separate steps make it: a trained PATROL-like model folder
(RUN/patrol, recorded in the manifest), then `patrol-deploy export` and `patrol-deploy quantize` on the CLI.

The data is a real ImageFolder tree (three classes told apart by brightness, so one epoch learns them) named by a
path relative to the YAML config, as users write configs; the steps run from the project folder with relative
paths. Shared by the gate and relocation tests.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patrol_deploy.baseline import model_meta
from patrol_deploy.baseline import stage_config as baseline_config
from patrol_deploy.cli.main import main
from patrol_deploy.config import load_config
from patrol_deploy.data import load_data
from patrol_deploy.modelio import save_model_dir
from patrol_deploy.models import create_model
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.training import fit

SPLIT = "layer1"
CONFIG = """\
data: {source: imagefolder, root: imgs, image_size: 16, channels: 1, calib_fraction: 0.1}
model: {width: 16, stages: 3}
train: {epochs: 2}
attacks: {names: [whitebox], eval_images: 4, whitebox: {iterations: 3}}
"""
ATTACKS = ["--set", "attacks.names=[whitebox]", "--set", "attacks.eval_images=4",
           "--set", "attacks.whitebox.iterations=3"]


def make_images(root: Path, per_class: int = 80) -> None:
    """Three classes of 20x20 grey PNGs: dark, mid and bright, with noise."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "mid", "bright")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(40 + 80 * c + rng.normal(0, 25, (20, 20)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")


def cli(*args: str | Path) -> int:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in args])
    return int(done.value.code or 0)


def build_run(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """project/{imgs, cfg.yaml, run}; returns the run folder. The steps run with `project` as the working folder."""
    make_images(project / "imgs")
    (project / "cfg.yaml").write_text(CONFIG, encoding="utf-8")
    with monkeypatch.context() as mp:
        mp.chdir(project)
        cfg = load_config(Path("cfg.yaml").resolve())
        bundle = load_data(cfg.data, cfg.seed)
        torch.manual_seed(0)
        model = create_model(cfg.model, bundle.num_classes, bundle.channels)
        fit(model, bundle, cfg.train, cfg.seed)
        run = RunFolder("run")
        run.record("patrol", save_model_dir(run.path("patrol"), model.eval(), model_meta(cfg, bundle, SPLIT)),
                   baseline_config(cfg), seed=cfg.seed)
        assert cli("-q", "export", "run/patrol", "--out", "run") == 0
        assert cli("-q", "quantize", "run/export/edge.onnx", "--out", "run", "--calibration-images", "16") == 0
    return project / "run"
