#!/usr/bin/env python3
"""Set up a virtual environment and run the demo or the test suite (stdlib only).

    python3 scripts/dev.py demo   # .venv + package + the bundled demo -> runs/demo
    python3 scripts/dev.py test   # .venv + dev tools + ruff, mypy, pytest

Installs with requirements/constraints.txt, so CI and development get the
tested versions (torch 2.14.1, torchvision 0.29.1, torch-pruning 1.6.1).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(os.environ.get("PATROL_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def sh(*cmd: str | Path, **kw: object) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)  # type: ignore[call-overload]


def setup(extras: str) -> None:
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [BIN / "python", "-m", "pip", "--disable-pip-version-check"]
    sh(*pip, "install", "-q", "-c", CONSTRAINTS, "-e", f".[{extras}]")
    if extras == "dev":
        # Stubs of the TensorRT 10.x API that the engine code is checked against (no TensorRT runtime).
        sh(*pip, "install", "-q", "--no-deps", "-c", CONSTRAINTS, "tensorrt-stubs")
        # The MLflow tracker plugin, installed as users install it; its tests run with the suite.
        sh(*pip, "install", "-q", "-c", CONSTRAINTS, "./plugins/mlflow")


def chromium_for_report_test() -> None:
    """The report test renders report.html in Debian's Chromium; install it where apt and root exist."""
    if shutil.which("chromium") or not shutil.which("apt-get") or os.geteuid() != 0:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        sh("apt-get", "update", "-qq", env=env)
        sh("apt-get", "install", "-y", "-qq", "chromium", env=env)
    except subprocess.CalledProcessError:
        print("chromium could not be installed; the browser test will skip", flush=True)


def main(argv: list[str]) -> int:
    task = argv[1] if len(argv) > 1 else ""
    if task == "demo":
        setup("all")
        sh(BIN / "patrol-deploy", "demo", "--out", "runs/demo", *argv[2:])
    elif task == "test":
        setup("dev")
        chromium_for_report_test()
        sh(BIN / "ruff", "check", ".")
        sh(BIN / "mypy")
        sh(BIN / "python", "-m", "pytest", "-q", "-n", "2", *argv[2:])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
