"""The whole pipeline on real digits at toy sizes: report, resumable stages, export, INT8 and the privacy gate."""

from __future__ import annotations

import contextlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from patrol_deploy.cli.main import main
from patrol_deploy.config import Config, GateConfig
from patrol_deploy.errors import GateFailed
from patrol_deploy.pipeline.compare import report_of
from patrol_deploy.pipeline.run import run_all
from patrol_deploy.pipeline.verify import gate_reasons, verify_run
from patrol_deploy.report import validate_report
from patrol_deploy.runfolder import RunFolder
from tests.scripts import load_script

TOY = {
    "data": {"source": "digits", "image_size": 16, "limit": 700},
    "model": {"width": 16, "stages": 3},  # INT8 needs channel counts ModelOpt quantizes (>= 16, multiples of 8)
    "train": {"epochs": 3},
    "budget": {"edge_macs": 3.7e6},  # layer1 fits unpruned (3.66 M MACs), layer2 (6.98 M) after pruning
    "patrol": {"mask_epochs": 1, "finetune_epochs": 1, "adversarial": {"surrogate_width": 32},
               "prune": {"round_to": 8}},
    "attacks": {"names": ["whitebox", "blackbox"], "eval_images": 8, "whitebox": {"iterations": 10},
                "blackbox": {"epochs": 2, "widths": [32], "large_budget": False}},
    "gate": {"max_patrol_utility_drop": 100.0},  # 1+1 epochs: the mechanics are tested here, the verdict below
    "defenses": {"names": ["noise"], "epochs": 1, "grids": {"noise": [1.0]}},
    "quantize": {"calibration_images": 16, "method": "ptq"},  # auto's QAT fallback: tests/deploy, test_qat_through
}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, dict[str, Any]]:
    cfg = Config.model_validate(TOY)
    out = tmp_path_factory.mktemp("run")
    try:
        return cfg, out, run_all(cfg, out, deploy=True)
    except GateFailed:  # a toy PATROL may fail its verdict or the INT8 gate: the report is complete either way
        return cfg, out, report_of(RunFolder(out))


def test_report_compares_every_variant(toy_run: tuple[Config, Path, dict[str, Any]]) -> None:
    cfg, out, report = toy_run
    validate_report(report)
    assert set(report["variants"]) == {"undefended", "deep_undefended", "pruned", "patrol", "noise"}
    deep, pruned = report["variants"]["deep_undefended"], report["variants"]["pruned"]
    assert deep["split"]["name"] == pruned["split"]["name"] == report["variants"]["patrol"]["split"]["name"]
    assert not deep["split"]["fits_budget"] and pruned["split"]["fits_budget"]  # a reference vs a deployable edge
    assert pruned["params"]["ablation"] == {"lipschitz": False, "adversarial": False, "prune": True, "distill": True}
    assert set(report["privacy_gain"]) >= {"depth", "pruning", "terms", "total"}
    assert isinstance(report["patrol_verdict"]["passed"], bool)
    und, pat = report["variants"]["undefended"], report["variants"]["patrol"]
    order = ["stem", "layer1", "layer2", "layer3", "pool"]
    assert und["split"]["name"] == "layer1"  # the budget alone decides it
    assert order.index(pat["split"]["name"]) > order.index(und["split"]["name"])  # pruning bought depth, however much
    assert pat["split"]["edge_macs"] <= cfg.budget.edge_macs and und["split"]["edge_macs"] <= cfg.budget.edge_macs
    for v in report["variants"].values():
        assert set(v["privacy"]["attacks"]) == {"whitebox", "blackbox"}
        assert all(0 <= a["ssim"] <= 1 for a in v["privacy"]["attacks"].values())
    assert report["variants"]["noise"]["params"]["defense"] == "noise"
    html = (out / "report.html").read_text()
    assert "patrol" in html and "data:image/png;base64," in html
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["quantized"]["gate"]["passed"] is report["quantized"]["gate"]["passed"]


def test_quantized_section_and_manifest(toy_run: tuple[Config, Path, dict[str, Any]]) -> None:
    _, out, report = toy_run
    q = report["quantized"]
    assert q["mode"] == "int8" and q["runtime"].endswith(".onnx")
    assert math.isfinite(q["utility"]) and math.isfinite(q["privacy"]["worst_ssim"])
    assert q["gate"]["passed"] == (not q["gate"]["reasons"])
    stages = RunFolder(out).manifest()["stages"]
    for stage in ("train", "patrol", "variants/undefended", "variants/patrol", "variants/noise", "report",
                  "export", "quantize", "verify"):
        assert stage in stages, stage
        assert not RunFolder(out).changed_files(stage), stage


