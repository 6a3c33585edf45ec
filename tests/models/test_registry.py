"""Every registered model builds and runs; user checkpoints load safely or fail with ModelError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from patrol_deploy.config import ModelConfig
from patrol_deploy.errors import ConfigError, ModelError
from patrol_deploy.models import MODELS, BlockNet, ReIDHead, create_model, load_checkpoint


@pytest.mark.parametrize("name", MODELS.names())
@pytest.mark.parametrize("channels", [1, 3])
def test_every_model_builds_and_runs(name: str, channels: int) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(name=name, width=8), num_classes=7, in_channels=channels).eval()
    assert isinstance(model, BlockNet)
    assert model.block_names[0] in ("stem", "features0")
    with torch.no_grad():
        out = model(torch.randn(2, channels, 32, 32))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_reid_variant_has_embedding_bnneck_and_classifier() -> None:
    model = create_model(ModelConfig(task="reid", width=8, embedding_dim=24), num_classes=5, in_channels=3).eval()
    assert isinstance(model.head, ReIDHead)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        z = model.features(x)
        feat, logits = model.head.train_outputs(z)
        assert feat.shape == (3, 24) and logits.shape == (3, 5)
        assert torch.equal(model.head.embed(z), model.head.bnneck(feat))
        assert torch.equal(model(x), logits)


def test_unknown_model_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown model 'resnet1000'") as info:
        create_model(ModelConfig(name="resnet1000"), 10, 3)
    for name in ("small_resnet", "resnet18", "resnet50", "mobilenet_v2"):
        assert name in str(info.value.fix)


def save(tmp_path: Path, state: object, name: str = "ckpt.pt") -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def test_torchvision_state_dict_loads(tmp_path: Path) -> None:
    torch.manual_seed(1)
    tv = torchvision.models.resnet18(weights=None)
    path = save(tmp_path, tv.state_dict())
    model = create_model(ModelConfig(name="resnet18", checkpoint=path), num_classes=1000, in_channels=3).eval()
    tv.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), tv(x))  # body and the matching 1000-way head both came from the checkpoint


def test_torchvision_body_with_a_new_head(tmp_path: Path) -> None:
    tv = torchvision.models.resnet18(weights=None)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in tv.state_dict().items()}}  # DataParallel-style file
    model = create_model(ModelConfig(name="resnet18", checkpoint=save(tmp_path, wrapped)), 10, 3)
    ours = model.state_dict()
    assert torch.equal(ours["blocks.layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])
    assert ours["head.fc.weight"].shape == (10, 512)  # a fresh 10-way head on the checkpoint's body


def test_blocknet_state_dict_roundtrip(tmp_path: Path) -> None:
    cfg = ModelConfig(name="mobilenet_v2")
    source = create_model(cfg, 4, 1).eval()
    loaded = create_model(cfg.model_copy(update={"checkpoint": save(tmp_path, source.state_dict())}), 4, 1).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(source(x), loaded(x))


@pytest.mark.parametrize(("build", "name", "channels", "expected"), [
    (lambda: torchvision.models.resnet18(weights=None).state_dict(), "resnet50", 3, "does not fit model 'resnet50'"),
    (lambda: torchvision.models.resnet18(weights=None).state_dict(), "resnet18", 1, "wrong shape \\['conv1.weight'\\]"),
    (lambda: create_model(ModelConfig(width=8), 10, 1).state_dict(), "small_resnet", 1, "wrong shape"),
    (lambda: create_model(ModelConfig(), 10, 1).state_dict(), "resnet18", 1, "does not fit the configured model"),
    (lambda: {"weight": torch.zeros(2), "step": 3}, "small_resnet", 1, "not a state dict of tensors"),
    (lambda: [torch.zeros(2)], "small_resnet", 1, "not a state dict of tensors"),
])
def test_wrong_checkpoint_is_a_model_error(tmp_path: Path, build: object, name: str, channels: int,
                                           expected: str) -> None:
    path = save(tmp_path, build())  # type: ignore[operator]
    with pytest.raises(ModelError, match=expected) as info:
        create_model(ModelConfig(name=name, checkpoint=path), 10, channels)
    assert info.value.fix


def test_missing_and_corrupt_checkpoints(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_checkpoint(tmp_path / "junk.pt")


class _Payload:
    """Unpickling this calls open(marker, 'w'): the file appears only if code in the checkpoint ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


def test_pickle_carrying_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = save(tmp_path, {"conv.weight": _Payload(marker)})
    with pytest.raises(ModelError, match="cannot be loaded safely"):
        load_checkpoint(path)
    with pytest.raises(ModelError, match="pickled code is refused"):
        create_model(ModelConfig(checkpoint=path), 10, 1)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it (so the assertion above can fail).
    torch.load(path, weights_only=False)
    assert marker.exists()
    os.remove(marker)
