"""Shared helpers of the hostile-input suite: run a command in-process and check that it failed cleanly.

`refused` is the one assertion every hostile case goes through: a non-zero, documented exit code, a one-line
message on stderr without a traceback, and an output folder left exactly as it was. It also tallies the cases,
printed at the end of the session for docs/reliability.md (without xdist; with xdist count the parametrization).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from patrol_deploy.cli.main import main

TALLY: Counter[str] = Counter()
INTERRUPTS: dict[str, Any] = {}  # the figures of the interruption test (test_interrupt.py)


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `folder` (empty if it does not exist)."""
    if not folder.exists():
        return {}
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str], stdout: list[str] | None = None) -> tuple[int, str]:
    """Run `patrol-deploy ARGS` in-process; returns (exit code, stderr) and appends stdout to `stdout` if given."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--quiet", *args])
    code = exit_info.value.code
    captured = capsys.readouterr()
    if stdout is not None:
        stdout.append(captured.out)
    return (code if isinstance(code, int) else 1), captured.err


def refused(args: list[str], capsys: pytest.CaptureFixture[str], code: int, match: str = "",
            watch: tuple[Path, ...] = (), stdout: list[str] | None = None) -> str:
    """Assert the command exits with `code` and one clean error line, and that no watched folder changed."""
    before = [snapshot(w) for w in watch]
    TALLY["tried"] += 1
    try:
        got, err = run_cli(args, capsys, stdout)
    except BaseException:
        TALLY["crashes"] += 1
        raise
    errors = [line for line in err.splitlines() if line.startswith("patrol-deploy: error:")]
    assert "Traceback" not in err, err
    assert got == code != 0, (got, err)
    assert len(errors) == 1 and match.lower() in errors[0].lower(), err
    assert err.strip().splitlines()[-1].startswith("FAILED | patrol-deploy"), err
    TALLY["clear_errors"] += 1
    corrupted = [w for w, b in zip(watch, before, strict=True) if snapshot(w) != b]
    TALLY["corrupted"] += len(corrupted)
    assert not corrupted, f"{corrupted} changed"
    return errors[0]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures of docs/reliability.md (only when the suite ran in this process)."""
    if TALLY["tried"]:
        terminalreporter.write_line(
            f"hostile inputs: {TALLY['tried']} tried, {TALLY['clear_errors']} clear errors, "
            f"{TALLY['crashes']} crashes, {TALLY['corrupted']} artifacts corrupted")
    if INTERRUPTS:
        terminalreporter.write_line(
            f"interruptions: {INTERRUPTS['kills']} kills ({INTERRUPTS['where']}), each followed by a re-run; "
            f"{INTERRUPTS['mid_stage']} re-runs resumed the interrupted stage from a checkpoint, "
            f"{INTERRUPTS['corrupted']} artifacts corrupted, {INTERRUPTS['temps']} temp files left by SIGKILL "
            f"(removed by the next run), {INTERRUPTS['identical']}/{INTERRUPTS['numbers']} report numbers identical")


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A run folder that already holds a finished artifact, which a failed command must leave alone."""
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    (out / "train" / "keep.txt").write_text("an earlier stage's artifact\n", encoding="utf-8")
    return out


@pytest.fixture
def toy_config(tmp_path: Path) -> Path:
    """A config on 200 real scikit-learn digits with a tiny model: `splits` on it takes about a second."""
    cfg = tmp_path / "toy.yaml"
    cfg.write_text("seed: 0\ndata: {source: digits, image_size: 16, limit: 200}\nmodel: {width: 4, stages: 3}\n"
                   "budget: {edge_macs: 1.0e+6}\n", encoding="utf-8")
    return cfg
