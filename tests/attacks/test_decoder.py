"""The inverse-network builder fits every split of every registered model, and refuses impossible shapes."""

from __future__ import annotations

import pytest
import torch

from patrol_deploy.attacks.decoder import build_decoder, parameter_count
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
def test_vector_features_get_a_real_mlp_head(shape: tuple[int, ...]) -> None:
    decoder = build_decoder(shape, 1, 32, width=256).eval()
    linears = [m for m in decoder[0].modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == 2  # features -> hidden -> seed map, not a single projection
    assert linears[0].out_features == 1024 and linears[1].out_features == 256 * 4 * 4
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in decoder[0].modules())
    assert decoder(torch.randn(2, *shape)).shape == (2, 1, 32, 32)


def test_map_features_get_conv_blocks_at_their_resolution() -> None:
    decoder = build_decoder((32, 8, 8), 1, 32, width=128)
    convs_before_upsampling = []
    for m in decoder:
        if isinstance(m, torch.nn.Upsample):
            break
        if isinstance(m, torch.nn.Conv2d):
            convs_before_upsampling.append(m)
    assert len(convs_before_upsampling) == 2 and convs_before_upsampling[0].in_channels == 32
    assert isinstance(decoder[0], torch.nn.BatchNorm2d) and not decoder[0].affine  # standardized features


def test_stages_follow_the_ratio() -> None:
    stages = lambda d: sum(isinstance(m, torch.nn.Upsample) for m in d)  # noqa: E731
    assert stages(build_decoder((16, 32, 32), 1, 32)) == 0
    assert stages(build_decoder((32, 16, 16), 1, 32)) == 1
    assert stages(build_decoder((64, 8, 8), 1, 64)) == 3


@pytest.mark.parametrize("shape", [(32,), (32, 8, 8), (16, 16, 16)])
def test_a_wider_attacker_is_strictly_larger(shape: tuple[int, ...]) -> None:
    sizes = [parameter_count(build_decoder(shape, 1, 32, width=w)) for w in (64, 128, 256)]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


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
