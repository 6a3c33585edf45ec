"""`quantize.method` in `run`: ptq, qat, or auto (PTQ, the gate, QAT when the gate fails), every attempt kept.

The quantizer and the gate are stand-ins that record their calls (the real ones are tested in test_quantize.py
and test_gate.py); this tests the order of attempts, what each is given, and the verdict's wording.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from patrol_deploy.config import Config, load_config
from patrol_deploy.deployment import export, quantize
from patrol_deploy.errors import GateFailed
from patrol_deploy.pipeline import deploy, render, verify
from patrol_deploy.pipeline.render import ATTEMPTS_JSON
from patrol_deploy.runfolder import RunFolder, write_json


def _fake(monkeypatch: pytest.MonkeyPatch, run: RunFolder, passes: dict[str, bool]) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(export, "export_model_dir", lambda *a, **k: SimpleNamespace(edge=run.path("export/edge.onnx")))

    def fake_quantize(source: Path, *args: Any, qat: Config | None = None, **kwargs: Any) -> None:
        calls.append("qat" if qat is not None else f"ptq:{Path(source).name}")

    def fake_verify(root: Path, gate: Any, attempts: list[dict[str, Any]] | None = None,
                    quantized: str | None = None) -> None:
        method = calls[-1].split(":")[0]
        assert quantized == {"ptq": "quantize", "qat": "quantize/qat"}[method]  # each method's own edge is gated
        ok = passes[method]
        this = {"method": method, "utility": 90.0 if ok else 80.0, "worst_ssim": 0.5, "passed": ok,
                "reasons": [] if ok else ["utility dropped by 10.00 points"]}
        write_json(run.path(ATTEMPTS_JSON), [*(attempts or []), this])
        if not ok:
            raise GateFailed("privacy gate FAILED: utility dropped by 10.00 points.", "keep the float edge")

    monkeypatch.setattr(quantize, "quantize_edge", fake_quantize)
    monkeypatch.setattr(verify, "verify_run", fake_verify)
    return calls


def test_auto_falls_back_to_qat_when_ptq_fails_the_gate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    calls = _fake(monkeypatch, run, {"ptq": False, "qat": True})
    assert deploy.deploy_edge(load_config(None, []), run) is None
    assert calls == ["ptq:edge.onnx", "qat"]  # PTQ of the exported FP32 edge, then QAT of the model folder
    attempts = render.recorded_attempts(run)
    assert [(a["method"], a["passed"]) for a in attempts] == [("ptq", False), ("qat", True)]


def test_auto_stops_at_ptq_when_it_passes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    calls = _fake(monkeypatch, run, {"ptq": True, "qat": True})
    assert deploy.deploy_edge(load_config(None, []), run) is None and calls == ["ptq:edge.onnx"]


@pytest.mark.parametrize(("method", "tried", "fix"), [
    ("auto", ["ptq:edge.onnx", "qat"], "raise quantize.qat.epochs"),
    ("ptq", ["ptq:edge.onnx"], "set quantize.method: auto"),
    ("qat", ["qat"], "raise quantize.qat.epochs"),
])
def test_a_failed_gate_names_every_attempt_and_the_next_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            method: str, tried: list[str], fix: str) -> None:
    run = RunFolder(tmp_path)
    calls = _fake(monkeypatch, run, {"ptq": False, "qat": False})
    failed = deploy.deploy_edge(load_config(None, [f"quantize.method={method}"]), run)
    assert calls == tried and failed is not None
    for attempt in ("ptq", "qat"):
        assert (f"{attempt}: utility dropped" in failed.problem) == any(c.startswith(attempt) for c in tried)
    assert fix in (failed.fix or "")


def test_fp16_has_one_attempt(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    calls = _fake(monkeypatch, run, {"ptq": False, "qat": True})
    assert deploy.deploy_edge(load_config(None, ["quantize.mode=fp16"]), run) is not None and len(calls) == 1