def test_rerun_reuses_finished_stages(toy_run: tuple[Config, Path, dict[str, Any]]) -> None:
    cfg, out, report = toy_run
    before = RunFolder(out).manifest()["stages"]
    again = run_all(cfg, out, deploy=False)  # how long this takes is measured by scripts/bench_overheads.py
    after = RunFolder(out).manifest()["stages"]
    for stage in ("train", "patrol", "variants/patrol", "variants/noise"):
        assert after[stage]["ended"] == before[stage]["ended"], f"{stage} was redone"
    assert again["variants"]["patrol"] == report["variants"]["patrol"]


def test_rerun_with_deploy_reuses_the_gates_measurement(toy_run: tuple[Config, Path, dict[str, Any]],
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    cfg, out, _ = toy_run
    before = RunFolder(out).manifest()["stages"]
    capsys.readouterr()
    with contextlib.suppress(GateFailed):  # the verdict is not what this test is about
        run_all(cfg, out, deploy=True)
    err = capsys.readouterr().err
    assert "verify: reusing the measurement" in err and "against the deployed edge" not in err
    after = RunFolder(out).manifest()["stages"]
    assert after["verify"]["ended"] == before["verify"]["ended"]
    on_disk = json.loads((out / "report.json").read_text())
    gate_file = json.loads((out / "verify" / "gate.json").read_text())
    assert on_disk["quantized"]["gate"]["passed"] is gate_file["passed"]  # report.json kept up to date


def test_gate_fails_closed_and_cli_exits_1(toy_run: tuple[Config, Path, dict[str, Any]],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = toy_run
    comparison_path = out / "comparison.json"
    original = comparison_path.read_text()
    comparison = json.loads(original)
    comparison["variants"]["patrol"]["privacy"]["worst_ssim"] = -1.0  # the float model "was" far more private
    comparison_path.write_text(json.dumps(comparison))
    try:
        with pytest.raises(GateFailed, match="worst-case SSIM rose by"):
            verify_run(out, GateConfig())
        with pytest.raises(SystemExit) as exit_info:
            main(["verify", str(out)])
        assert exit_info.value.code == 1
        err = capsys.readouterr().err
        assert "privacy gate FAILED" in err and err.strip().endswith("FAILED | patrol-deploy verify")
        assert json.loads((out / "report.json").read_text())["quantized"]["gate"]["passed"] is False  # rendered
    finally:  # the module's run folder is shared: leave it as `run` wrote it
        comparison_path.write_text(original)
        with contextlib.suppress(GateFailed):  # and verify/ with the verdict against the true reference
            verify_run(out, GateConfig())


def _stage_files(out: Path) -> dict[str, str]:
    """Every file of a run folder outside verify/ (and the manifest, which records verify's stages): its hash."""
    import hashlib

    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*"))
            if p.is_file() and p.parts[len(out.parts)] != "verify" and p.name != "manifest.json"}


def test_verify_writes_only_its_own_files_and_the_report_is_rendered_once(
        toy_run: tuple[Config, Path, dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stages write only their own files; report.json / report.html come from one render at the end of `run`
    (and of `verify RUN`), from comparison.json, verify/attempts.json and the shipped edge's gate.json."""
    import shutil

    from patrol_deploy.pipeline import render

    cfg, out, _ = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    before = _stage_files(copy)
    with contextlib.suppress(GateFailed):
        verify_run(copy, GateConfig(max_ssim_increase=0.5))  # new limits: a new verdict in verify/gate.json
    assert _stage_files(copy) == before  # report.json included: verify leaves it to the report stage
    renders: list[Path] = []
    real = render.write_report

    def counted(folder: Path, *args: Any) -> Any:
        renders.append(Path(folder))
        return real(folder, *args)

    monkeypatch.setattr(render, "write_report", counted)
    with contextlib.suppress(GateFailed):
        run_all(cfg, copy, deploy=True)  # everything reused; the report is rendered once, at the end
    assert renders == [copy]
    report = json.loads((copy / "report.json").read_text())
    gate = json.loads((copy / "verify" / "gate.json").read_text())
    assert report["quantized"]["gate"]["passed"] is gate["passed"]
    assert report["quantized"]["attempts"] == json.loads((copy / "verify" / "attempts.json").read_text())
    assert {k: v for k, v in report.items() if k != "quantized"} == json.loads((copy / "comparison.json").read_text())


def test_a_run_folder_of_the_previous_layout_is_read_from_its_report(
        toy_run: tuple[Config, Path, dict[str, Any]], tmp_path: Path) -> None:
    """Before comparison.json, report.json held the comparison (and `verify` rewrote it): `verify` still works."""
    import shutil

    from patrol_deploy.pipeline.render import comparison_of, render_report

    _, out, _ = toy_run
    copy = tmp_path / "old"
    shutil.copytree(out, copy)
    (copy / "comparison.json").unlink()
    (copy / "variants" / "originals.npz").unlink()
    comparison = comparison_of(RunFolder(copy))
    assert comparison is not None and "quantized" not in comparison and "patrol" in comparison["variants"]
    report = render_report(RunFolder(copy))  # the evaluation images are loaded again from the recorded data
    assert report is not None and report["variants"] == comparison["variants"] and "quantized" in report
    validate_report(report)


def _entry(ssim: float | None, util: float | None, errors: dict[str, str] | None = None) -> dict[str, Any]:
    privacy: dict[str, Any] = {"worst_ssim": ssim, "worst_attack": "blackbox", "attacks": {}}
    if errors:
        privacy["errors"] = errors
    return {"utility": util, "privacy": privacy}


@pytest.mark.parametrize(("quantized", "reason"), [
    (_entry(0.40, 90.0), None),
    (_entry(0.43, 90.0), "SSIM rose by 0.030"),
    (_entry(0.40, 89.0), "utility dropped by 1.20"),
    (_entry(float("nan"), 90.0), "SSIM could not be measured"),
    (_entry(None, 90.0), "SSIM could not be measured"),
    (_entry(0.40, None), "utility could not be measured"),
    (_entry(0.40, 90.0, {"whitebox": "RuntimeError: boom"}), "attack 'whitebox' failed: RuntimeError: boom"),
])
def test_gate_reasons(quantized: dict[str, Any], reason: str | None) -> None:
    reasons = gate_reasons(_entry(0.40, 90.2), quantized, GateConfig())
    if reason is None:
        assert reasons == []
    else:
        assert any(reason in r for r in reasons), reasons


def test_verify_rejects_bad_thresholds_and_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path), "--max-ssim-increase", "-1"])
    assert exit_info.value.code == 2
    assert "max_ssim_increase" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "has no quantized edge" in capsys.readouterr().err


