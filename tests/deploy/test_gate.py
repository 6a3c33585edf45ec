"""The privacy gate without the comparison of variants: `verify RUN` after the separate steps, `patrol-deploy gate`
and `patrol_deploy.gate`, each measured once and reused from the manifest while nothing changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import patrol_deploy
from patrol_deploy.cli.main import main
from patrol_deploy.runfolder import RunFolder
from tests.deploy.folder_run import ATTACKS, build_run

pytest.importorskip("modelopt.onnx.quantization")

GENEROUS = ["--max-ssim-increase", "1", "--max-utility-drop", "100"]  # a verdict that cannot depend on noise


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    with pytest.MonkeyPatch.context() as mp:
        return build_run(tmp_path_factory.mktemp("project"), mp)


def run_cli(argv: list[str | Path], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def ended(run: Path, stage: str) -> float:
    return float(RunFolder(run).manifest()["stages"][stage]["ended"])


def test_verify_works_after_the_separate_steps_and_reuses_its_measurement(
        folder_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert not (folder_run / "report.json").exists()  # no `run`: no comparison of variants
    code, out, err = run_cli(["verify", folder_run, *ATTACKS, *GENEROUS, "--json"], capsys)
    assert code == 0, err
    result = json.loads(out)
    assert result["passed"] and result["reasons"] == [] and result["reused"] is False
    assert result["deployed"]["edge"] == "quantize/edge.int8.onnx" and result["deployed"]["mode"] == "int8"
    assert set(result["deployed"]["privacy"]["attacks"]) == {"whitebox"}
    assert {p.name for p in (folder_run / "verify").iterdir()} == {"gate.json", "reference.json"}
    stages = RunFolder(folder_run).manifest()["stages"]
    assert {"verify", "verify/reference"} <= set(stages)
    assert json.loads((folder_run / "verify" / "gate.json").read_text())["passed"] is True
    first = ended(folder_run, "verify/reference"), ended(folder_run, "verify")

    code, out, err = run_cli(["verify", folder_run, *ATTACKS, *GENEROUS, "--json"], capsys)
    assert code == 0 and json.loads(out)["reused"] is True
    assert "reusing the measurement" in err and "attack whitebox" not in err
    assert (ended(folder_run, "verify/reference"), ended(folder_run, "verify")) == first  # nothing rewritten

    code, _, err = run_cli(["verify", folder_run, *ATTACKS, "--max-ssim-increase", "0", "--max-utility-drop", "0"],
                           capsys)  # other limits: the verdict is re-applied, nothing is attacked again
    assert code in (0, 1) and "attack whitebox" not in err
    assert ended(folder_run, "verify/reference") == first[0]
    code, _, err = run_cli(["verify", folder_run, *ATTACKS[:-2], "--set", "attacks.whitebox.iterations=4",
                            *GENEROUS], capsys)  # another attack setting: measured again
    assert code == 0 and "attack whitebox" in err and ended(folder_run, "verify/reference") > first[0]


def test_gate_command_passes_fails_and_caches(folder_run: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    project, out = folder_run.parent, tmp_path / "gate"
    argv: list[str | Path] = ["gate", "--model", folder_run / "quantize" / "edge.int8.onnx", "--reference",
                              folder_run / "patrol", "--data", project / "cfg.yaml", "--out", out, *GENEROUS]
    code, text, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "gate PASSED" in text and err.strip().endswith("PASSED | patrol-deploy gate")
    document = json.loads((out / "gate" / "gate.json").read_text())
    assert document["passed"] is True and document["reference"]["model_dir"] == str(folder_run / "patrol")
    first = ended(out, "gate/reference"), ended(out, "gate")
    code, text, err = run_cli(argv, capsys)
    assert code == 0 and "measurement reused" in text and "attack whitebox" not in err
    assert (ended(out, "gate/reference"), ended(out, "gate")) == first

    broken = tmp_path / "broken"  # the same model with its edge's convolutions zeroed: a constant upload
    shutil.copytree(folder_run / "patrol", broken)
    state = torch.load(broken / "model.pt", weights_only=True)
    for key, value in state.items():
        if key.startswith(("blocks.stem.", "blocks.layer1.")) and value.ndim == 4:
            value.zero_()
    torch.save(state, broken / "model.pt")
    code, text, err = run_cli(["gate", "--model", broken, "--reference", folder_run / "patrol", "--data",
                               project / "cfg.yaml", "--out", out], capsys)
    assert code == 1, err
    assert "privacy gate FAILED" in err and "utility dropped by" in err and "in the deployed edge" in err
    assert err.strip().endswith("FAILED | patrol-deploy gate") and "Traceback" not in err
    assert ended(out, "gate/reference") == first[0]  # the reference's measurement was reused

    code, _, err = run_cli(["gate", "--model", folder_run / "export" / "cloud.onnx", "--reference",
                            folder_run / "patrol", "--data", project / "cfg.yaml"], capsys)
    assert code == 2 and "cloud partition" in err


def test_python_gate_returns_a_result(folder_run: Path, tmp_path: Path) -> None:
    result = patrol_deploy.gate(model=folder_run / "quantize" / "edge.int8.onnx", reference=folder_run / "patrol",
                                data=folder_run.parent / "imgs", quiet=True, overrides=ATTACKS[1::2],
                                max_ssim_increase=1.0, max_utility_drop=100.0)
    assert isinstance(result, patrol_deploy.GateResult)
    assert result.passed is True and result.reasons == [] and result.files == []  # out=None writes nothing
    assert result.limits["max_utility_drop"] == 100.0 and 0 <= result.deployed["utility"] <= 100
    with pytest.raises(patrol_deploy.errors.ConfigError, match="max_ssim_rise"):
        patrol_deploy.gate(model=folder_run / "quantize" / "edge.int8.onnx", reference=folder_run / "patrol",
                           max_ssim_rise=0.1)
