"""One small trained model folder and its export, shared by the deployment tests.

The model is a width-16 small ResNet (ModelOpt leaves convs under 16 channels in
float) trained for one epoch on the real scikit-learn digits at 16x16 (the
session's `digits_bundle`): accuracy is irrelevant here, real weights and real
calibration images are not.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import torch

from patrol_deploy.baseline import model_meta
from patrol_deploy.config import ExportConfig, load_config
from patrol_deploy.data import DataBundle
from patrol_deploy.deployment.export import ExportResult, export_model_dir
from patrol_deploy.modelio import save_model_dir
from patrol_deploy.models import create_model
from patrol_deploy.runfolder import RunFolder
from patrol_deploy.training import fit

SPLIT = "layer1"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, digits_bundle: DataBundle) -> Path:
    """A model folder as `patrol-deploy train` writes it (the data config in model.json matches digits_bundle)."""
    cfg = load_config(None, ["data.source=digits", "data.image_size=16", "model.width=16", "train.epochs=1"])
    torch.manual_seed(0)
    model = create_model(cfg.model, digits_bundle.num_classes, digits_bundle.channels)
    fit(model, digits_bundle, cfg.train, cfg.seed)
    folder = tmp_path_factory.mktemp("deploy") / "train"
    save_model_dir(folder, model.eval(), model_meta(cfg, digits_bundle, SPLIT))
    return folder


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> ExportResult:
    """The model folder exported with a dynamic batch at the default opset (19)."""
    run = RunFolder(tmp_path_factory.mktemp("run"))
    return export_model_dir(model_dir, run, ExportConfig(dynamic_batch=True))


class _Absent(types.ModuleType):
    """A stand-in module whose attributes are placeholder classes."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (Exception,), {})


@pytest.fixture(scope="session")
def modelopt_torch() -> None:
    """ModelOpt 0.47's torch package imports `requests` and `huggingface_hub` at import time, for Hugging Face
    dataset helpers that quantization never calls, without declaring them; stand in for them where absent."""
    for top, names in (("requests", ["requests"]), ("huggingface_hub", ["huggingface_hub", "huggingface_hub.errors"])):
        if top not in sys.modules and importlib.util.find_spec(top) is None:
            sys.modules.update((name, _Absent(name)) for name in names)
    pytest.importorskip("modelopt.torch.quantization")
