"""The one-call Python API: the documented example runs as written, re-runs reuse the folder, bad input is clear."""

from __future__ import annotations

import contextlib
import functools
import io
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import patrol_deploy
from patrol_deploy.api import PipelineResult, architecture_of, optimize
from patrol_deploy.config import Config, ModelConfig
from patrol_deploy.errors import ConfigError, DataError, ModelError, PatrolError
from patrol_deploy.models import create_model
from patrol_deploy.report import validate_report
from patrol_deploy.runfolder import RunFolder, sha256

DOC = Path(__file__).resolve().parent.parent / "docs" / "python_api.md"
# Few epochs and attack steps: the documented call itself (model, data, budget, out) runs unchanged.
TINY = {
    "data": {"limit": 400},
    "patrol": {"mask_epochs": 1, "finetune_epochs": 1, "adversarial": {"surrogate_width": 32}},
    "attacks": {"names": ["whitebox", "blackbox"], "eval_images": 8, "whitebox": {"iterations": 10},
                "blackbox": {"epochs": 2, "widths": [32], "large_budget": False}},
    "gate": {"max_patrol_utility_drop": 100.0},
    "defenses": {"names": ["noise"], "epochs": 1, "grids": {"noise": [1.0]}},
    "quantize": {"calibration_images": 16},
}
ORDER = ["stem", "layer1", "layer2", "layer3", "layer4"]


def doc_example() -> str:
    """The first Python block of docs/python_api.md."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert blocks, f"no python block in {DOC}"
    return str(blocks[0])


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """Run the documented example in a fresh folder; returns the folder, its namespace and what it printed."""
    cwd = tmp_path_factory.mktemp("api")
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.chdir(cwd)
        mp.setattr(patrol_deploy, "optimize", functools.partial(optimize, config=TINY), raising=False)
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(doc_example(), str(DOC), "exec"), namespace)
    return cwd, namespace, printed.getvalue()


def test_documented_example_runs_as_written(example: tuple[Path, dict[str, Any], str]) -> None:
    cwd, namespace, printed = example
    result = namespace["result"]
    assert isinstance(result, PipelineResult)
    validate_report(result.report)
    assert result.baseline_split == result.report["baseline_split"] == "layer1"
    assert ORDER.index(result.split) > ORDER.index(result.baseline_split)  # pruning bought a deeper split
    assert result.report["variants"]["patrol"]["split"]["edge_macs"] <= 15e6
    assert result.gate_passed == (not result.gate_reasons) and isinstance(result.gate_passed, bool)
    run = cwd / "runs" / "api-example"
    for key in ("report_json", "report_html", "patrol_model", "edge_onnx", "quantized_onnx", "manifest", "checkpoint"):
        assert result.paths[key].exists(), key
        assert result.paths[key].resolve().is_relative_to(run.resolve()), key
    assert result.paths["quantized_onnx"].name.endswith(".onnx") and result.paths["edge_onnx"].name == "edge.onnx"
    ckpt = result.paths["checkpoint"]
    assert ckpt.name == f"checkpoint-{sha256(ckpt)[:16]}.pt"  # content-addressed
    assert torch.equal(torch.load(ckpt, weights_only=True)["conv1.weight"], namespace["model"].conv1.weight)
    manifest = RunFolder(run).manifest()
    assert manifest["stages"]["input"]["config"]["architecture"] == "resnet18"
    assert manifest["run"]["identity"]["data"]["channels"] == 3  # taken from the model's first convolution
    assert f"PATROL {result.split}" in printed


def test_rerun_reuses_the_folder_and_another_model_is_refused(example: tuple[Path, dict[str, Any], str]) -> None:
    cwd, namespace, _ = example
    run = RunFolder(cwd / "runs" / "api-example")
    before = run.manifest()["stages"]
    call = functools.partial(optimize, data={"source": "digits", "image_size": 32}, budget={"edge_macs": 15e6},
                             out=run.root, config=TINY, deploy=False)
    again = call(model=namespace["model"])
    after = run.manifest()["stages"]
    for stage in ("input", "train", "patrol", "variants/patrol"):
        assert after[stage]["ended"] == before[stage]["ended"], f"{stage} was redone"
    assert again.split == namespace["result"].split
    # without deployment only PATROL's verdict is judged: None when it passed, False when it did not
    assert again.gate_passed is (None if again.report["patrol_verdict"]["passed"] else False)
    other = torchvision.models.resnet18(num_classes=10)  # other weights, same folder
    with pytest.raises(PatrolError, match="checkpoint's content") as info:
        call(model=other)
    assert "--force" in str(info.value)
    assert run.manifest()["stages"]["train"]["ended"] == before["train"]["ended"]  # nothing was touched


@pytest.mark.parametrize(("make", "channels", "expected"), [
    (lambda: torchvision.models.resnet18(num_classes=7), 3, "resnet18"),
    (lambda: torchvision.models.mobilenet_v2(num_classes=5), 3, "mobilenet_v2"),
    (lambda: create_model(ModelConfig(width=4), 10, 1), 1, "small_resnet"),
])
def test_architecture_is_recognised_from_the_weights(make: Any, channels: int, expected: str) -> None:
    state = make().state_dict()
    cfg = Config.model_validate({"data": {"channels": channels}, "model": {"width": 4}})
    assert architecture_of(state, "Net", cfg) == expected


def test_unknown_architecture_names_the_registered_ones(tmp_path: Path) -> None:
    odd = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(ModelError, match="does not match any registered architecture") as info:
        optimize(model=odd, data="digits", budget={"edge_macs": 1e6}, out=tmp_path / "run")
    message = str(info.value)
    assert "Sequential" in message
    assert all(name in message for name in ("resnet18", "resnet50", "mobilenet_v2", "small_resnet"))
    assert not (tmp_path / "run").exists()  # refused before writing anything
    with pytest.raises(ModelError, match="does not match model 'resnet50'"):
        optimize(model=torchvision.models.resnet18(), data="digits", out=tmp_path / "run",
                 config={"model": {"name": "resnet50"}})


@pytest.mark.parametrize(("kwargs", "error", "text"), [
    ({"epochs": 2}, ConfigError, "unknown keyword 'epochs'"),
    ({"data": "no-such-source"}, DataError, "neither a folder nor a dataset source"),
    ({"model": "missing.pt"}, ModelError, "does not exist"),
    ({"model": {"weights": 1}}, ModelError, "torch.nn.Module or a checkpoint path"),
    ({"train": {"epochs": 0}}, ConfigError, "train.epochs"),
    ({"config": 3}, ConfigError, "YAML path, a dict or a Config"),
])
def test_bad_arguments_are_clear_errors(tmp_path: Path, kwargs: dict[str, Any], error: type[PatrolError],
                                        text: str) -> None:
    with pytest.raises(error, match=re.escape(text)) as info:
        optimize(out=tmp_path / "run", **kwargs)
    assert info.value.fix  # every error says how to fix it


def test_import_is_torch_free_and_optimize_is_lazy() -> None:
    code = ("import sys, patrol_deploy\n"
            "assert 'torch' not in sys.modules and 'patrol_deploy.api' not in sys.modules\n"
            "assert callable(patrol_deploy.optimize) and patrol_deploy.PipelineResult.__name__ == 'PipelineResult'\n"
            "assert 'torch' not in sys.modules\n"
            "try:\n    patrol_deploy.nope\nexcept AttributeError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "has no attribute 'nope'" in done.stdout
