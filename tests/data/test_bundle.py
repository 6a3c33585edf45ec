"""Seeded, pairwise-disjoint splits and the tensors that training and attacks consume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from patrol_deploy.config import DataConfig
from patrol_deploy.data import DataBundle, load_data
from patrol_deploy.errors import DataError

N_IMAGES = 240
SPLITS = ("train", "val", "test", "aux", "calib")


@pytest.fixture(scope="module")
def id_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 8x8 grey PNGs in 3 classes; pixels (0,0) and (0,1) encode each image's id, so splits can be traced."""
    root = tmp_path_factory.mktemp("ids")
    for i in range(N_IMAGES):
        cls = i % 3
        arr = np.full((8, 8), 40 + 60 * cls, np.uint8)
        arr[0, 0], arr[0, 1] = i % 256, i // 256
        folder = root / f"class{cls}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(arr).save(folder / f"{i:04d}.png")
    return root


def ids(images: np.ndarray) -> list[int]:
    return [int(img[0, 0, 0]) + 256 * int(img[0, 1, 0]) for img in images]


def load(root: Path, seed: int, **kw: object) -> DataBundle:
    options: dict[str, object] = {"source": "imagefolder", "root": root, "image_size": 8, **kw}
    return load_data(DataConfig.model_validate(options), seed=seed)


def split_ids(bundle: DataBundle) -> dict[str, list[int]]:
    return {s: ids(getattr(bundle, s).images) for s in SPLITS}


def test_splits_are_disjoint_complete_and_sized(id_tree: Path) -> None:
    bundle = load(id_tree, seed=0)
    got = split_ids(bundle)
    everything = [i for s in SPLITS for i in got[s]]
    assert sorted(everything) == list(range(N_IMAGES))  # pairwise disjoint and nothing lost
    cfg = DataConfig()
    for s in ("val", "test", "aux", "calib"):
        assert len(got[s]) == round(getattr(cfg, f"{s}_fraction") * N_IMAGES)
    for s in SPLITS:  # labels travel with their images
        split = getattr(bundle, s)
        assert [i % 3 for i in got[s]] == split.labels.tolist()


def test_splits_are_deterministic_per_seed(id_tree: Path) -> None:
    first, again, other = split_ids(load(id_tree, 0)), split_ids(load(id_tree, 0)), split_ids(load(id_tree, 1))
    assert first == again
    assert set(first["test"]) != set(other["test"])
    assert set(first["aux"]) != set(other["aux"])


def test_limit_draws_a_seeded_subset(id_tree: Path) -> None:
    a, b = load(id_tree, 0, limit=50), load(id_tree, 0, limit=50)
    assert sum(a.summary()["splits"].values()) == 50
    assert split_ids(a) == split_ids(b)


def test_normalization_and_denormalize(id_tree: Path) -> None:
    bundle = load(id_tree, 0)
    x, y = bundle.train.tensors()
    assert x.shape == (len(bundle.train), 1, 8, 8) and x.dtype == torch.float32
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(x.std()) == pytest.approx(1.0, abs=1e-2)
    assert y.dtype == torch.int64
    back = bundle.denormalize(bundle.test.tensors()[0])
    expected = torch.from_numpy(bundle.test.images).permute(0, 3, 1, 2).float() / 255.0
    assert torch.allclose(back, expected, atol=1e-6)


def test_batches_cover_each_image_once_and_shuffle_by_epoch(id_tree: Path) -> None:
    split = load(id_tree, 0).train

    def order(epoch: int, rank: int = 0, world: int = 1, drop_last: bool = False) -> list[int]:
        out: list[int] = []
        for x, _ in split.batches(16, shuffle=True, seed=0, epoch=epoch, rank=rank, world_size=world,
                                  drop_last=drop_last):
            images = (x * torch.tensor(split.std) + torch.tensor(split.mean)) * 255.0
            out += ids(images.round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        return out

    e0 = order(0)
    assert sorted(e0) == sorted(ids(split.images))
    assert e0 == order(0) and e0 != order(1)
    assert len(order(0, drop_last=True)) == len(split) // 16 * 16
    shards = order(0, rank=0, world=2) + order(0, rank=1, world=2)
    assert set(shards) == set(e0) and len(order(0, rank=0, world=2)) == len(order(0, rank=1, world=2))


def test_rgb_bundle_shapes(id_tree: Path) -> None:
    bundle = load(id_tree, 0, channels=3, image_size=12)
    assert (bundle.channels, bundle.image_size, bundle.num_classes) == (3, 12, 3)
    assert len(bundle.mean) == 3 and len(bundle.std) == 3
    assert bundle.train.tensors(np.arange(4))[0].shape == (4, 3, 12, 12)
    assert bundle.class_names == ["class0", "class1", "class2"]


def test_summary(id_tree: Path) -> None:
    summary = load(id_tree, 0).summary()
    assert summary["source"] == "imagefolder" and summary["num_classes"] == 3
    assert summary["image_size"] == 8 and summary["channels"] == 1 and summary["skipped_files"] == 0
    assert set(summary["splits"]) == set(SPLITS)


def test_too_few_images_for_a_test_split(id_tree: Path) -> None:
    with pytest.raises(DataError, match="the test split of 'imagefolder' is empty"):
        load(id_tree, 0, limit=2)
