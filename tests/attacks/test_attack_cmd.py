"""`patrol-deploy attack` on a real model folder: attack.json, reconstructions.npz, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from patrol_deploy.cli.main import main
from patrol_deploy.data import DataBundle
from patrol_deploy.modelio import ModelMeta, save_model_dir
from patrol_deploy.models import BlockNet
from patrol_deploy.training import evaluate
from tests.attacks.conftest import attack_config

FAST = ["--set", "attacks.eval_images=8", "--set", "attacks.whitebox.iterations=10",
        "--set", "attacks.blackbox.epochs=3", "--set", "attacks.query_free.shadow_epochs=1"]


@pytest.fixture
def model_dir(tmp_path: Path, mnist_model: BlockNet, mnist_bundle: DataBundle) -> Path:
    cfg = attack_config()
    meta = ModelMeta(model=cfg.model.model_dump(mode="json"), split="layer1", num_classes=mnist_bundle.num_classes,
                     input_shape=[1, 32, 32], mean=list(mnist_bundle.mean), std=list(mnist_bundle.std))
    save_model_dir(tmp_path / "model", mnist_model, meta)
    return tmp_path / "model"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "attack.yaml"
    path.write_text("data:\n  source: mnist\n  image_size: 32\n  limit: 1000\nmodel:\n  width: 8\n", encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    captured = capsys.readouterr()
    assert isinstance(info.value.code, int)
    return info.value.code, captured.out, captured.err


def test_attack_writes_privacy_numbers_and_reconstructions(tmp_path: Path, model_dir: Path, config: Path,
                                                          mnist_model: BlockNet, mnist_bundle: DataBundle,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = run(["attack", str(config), "--model", str(model_dir), "--out", str(out), "--json", *FAST],
                            capsys)
    assert code == 0, err
    result = json.loads(stdout)
    assert result == json.loads((out / "attack.json").read_text(encoding="utf-8"))
    privacy = result["privacy"]
    assert set(privacy["attacks"]) == {"whitebox", "blackbox", "query_free"}
    assert privacy["worst_ssim"] == max(a["ssim"] for a in privacy["attacks"].values())
    assert privacy["attacks"][privacy["worst_attack"]]["ssim"] == privacy["worst_ssim"]
    assert result["split"] == "layer1" and result["utility_metric"] == "accuracy"
    # the saved model's accuracy on the test split, as the model in memory scores it (not a fixed number)
    assert result["utility"] == pytest.approx(evaluate(mnist_model, mnist_bundle, "classification")["accuracy"])
    assert len(privacy["attacks"]["blackbox"]["loss_curve"]["val"]) == 3
    with np.load(out / "reconstructions.npz") as npz:
        assert set(npz.files) == {"originals", "whitebox", "blackbox", "query_free"}
        for key in npz.files:
            arr = npz[key]
            assert arr.shape == (8, 1, 32, 32) and arr.dtype == np.float32 and arr.min() >= 0 and arr.max() <= 1
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    assert set(manifest["stages"]["attack"]["files"]) == {"attack.json", "reconstructions.npz"}
    assert err.strip().splitlines()[-1] == "PASSED | patrol-deploy attack"


def test_attack_text_output_and_attack_choice(tmp_path: Path, model_dir: Path, config: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, err = run(["attack", str(config), "--model", str(model_dir), "--out", str(tmp_path / "o"),
                             "--attacks", "whitebox", *FAST], capsys)
    assert code == 0, err
    assert "whitebox" in stdout and "worst case: whitebox SSIM" in stdout and "blackbox" not in stdout


def test_split_option_attacks_another_depth(tmp_path: Path, model_dir: Path, config: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "deep"
    code, stdout, err = run(["attack", str(config), "--model", str(model_dir), "--out", str(out), "--split", "pool",
                             "--attacks", "blackbox", "--json", *FAST], capsys)
    assert code == 0, err
    assert json.loads(stdout)["split"] == "pool"
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8"))["stages"]["attack"]["config"]["split"] \
        == "pool"


@pytest.mark.parametrize(("extra", "expected"), [
    (["--set", "data.image_size=28"], "data.image_size: 32"),
    (["--set", "data.channels=3"], "data.channels: 1"),
    (["--attacks", "whitebox,telepathy"], "unknown attack 'telepathy'"),
    (["--split", "layer9"], "unknown split point 'layer9'"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, model_dir: Path, config: Path, extra: list[str],
                                               expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, _, err = run(["attack", str(config), "--model", str(model_dir), "--out", str(out), *FAST, *extra], capsys)
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("patrol-deploy: error: ")]
    assert len(errors) == 1 and expected in errors[0] and " Fix: " in errors[0], err
    assert "Traceback" not in err and not (out / "attack.json").exists()


def test_missing_model_folder_names_the_fix(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["attack", str(config), "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "o")],
                       capsys)
    assert code == 2 and "model.json is missing" in err