def test_overheads_bench_runs_on_this_toy_config() -> None:
    """scripts/bench_overheads.py times what these tests check as facts (re-run, broken-image refusal)."""
    bench = load_script("bench_overheads")
    assert bench.TOY == TOY  # it re-runs the pipeline these tests run
    result = bench.run("broken")  # the quick one; its time is printed by the script, not checked here
    assert result["broken"]["refused"] is True and result["broken"]["seconds"] >= 0 and "rerun" not in result


def test_qat_through_run_is_gated_and_recorded(toy_run: tuple[Config, Path, dict[str, Any]],
                                               tmp_path: Path) -> None:
    """quantize.method qat in `run`'s deployment: the QAT edge (real fine-tuning, real gate) replaces the PTQ one,
    and report.json says how it was made, what INT8 covers, and every attempt."""
    import shutil

    from patrol_deploy.pipeline.deploy import deploy_edge
    from patrol_deploy.pipeline.render import render_report

    cfg, out, _ = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    qat = cfg.model_copy(update={"quantize": cfg.quantize.model_copy(update={
        "method": "qat", "qat": cfg.quantize.qat.model_copy(update={"epochs": 1})})})
    failed = deploy_edge(qat, RunFolder(copy))
    render_report(RunFolder(copy))  # the report stage, as `run` ends
    q = json.loads((copy / "report.json").read_text())["quantized"]
    assert q["method"] == "qat" and q["ops_quantized"] == q["ops_total"] > 0 and q["weight_scales"] == ["per-channel"]
    assert [a["method"] for a in q["attempts"]] == ["qat"] and q["attempts"][0]["passed"] is q["gate"]["passed"]
    assert (failed is None) is q["gate"]["passed"]
    assert math.isfinite(q["utility"]) and math.isfinite(q["privacy"]["worst_ssim"])
    assert "INT8 covers" in (copy / "report.html").read_text()
    from patrol_deploy.api import result_paths

    assert result_paths(RunFolder(copy))["quantized_onnx"] == copy / "quantize" / "qat" / "edge.int8.onnx"
    before = RunFolder(copy).manifest()["stages"]
    assert (deploy_edge(qat, RunFolder(copy)) is None) is q["gate"]["passed"]  # a re-run trains and attacks nothing
    after = RunFolder(copy).manifest()["stages"]
    for stage in ("quantize/qat", "verify/qat"):
        assert after[stage]["ended"] == before[stage]["ended"], stage
