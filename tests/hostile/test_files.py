"""Hostile files: corrupt ONNX, engines without TensorRT, model folders and checkpoints that carry code."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest
import torch

from patrol_deploy.backends.trt import installed_version
from patrol_deploy.config import ModelConfig
from patrol_deploy.modelio import ModelMeta, save_model_dir
from patrol_deploy.models import create_model
from tests.engine.conftest import make_onnx
from tests.hostile.conftest import refused

EXIT_BAD_INPUT, EXIT_MISSING = 2, 3
no_tensorrt = pytest.mark.skipif(installed_version() is not None, reason="a real TensorRT is installed here")


def _onnx_bytes(kind: str, tmp_path: Path) -> bytes:
    good = make_onnx(tmp_path / "good.onnx").read_bytes()
    return {"empty": b"", "truncated": good[: len(good) // 2], "one_byte_short": good[:-1],
            "random": os.urandom(4096), "text": b"ir_version: 8\ngraph { }\n"}[kind]


ONNX_KINDS = ["empty", "truncated", "one_byte_short", "random", "text"]
ONNX_COMMANDS: dict[str, list[str]] = {
    "quantize": ["quantize", "{onnx}", "--out", "{out}"],
    "profile": ["profile", "{onnx}", "--backend", "ort", "--runs", "1", "--warmup", "0", "--report", "{out}/p.json"],
    "trtexec-cmd": ["trtexec-cmd", "{onnx}", "--out", "{out}/edge.engine"],
    "build-engine": ["build-engine", "{onnx}", "--out", "{out}/edge.engine"],
}


@pytest.mark.parametrize("kind", ONNX_KINDS)
@pytest.mark.parametrize("command", list(ONNX_COMMANDS))
def test_corrupt_onnx_is_refused(command: str, kind: str, tmp_path: Path, out_dir: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    onnx = tmp_path / "edge.onnx"
    onnx.write_bytes(_onnx_bytes(kind, tmp_path))
    args = [a.format(onnx=onnx, out=out_dir) for a in ONNX_COMMANDS[command]]
    refused(args, capsys, EXIT_BAD_INPUT, "onnx", watch=(out_dir, tmp_path))


def _model_folder(folder: Path) -> Path:
    model = create_model(ModelConfig(width=4), 10, 1)
    meta = ModelMeta(model={"name": "small_resnet", "width": 4}, split="layer1", num_classes=10,
                     input_shape=[1, 16, 16], mean=[0.5], std=[0.25])
    save_model_dir(folder, model, meta)
    return folder


def _break_model_folder(folder: Path, kind: str) -> None:
    weights, meta = folder / "model.pt", folder / "model.json"
    if kind == "truncated_weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "random_weights":
        weights.write_bytes(os.urandom(2048))
    elif kind == "corrupt_meta":
        meta.write_text("{not json", encoding="utf-8")
    elif kind == "nested_meta":
        meta.write_text("[" * 100_000, encoding="utf-8")
    elif kind == "wrong_meta_fields":
        meta.write_text('{"model": 3, "rm -rf": true}', encoding="utf-8")
    elif kind == "missing_meta":
        meta.unlink()


@pytest.mark.parametrize("kind", ["truncated_weights", "random_weights", "corrupt_meta", "nested_meta",
                                  "wrong_meta_fields", "missing_meta"])
def test_broken_model_folder_is_refused_by_export(kind: str, tmp_path: Path, out_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = _model_folder(tmp_path / "model")
    _break_model_folder(folder, kind)
    refused(["export", str(folder), "--out", str(out_dir)], capsys, EXIT_BAD_INPUT, watch=(out_dir, folder))


@pytest.mark.parametrize("command", ["run", "train", "patrol", "export", "quantize"])
def test_deeply_nested_manifest_is_refused(command: str, tmp_path: Path, out_dir: Path, toy_config: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (out_dir / "manifest.json").write_text("[" * 100_000, encoding="utf-8")
    source = str(_model_folder(tmp_path / "model")) if command in ("export", "quantize") else str(toy_config)
    refused([command, source, "--out", str(out_dir)], capsys, EXIT_BAD_INPUT, "manifest.json is not valid JSON",
            watch=(out_dir,))


ENGINE_KINDS = {"random": lambda: os.urandom(2048), "empty": lambda: b"",
                "truncated_plan": lambda: b"ftrt" + b"\0" * 60}


@no_tensorrt
@pytest.mark.parametrize("kind", list(ENGINE_KINDS))
@pytest.mark.parametrize("command", ["compare", "profile"])
def test_engine_without_tensorrt_exits_3(command: str, kind: str, tmp_path: Path, out_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    onnx = make_onnx(tmp_path / "edge.onnx")
    engine = tmp_path / "edge.engine"
    engine.write_bytes(ENGINE_KINDS[kind]())
    args = {"compare": ["compare", str(onnx), str(engine), "--report", str(out_dir / "cmp.json")],
            "profile": ["profile", str(engine), "--runs", "1", "--report", str(out_dir / "p.json")]}[command]
    refused(args, capsys, EXIT_MISSING, "tensorrt", watch=(out_dir, tmp_path))


@no_tensorrt
def test_build_engine_without_tensorrt_exits_3(tmp_path: Path, out_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    onnx = make_onnx(tmp_path / "edge.onnx")
    refused(["build-engine", str(onnx), "--out", str(out_dir / "edge.engine")], capsys, EXIT_MISSING,
            "tensorrt", watch=(out_dir, tmp_path))


class _Payload:
    """Unpickling this would run `touch MARKER`: a checkpoint that carries code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch '{self.marker}'",))


def _write_checkpoint(path: Path, kind: str, marker: Path) -> None:
    state = {"stem.0.weight": _Payload(marker)}
    if kind == "pickle":
        path.write_bytes(pickle.dumps(state))
    elif kind == "torch_save":
        torch.save(state, path)
    elif kind == "nested_in_state_dict":
        torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Payload(marker)}, path)
    elif kind == "pickled_module":
        torch.save(torch.nn.Linear(2, 2), path)


@pytest.mark.parametrize("kind", ["pickle", "torch_save", "nested_in_state_dict", "pickled_module"])
@pytest.mark.parametrize("command", ["splits", "train"])
def test_checkpoint_carrying_code_is_refused(command: str, kind: str, tmp_path: Path, out_dir: Path,
                                             toy_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    checkpoint = tmp_path / "evil.pt"
    _write_checkpoint(checkpoint, kind, marker)
    args = [command, str(toy_config), "--set", f"model.checkpoint={checkpoint}"]
    if command == "train":
        args += ["--out", str(out_dir)]
    refused(args, capsys, EXIT_BAD_INPUT, "checkpoint", watch=(out_dir,))
    assert not marker.exists(), "the checkpoint's code ran"
