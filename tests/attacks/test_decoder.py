"""The inverse-network builder fits every split of every registered model, and refuses impossible shapes."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.attacks.decoder import build_decoder
from patrol_deploy.config import ModelConfig
from patrol_deploy.errors import ModelError
from patrol_deploy.models import MODELS, create_model
from patrol_deploy.split import cut, split_points


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", MODELS.names())
def test_output_shape_for_every_split(name: str, size: int) -> None:
    model = create_model(ModelConfig(name=name), num_classes=10, in_channels=3).eval()
    x = torch.zeros(2, 3, size, size)
    with torch.no_grad():
        for split in split_points(model):
            feats = cut(model, split)[0](x)
            decoder = build_decoder(tuple(feats.shape[1:]), 3, size).eval()
            assert decoder(feats).shape == x.shape, (name, split, tuple(feats.shape))


@pytest.mark.parametrize("shape", [(64,), (64, 1, 1)])
def test_vector_features_are_projected(shape: tuple[int, ...]) -> None:
    decoder = build_decoder(shape, 1, 32).eval()
    assert isinstance(decoder[0].proj[0], torch.nn.Linear)
    assert decoder(torch.randn(2, *shape)).shape == (2, 1, 32, 32)


def test_stages_follow_the_ratio() -> None:
    stages = lambda d: sum(isinstance(m, torch.nn.ConvTranspose2d) for m in d)  # noqa: E731
    assert stages(build_decoder((16, 32, 32), 1, 32)) == 0
    assert stages(build_decoder((32, 16, 16), 1, 32)) == 1
    assert stages(build_decoder((64, 8, 8), 1, 64)) == 3


@pytest.mark.parametrize(("shape", "size", "match"), [
    ((16, 64, 64), 32, "larger than"),
    ((8, 5, 5), 32, "power-of-two"),
    ((8, 12, 12), 32, "power-of-two"),
    ((8, 4, 8), 32, "non-square"),
    ((4, 3), 32, "cannot build"),
    ((4, 2, 2, 2), 32, "cannot build"),
])
def test_impossible_shapes_raise(shape: tuple[int, ...], size: int, match: str) -> None:
    with pytest.raises(ModelError, match=match) as info:
        build_decoder(shape, 1, size)
    assert info.value.fix
