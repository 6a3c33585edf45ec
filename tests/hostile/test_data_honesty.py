"""Silent data damage a new user found in ImageFolder (issue 17): 16-bit and transparent images, symlinked class
folders, one class or too few images per class, colour read as grey, and fewer calibration images than asked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patrol_deploy.config import DataConfig
from patrol_deploy.data import load_data
from patrol_deploy.data.sources import ALPHA_BACKGROUND, imagefolder
from patrol_deploy.deployment.calibration import CalibrationRecipe, calibration_array
from patrol_deploy.progress import PatrolWarning
from tests.hostile.conftest import refused

EXIT_BAD_INPUT = 2
FIVE = 5  # images per class: one for each of the five splits under the default fractions


def _tree(root: Path, classes: dict[str, int], mode: str = "L", value: int | tuple[int, ...] = 60) -> Path:
    for name, count in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new(mode, (12, 10), value).save(root / name / f"{i}.png")
    return root


def _config(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "folder.yaml"
    path.write_text(f"data: {{source: imagefolder, root: '{root}', image_size: 8}}\nmodel: {{width: 4}}\n"
                    "budget: {edge_macs: 1.0e+6}\n", encoding="utf-8")
    return path


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    root = _tree(tmp_path / "images", {"a": FIVE, "b": FIVE})
    for cls, value in (("a", 40000), ("b", 300)):  # 300: 8-bit conversion clips it to 255, scaling gives 1
        Image.new("I;16", (12, 10), value).save(root / cls / "deep.png")
    assert Image.open(root / "a" / "deep.png").mode == "I;16"
    raw = imagefolder(DataConfig(source="imagefolder", root=root, image_size=8))
    deep = {Path(p).parent.name: raw.images[i] for i, p in enumerate(sorted(root.rglob("*.png"))) if "deep" in p.name}
    assert (deep["a"] == round(40000 / 257)).all() and (deep["b"] == round(300 / 257)).all()


@pytest.mark.parametrize("channels", [1, 3])
def test_transparency_is_composited_on_white_with_a_warning(channels: int, tmp_path: Path) -> None:
    root = _tree(tmp_path / "images", {"a": FIVE, "b": FIVE})
    Image.new("RGBA", (12, 10), (200, 0, 0, 0)).save(root / "a" / "clear.png")  # fully transparent red
    Image.new("LA", (12, 10), (0, 128)).save(root / "b" / "half.png")  # black at half opacity
    with pytest.warns(PatrolWarning, match="2 of 12 images have transparency.*white background"):
        raw = imagefolder(DataConfig(source="imagefolder", root=root, image_size=8, channels=channels))
    names = [p.name for p in sorted(root.rglob("*.png"))]
    clear, half = raw.images[names.index("clear.png")], raw.images[names.index("half.png")]
    assert (clear == ALPHA_BACKGROUND[0]).all()  # not the hidden red
    assert (np.abs(half.astype(int) - 127) <= 1).all()  # half black over white


def test_colour_read_as_grey_warns_naming_the_key(tmp_path: Path) -> None:
    root = _tree(tmp_path / "images", {"a": FIVE, "b": FIVE}, "RGB", (200, 30, 30))
    with pytest.warns(PatrolWarning, match=r"10 of 10 images are in colour .* 8x8 grey\. Set data\.channels: 3"):
        imagefolder(DataConfig(source="imagefolder", root=root, image_size=8, channels=1))


def test_grey_stored_as_rgb_does_not_warn(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    root = _tree(tmp_path / "images", {"a": FIVE, "b": FIVE}, "RGB", (90, 90, 90))
    imagefolder(DataConfig(source="imagefolder", root=root, image_size=8, channels=1))
    assert not [w for w in recwarn if issubclass(w.category, PatrolWarning)]


def test_symlinked_class_folders_inside_are_followed_outside_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path / "images", {"a": FIVE, ".store/b": FIVE})
    outside = _tree(tmp_path / "elsewhere", {"c": FIVE})
    (root / "b").symlink_to(root / ".store" / "b", target_is_directory=True)  # a link that stays inside
    (root / "c").symlink_to(outside / "c", target_is_directory=True)  # a link that leaves the root
    (root / "a" / "again.png").symlink_to(root / ".store" / "b" / "0.png")  # one file under two classes
    (root / "d").symlink_to(root / "a", target_is_directory=True)  # a class twice
    with pytest.warns(PatrolWarning, match="3 link.* lead outside it or to a file already read"):
        raw = imagefolder(DataConfig(source="imagefolder", root=root, image_size=8, calib_fraction=0))  # b keeps 4
    assert raw.class_names == ["a", "b"] and np.bincount(raw.labels).tolist() == [FIVE + 1, FIVE - 1]
    assert raw.skipped == [
        (str(root / "c"), "class folder links outside the dataset folder (not followed)"),
        (str(root / "d"), "class folder is a link to class 'a' (read once)"),
        (str(root / "b" / "0.png"), "the same file as another path (a link): read once")]
    assert load_data(DataConfig(source="imagefolder", root=root, image_size=8, calib_fraction=0)
                     ).summary()["skipped_files"] == 3


def test_one_class_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "images", {"only": 40})
    refused(["splits", str(_config(tmp_path, root))], capsys, EXIT_BAD_INPUT, "at least 2", watch=(root,))


def test_one_class_with_images_and_an_empty_one_is_refused(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "images", {"full": 40})
    (root / "empty").mkdir()
    (root / "empty" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    refused(["splits", str(_config(tmp_path, root))], capsys, EXIT_BAD_INPUT, "1 class with usable images",
            watch=(root,))


def test_class_with_fewer_images_than_the_splits_need_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    root = _tree(tmp_path / "images", {"big": 40, "tiny": 3})
    line = refused(["splits", str(_config(tmp_path, root))], capsys, EXIT_BAD_INPUT, "fewer usable images than the 5",
                   watch=(root,))
    assert "'tiny' (3)" in line
    raw = imagefolder(DataConfig(source="imagefolder", root=root, image_size=8, val_fraction=0, calib_fraction=0))
    assert len(raw.images) == 43  # 3 images: enough when only train, test and aux are used


def test_fewer_calibration_images_than_asked_warns() -> None:
    data = DataConfig(source="digits", image_size=8, limit=125)  # calib_fraction 0.04 of 125: 5 images
    with pytest.warns(PatrolWarning, match="8 calibration images were asked for .* holds 5: calibrating on 5"):
        calib = calibration_array(data, 0, CalibrationRecipe(images=8))
    assert calib.shape[0] == 5
