"""Model folders: model.pt + model.json round trips, pruned models included, without unpickling code."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch_pruning as tp

from patrol_deploy.config import ModelConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.modelio import META_FILE, MODEL_FILE, ModelMeta, load_model_dir, read_meta, save_model_dir
from patrol_deploy.models import BlockNet, create_model


def meta_for(cfg: ModelConfig, split: str = "layer1") -> ModelMeta:
    return ModelMeta(model=cfg.model_dump(mode="json"), split=split, num_classes=5, input_shape=[1, 16, 16],
                     mean=[0.13], std=[0.3], task=cfg.task, extra={"seed": 0})


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def assert_same_outputs(a: BlockNet, b: BlockNet) -> None:
    x = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(a.eval()(x), b.eval()(x))


def test_roundtrip(tmp_path: Path) -> None:
    cfg = ModelConfig(width=8)
    model = create_model(cfg, 5, 1).eval()
    files = save_model_dir(tmp_path / "m", model, meta_for(cfg))
    assert [f.name for f in files] == [MODEL_FILE, META_FILE]
    loaded, meta = load_model_dir(tmp_path / "m")
    assert_same_outputs(model, loaded)
    assert asdict(meta) == asdict(meta_for(cfg))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == sorted([MODEL_FILE, META_FILE])  # no temp files


@pytest.mark.parametrize("task", ["classification", "reid"])
def test_pruned_model_roundtrip(tmp_path: Path, task: str) -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(width=8, task=task, embedding_dim=16)
    model = create_model(cfg, 5, 1)
    before = params(model)
    pruner = tp.pruner.MagnitudePruner(model, torch.randn(2, 1, 16, 16),
                                       importance=tp.importance.MagnitudeImportance(p=1),
                                       pruning_ratio=0.5, ignored_layers=[model.head])
    pruner.step()
    assert params(model) < before / 2  # channels were physically removed
    save_model_dir(tmp_path / "m", model, meta_for(cfg))
    loaded, meta = load_model_dir(tmp_path / "m")
    assert params(loaded) == params(model)
    key = "blocks.layer1.0.conv1.weight"
    assert loaded.state_dict()[key].shape == model.state_dict()[key].shape
    assert_same_outputs(model, loaded)
    assert meta.split == "layer1" and meta.task == task


def test_unknown_split_is_refused_when_saving(tmp_path: Path) -> None:
    cfg = ModelConfig(width=8)
    with pytest.raises(ModelError, match="unknown split point 'layer9'"):
        save_model_dir(tmp_path / "m", create_model(cfg, 5, 1), meta_for(cfg, split="layer9"))


def test_not_a_model_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="is not a model folder"):
        load_model_dir(tmp_path)


def test_corrupt_meta(tmp_path: Path) -> None:
    cfg = ModelConfig(width=8)
    save_model_dir(tmp_path, create_model(cfg, 5, 1), meta_for(cfg))
    (tmp_path / META_FILE).write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelError, match="is corrupt"):
        read_meta(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({"model": {}, "split": "stem"}), encoding="utf-8")
    with pytest.raises(ModelError, match="is corrupt"):
        read_meta(tmp_path)


def test_weights_from_another_architecture(tmp_path: Path) -> None:
    cfg = ModelConfig(width=8)
    save_model_dir(tmp_path, create_model(cfg, 5, 1), meta_for(cfg))
    other = create_model(ModelConfig(name="mobilenet_v2"), 5, 1)
    torch.save(other.state_dict(), tmp_path / MODEL_FILE)
    with pytest.raises(ModelError, match="does not match"):
        load_model_dir(tmp_path)
