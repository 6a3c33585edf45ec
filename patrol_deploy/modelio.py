"""Save and load a (possibly pruned) split model without unpickling code.

A model folder holds `model.pt` (a plain state dict: tensors only, read with
`torch.load(weights_only=True)`) and `model.json` (architecture config, split,
task, input shape, normalization). Pruned models are rebuilt from the
unpruned architecture by resizing each conv / batch-norm / linear layer to the
shapes found in the state dict, so no pickled module is ever needed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from patrol_deploy.config import Config, ModelConfig
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.errors import DataError, ModelError
from patrol_deploy.models import BlockNet, create_model, load_checkpoint
from patrol_deploy.progress import status
from patrol_deploy.relocate import check_data_root
from patrol_deploy.runfolder import atomic_path, sha256, write_json
from patrol_deploy.split import split_index

MODEL_FILE = "model.pt"
META_FILE = "model.json"
META_VERSION = 1


@dataclass
class ModelMeta:
    """Everything besides the weights that a model folder needs to be rebuilt and deployed."""

    model: dict[str, Any]  # ModelConfig as data
    split: str
    num_classes: int
    input_shape: list[int]  # C, H, W
    mean: list[float]
    std: list[float]
    task: str = "classification"
    extra: dict[str, Any] = field(default_factory=dict)
    meta_version: int = META_VERSION

    @property
    def model_config(self) -> ModelConfig:
        return ModelConfig.model_validate({**self.model, "checkpoint": None})


def save_model_dir(folder: str | Path, model: BlockNet, meta: ModelMeta) -> list[Path]:
    """Write model.pt and model.json atomically; returns the two paths."""
    folder = Path(folder)
    split_index(model, meta.split)  # refuse to save a split the model does not have
    weights = folder / MODEL_FILE
    with atomic_path(weights) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    meta_path = write_json(folder / META_FILE, asdict(meta))
    return [weights, meta_path]


def read_meta(folder: str | Path) -> ModelMeta:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise ModelError(f"'{folder}' is not a model folder: {META_FILE} is missing.",
                         "pass a folder written by `patrol-deploy train` or `patrol-deploy patrol` (e.g. RUN/patrol)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ModelMeta(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError, RecursionError) as exc:
        raise ModelError(f"{path} is corrupt: {exc}.", "re-run the stage that wrote it") from exc


def load_model_dir(folder: str | Path) -> tuple[BlockNet, ModelMeta]:
    """Rebuild the model of a model folder (pruned or not) and load its weights."""
    meta = read_meta(folder)
    state = load_checkpoint(Path(folder) / MODEL_FILE)
    model = create_model(meta.model_config, meta.num_classes, meta.input_shape[0])
    resize_to_state(model, state)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{folder}/{MODEL_FILE} does not match {folder}/{META_FILE}: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}.", "re-run the stage that wrote this folder")
    split_index(model, meta.split)
    return model.eval(), meta


def resize_to_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Resize conv / BN / linear layers (and other modules' own parameters) in place to the shapes in `state`."""
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        w = state.get(prefix + "weight")
        if isinstance(module, nn.Conv2d) and w is not None and w.shape != module.weight.shape:
            depthwise = module.groups > 1 and module.groups == module.in_channels
            module.out_channels = w.shape[0]
            module.groups = w.shape[0] if depthwise else module.groups
            module.in_channels = w.shape[1] * module.groups
            _replace(module, "weight", w.shape)
            if module.bias is not None:
                _replace(module, "bias", (w.shape[0],))
        elif isinstance(module, nn.BatchNorm2d | nn.BatchNorm1d):
            mean = state.get(prefix + "running_mean")
            if mean is not None and mean.shape[0] != module.num_features:
                module.num_features = mean.shape[0]
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    if getattr(module, attr, None) is not None:
                        _replace(module, attr, mean.shape)
        elif isinstance(module, nn.Linear) and w is not None and w.shape != module.weight.shape:
            module.out_features, module.in_features = w.shape
            _replace(module, "weight", w.shape)
            if module.bias is not None:
                _replace(module, "bias", (w.shape[0],))
        else:  # bare parameters pruned with their channels, e.g. PATROL's soft masks (a ParameterDict)
            for attr, param in list(module.named_parameters(recurse=False)):
                saved = state.get(prefix + attr)
                if saved is not None and saved.shape != param.shape:
                    _replace(module, attr, saved.shape)


def _replace(module: nn.Module, attr: str, shape: tuple[int, ...] | torch.Size) -> None:
    old = getattr(module, attr)
    new = torch.zeros(tuple(shape), dtype=old.dtype)
    if isinstance(old, nn.Parameter):
        setattr(module, attr, nn.Parameter(new, requires_grad=old.requires_grad))
    else:
        module.register_buffer(attr, new)


@dataclass
class Subject:
    """The float model a gate compares with, the config it measures with, and its data (loaded on first use)."""

    cfg: Config
    model: BlockNet
    meta: ModelMeta
    model_dir: Path
    _bundle: DataBundle | None = None

    @classmethod
    def load(cls, model_dir: Path, cfg: Config) -> Subject:
        model, meta = load_model_dir(model_dir)
        return cls(cfg, model, meta, model_dir)

    def bundle(self) -> DataBundle:
        """The data, checked against the model's input, and normalized as the model expects (its model.json)."""
        if self._bundle is None:
            check_data_root(self.cfg.data.model_dump(mode="json"))
            bundle, meta = load_data(self.cfg.data, self.cfg.seed), self.meta
            shape = [bundle.channels, bundle.image_size, bundle.image_size]
            if shape != list(meta.input_shape):
                raise DataError(f"the data gives images of shape {shape} (C, H, W) but the model in {self.model_dir} "
                                f"takes {meta.input_shape}.",
                                "set data.image_size and data.channels to the model's (--set data.image_size=...)")
            if meta.task == "classification" and bundle.num_classes != meta.num_classes:
                raise DataError(f"the data has {bundle.num_classes} classes but the model in {self.model_dir} "
                                f"predicts {meta.num_classes}.", "gate the model on the data it was trained for")
            if not (np.allclose(bundle.mean, meta.mean) and np.allclose(bundle.std, meta.std)):
                status("note: normalizing the images with the model's own mean and std (from its model.json), "
                       "not this data's")
                mean, std = tuple(meta.mean), tuple(meta.std)
                splits: dict[str, Any] = {name: dataclasses.replace(split, mean=mean, std=std)
                                          for name in ("train", "val", "test", "aux", "calib", "query", "gallery")
                                          if (split := getattr(bundle, name)) is not None}
                bundle = dataclasses.replace(bundle, **splits)
            self._bundle = bundle
        return self._bundle

    def identity(self) -> dict[str, Any]:
        """What a measurement of this subject depends on, besides the deployed edge."""
        return {"model_sha256": sha256(self.model_dir / MODEL_FILE), "meta_sha256": sha256(self.model_dir / META_FILE),
                "seed": self.cfg.seed, "data": self.cfg.data.model_dump(mode="json"),
                "attacks": self.cfg.attacks.model_dump(mode="json"), "device": self.cfg.train.device}
