"""The CLI as a user runs it: `patrol-deploy splits` on the bundled default and on an ImageFolder tree,
and a one-line error with exit code 2 for every kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from patrol_deploy.cli.main import main
from patrol_deploy.config import DEFAULT_CONFIG
from patrol_deploy.modelio import load_model_dir

BIN = Path(sys.executable).parent
SPLIT_NAMES = ["stem", "layer1", "layer2", "layer3", "pool"]


def cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed console script."""
    return subprocess.run([str(BIN / "patrol-deploy"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def make_tree(root: Path, broken: bool = True) -> None:
    """Two classes of RGB / grey images of assorted sizes; one file that only pretends to be a JPEG."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("bus", "car")):
        (root / cls).mkdir(parents=True)
        for i in range(9):
            h, w = 20 + 7 * i, 30 + 3 * i
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // (c + 1)
            img = Image.fromarray(arr)
            (img if i % 2 else img.convert("L")).save(root / cls / f"{i}.png")
    if broken:
        (root / "bus" / "fake.jpg").write_text("<html>not a picture</html>", encoding="utf-8")


def imagefolder_config(tmp_path: Path) -> Path:
    """A YAML config with a path relative to itself, as users write them."""
    make_tree(tmp_path / "images")
    path = tmp_path / "folder.yaml"
    path.write_text(
        "data:\n  source: imagefolder\n  root: images\n  image_size: 24\n  channels: 3\n"
        "model:\n  name: small_resnet\n  width: 8\n  stages: 3\nbudget:\n  edge_macs: 3.0e6\n", encoding="utf-8")
    return path


def assert_one_line_error(code: int, out: str, err: str, expected: str) -> None:
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("patrol-deploy: error: ")]
    assert len(errors) == 1, err
    assert expected in errors[0] and " Fix: " in errors[0], errors[0]
    assert lines[-1] == "FAILED | patrol-deploy splits"
    assert "Traceback" not in err and out == ""


def test_splits_on_the_bundled_default() -> None:
    run = cli("--quiet", "splits", DEFAULT_CONFIG)
    assert run.returncode == 0, run.stderr
    rows = run.stdout.strip().splitlines()
    assert rows[0].split()[:3] == ["split", "edge", "MACs"]
    assert [r.split()[0] for r in rows[1:]] == ["stem", "layer1", "layer2", "layer3", "layer4", "pool"]  # 4 stages
    marked = [r.split()[0] for r in rows[1:] if "<- deepest within budget" in r]
    assert marked == ["layer1"]
    assert "16x32x32" in rows[2] and "65,536" in rows[2]  # width-16 small ResNet, float32 upload
    assert run.stderr.strip() == "PASSED | patrol-deploy splits"


def test_splits_on_an_imagefolder_tree_as_json(tmp_path: Path) -> None:
    config = imagefolder_config(tmp_path)
    run = cli("splits", config.name, "--json", "--set", "budget.upload_bytes=1e6", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert result["model"] == "small_resnet" and result["input_shape"] == [3, 24, 24]
    assert [s["split"] for s in result["splits"]] == SPLIT_NAMES
    assert [s["feature_shape"] for s in result["splits"]] == [[8, 24, 24], [8, 24, 24], [16, 12, 12], [32, 6, 6], [32]]
    fitting = [s["split"] for s in result["splits"] if s["fits"]]
    assert result["deepest_fitting"] == fitting[-1]
    assert result["budget"]["edge_macs"] == 3.0e6 and result["budget"]["upload_bytes"] == 1e6
    assert all(isinstance(s["edge_macs"], int) and s["edge_params"] > 0 for s in result["splits"])
    assert "skipped 1 unreadable file(s)" in run.stderr and "fake.jpg" in run.stderr


def test_malformed_yaml_exits_fast_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: [mnist\n", encoding="utf-8")
    run = cli("splits", bad)
    assert_one_line_error(run.returncode, run.stdout, run.stderr, "malformed YAML")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: {nmae: x}\n", encoding="utf-8")
    run = cli("--debug", "splits", bad)
    assert run.returncode != 0
    assert "Traceback (most recent call last)" in run.stderr and "ConfigError" in run.stderr
    assert "model.nmae: unknown key" in run.stderr


def test_python_dash_m_help() -> None:
    run = subprocess.run([sys.executable, "-m", "patrol_deploy", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert "Usage: patrol-deploy" in run.stdout
    for command in ("splits", "train", "--quiet", "--debug"):
        assert command in run.stdout


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def bad_input(tmp_path: Path, case: str) -> tuple[list[str], str]:
    """argv for `patrol-deploy splits` and the text its error line must contain."""
    folder = "data:\n  source: imagefolder\n  root: ds\n  image_size: 16\nmodel: {width: 8}\n"
    if case == "missing dataset folder":
        return [str(write(tmp_path / "c.yaml", folder))], "does not exist"
    if case == "empty dataset folder":
        (tmp_path / "ds").mkdir()
        return [str(write(tmp_path / "c.yaml", folder))], "has no class sub-folders"
    if case == "nothing decodable":
        (tmp_path / "ds" / "a").mkdir(parents=True)
        (tmp_path / "ds" / "a" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n")
        (tmp_path / "ds" / "a" / "y.jpg").write_bytes(b"\xff\xd8\xff")
        return [str(write(tmp_path / "c.yaml", folder))], "no usable images"
    if case in ("unknown model", "budget below the smallest split"):
        make_tree(tmp_path / "ds", broken=False)
        override = "model.name=vgg11" if case == "unknown model" else "budget.edge_macs=100"
        expected = ("unknown model 'vgg11'. Fix: use one of: mobilenet_v2, resnet18"
                    if case == "unknown model" else "no split fits the edge budget")
        return [str(write(tmp_path / "c.yaml", folder)), "--set", override], expected
    configs = {
        "unknown data source": ("data: {source: cifar10}\n", "unknown dataset source 'cifar10'"),
        "malformed YAML": ("model:\n  name: x\n    width: 3\n", "line 3, column 10: malformed YAML"),
        "unknown key": ("model: {widht: 8}\n", "model.widht: unknown key"),
        "wrong type": ("train: {epochs: ten}\n", "train.epochs: Input should be a valid integer"),
        "YAML alias": ("a: &x {epochs: 1}\ntrain: *x\n", "aliases (*name) are not allowed"),
        "top level not a mapping": ("[1, 2]\n", "the top level must be a mapping"),
    }
    if case in configs:
        text, expected = configs[case]
        return [str(write(tmp_path / "c.yaml", text))], expected
    if case == "bad --set":
        return [str(DEFAULT_CONFIG), "--set", "budget.edge_macs"], "--set 'budget.edge_macs' has no '='"
    if case == "unknown --set key":
        return [str(DEFAULT_CONFIG), "--set", "budget.edge_flops=1e6"], "budget.edge_flops: unknown key"
    assert case == "missing config file"
    return [str(tmp_path / "nope.yaml")], "config file"


BAD_INPUTS = ["missing dataset folder", "empty dataset folder", "nothing decodable", "unknown model",
              "budget below the smallest split", "unknown data source", "malformed YAML", "unknown key", "wrong type",
              "YAML alias", "top level not a mapping", "bad --set", "unknown --set key", "missing config file"]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    """In-process (the same `main` the console script runs), so each case costs milliseconds, not a torch import."""
    argv, expected = bad_input(tmp_path, case)
    with pytest.raises(SystemExit) as info:
        main(["splits", *argv])
    captured = capsys.readouterr()
    assert isinstance(info.value.code, int)
    out = captured.out
    if case == "budget below the smallest split":  # the table comes first, showing that nothing fits
        rows = out.splitlines()[1:]
        assert rows and all(row.split()[5] == "no" for row in rows), out
        out = ""
    assert_one_line_error(info.value.code, out, captured.err, expected)


def test_train_writes_the_baseline_and_then_reuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, out = imagefolder_config(tmp_path), tmp_path / "run"
    argv = ["train", str(config), "--out", str(out), "--json", "--set", "train.epochs=1"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    first = capsys.readouterr()
    assert info.value.code == 0, first.err
    summary = json.loads(first.out)
    assert summary["model"] == "small_resnet" and summary["utility_metric"] == "accuracy"
    assert summary["data"]["skipped_files"] == 1 and summary["split"] in SPLIT_NAMES
    assert {p.name for p in (out / "train").iterdir()} == {"model.pt", "model.json", "summary.json"}
    stage = json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]["train"]
    assert set(stage["files"]) == {"train/model.pt", "train/model.json", "train/summary.json"}
    _, meta = load_model_dir(out / "train")
    assert meta.split == summary["split"] and meta.input_shape == [3, 24, 24] and meta.num_classes == 2
    with pytest.raises(SystemExit) as info:
        main(argv)
    again = capsys.readouterr()
    assert info.value.code == 0 and "baseline: reusing" in again.err
    assert json.loads(again.out) == summary


def test_main_runs_outside_the_main_thread(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An app or harness may call `main` from a worker thread, where no signal handler can be installed."""
    import threading

    codes: list[object] = []

    def call() -> None:
        try:
            main(["splits", str(tmp_path / "nope.yaml")])
        except SystemExit as exc:
            codes.append(exc.code)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert codes == [2] and "config file" in capsys.readouterr().err
