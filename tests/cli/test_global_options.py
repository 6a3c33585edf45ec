"""Global options anywhere on the command line, and what quiet silences (the CLI's -q and the API's quiet=True)."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest

from patrol_deploy import api
from patrol_deploy.cli.main import main
from patrol_deploy.cli.options import hoist_global_options
from patrol_deploy.deployment.export import SimplifyWarning
from patrol_deploy.errors import ConfigError
from patrol_deploy.progress import is_quiet, quiet_mode, set_quiet
from tests.engine.conftest import make_onnx


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        main(argv)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


def test_global_flags_move_before_the_subcommand_and_json_after_it():
    assert hoist_global_options(["verify", "RUN", "-q", "--debug"]) == ["-q", "--debug", "verify", "RUN"]
    assert hoist_global_options(["--json", "-q", "splits", "c.yaml"]) == ["-q", "splits", "--json", "c.yaml"]
    assert hoist_global_options(["profile", "m.onnx", "--", "-q"]) == ["profile", "m.onnx", "--", "-q"]
    assert hoist_global_options(["--version"]) == ["--version"]


def test_quiet_after_the_subcommand_silences_narration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = make_onnx(tmp_path / "m.onnx")  # float model, TensorRT 11: a note on stderr unless quiet
    code, out, err = run(["trtexec-cmd", str(model), "--trt-version", "11"], capsys)
    assert code == 0 and "note:" in err
    code, out, err = run(["trtexec-cmd", str(model), "--trt-version", "11", "-q"], capsys)
    assert code == 0 and out.startswith("/usr/src/tensorrt/bin/trtexec")
    assert err.strip() == "PASSED | patrol-deploy trtexec-cmd"
    code, out, _ = run(["--json", "trtexec-cmd", str(model), "--trt-version", "11", "--quiet"], capsys)
    assert code == 0 and json.loads(out)["api_generation"] == 11


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    code, _, err = run(["trtexec-cmd", str(junk), "--debug"], capsys)
    assert code == 2 and "Traceback (most recent call last)" in err and "not a readable ONNX model" in err
    code, _, err = run(["trtexec-cmd", str(junk)], capsys)
    assert code == 2 and "Traceback" not in err


def test_quiet_drops_library_warnings_and_keeps_our_own() -> None:
    before = logging.getLogger("torch").level
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        set_quiet(True)
        try:
            assert logging.getLogger("torch").level == logging.ERROR
            assert logging.getLogger("PIL").level == logging.ERROR
            warnings.warn("a library's deprecation", DeprecationWarning, stacklevel=1)
            warnings.warn("a library's user warning", UserWarning, stacklevel=1)
            warnings.warn("onnxsim could not simplify", SimplifyWarning, stacklevel=1)
        finally:
            set_quiet(False)
        warnings.warn("shown again", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["onnxsim could not simplify", "shown again"]
    assert logging.getLogger("torch").level == before != logging.ERROR  # restored


def test_api_quiet_is_quiet_for_the_call_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[bool] = []

    def base_tree(config: object) -> dict:
        seen.append(is_quiet())
        raise ConfigError("stop here.", "nothing")

    monkeypatch.setattr(api, "_base_tree", base_tree)
    assert not is_quiet()
    with pytest.raises(ConfigError, match="stop here"):
        api.optimize(out=tmp_path / "run", quiet=True)
    assert seen == [True] and not is_quiet()
    with quiet_mode(False):
        assert not is_quiet()
