#!/usr/bin/env python3
"""Set up a virtual environment and run the demo or the test suite (stdlib only).

    python3 scripts/dev.py demo                # .venv + package + the bundled demo -> runs/demo
    python3 scripts/dev.py test [ARGS]         # .venv + dev tools + ruff, mypy, pytest [ARGS]
    python3 scripts/dev.py test --cpu-matrix [ARGS]
        # ruff and mypy once, then pytest [ARGS] as other CPUs would run it: with ATEN_CPU_CAPABILITY=default,
        # avx2 (and avx512 where /proc/cpuinfo has avx512f) x OMP_NUM_THREADS=1, 2; a summary line per setting

Installs with requirements/constraints.txt, so CI and development get the
tested versions (torch 2.14.1, torchvision 0.29.1, torch-pruning 1.6.1).
The browser test (report.html in headless Chromium) uses an installed Chromium
or Chrome, or PATROL_CHROMIUM; when none is found and the user is root with
apt-get, `test` installs Debian's chromium, else the test skips and says why.
See docs/contributing.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
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


BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")  # as tests/test_report.py


def chromium_for_report_test() -> None:
    """The report test renders report.html in an installed Chromium or Chrome (or PATROL_CHROMIUM); where there is
    none and the user is root with apt-get, install Debian's chromium. Never fails the setup: the test skips."""
    if os.environ.get("PATROL_CHROMIUM") or any(shutil.which(b) for b in BROWSERS):
        return
    if not shutil.which("apt-get") or getattr(os, "geteuid", lambda: -1)() != 0:
        print("no Chromium or Chrome found and not root with apt-get: the browser test will skip "
              "(install one or set PATROL_CHROMIUM=/path/to/chrome)", flush=True)
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        sh("apt-get", "update", "-qq", env=env)
        sh("apt-get", "install", "-y", "-qq", "chromium", env=env)
    except (OSError, subprocess.CalledProcessError):
        print("chromium could not be installed; the browser test will skip", flush=True)


def cpu_settings() -> list[dict[str, str]]:
    """The torch CPU kernel choices (ATEN_CPU_CAPABILITY) this CPU can run, times 1 and 2 threads.

    A capability the CPU lacks falls back silently, so avx512 is only tried where /proc/cpuinfo lists avx512f; a
    pass here says nothing about AVX-512 machines, which is why test margins are measured wide (contributing.md).
    """
    try:
        flags = set(Path("/proc/cpuinfo").read_text(encoding="utf-8").split())
    except OSError:
        flags = set()
    caps = ["default", *(["avx2"] if "avx2" in flags else []), *(["avx512"] if "avx512f" in flags else [])]
    return [{"ATEN_CPU_CAPABILITY": cap, "OMP_NUM_THREADS": str(threads)} for cap in caps for threads in (1, 2)]


def cpu_matrix(pytest_args: list[str]) -> int:
    """Run pytest once per CPU setting (all of them, even after a failure); exit 1 if any failed."""
    cores = os.cpu_count() or 2
    results = []
    for setting in cpu_settings():
        workers = max(1, cores // int(setting["OMP_NUM_THREADS"]))  # threads x workers = the cores
        label = " ".join(f"{k}={v}" for k, v in setting.items())
        print(f"=== {label}: pytest -n {workers}", flush=True)
        started = time.monotonic()
        code = subprocess.run([str(BIN / "python"), "-m", "pytest", "-q", "-n", str(workers), *pytest_args],
                              cwd=ROOT, env={**os.environ, **setting}).returncode
        results.append((label, code, time.monotonic() - started))
    print("=== CPU matrix", flush=True)
    for label, code, seconds in results:
        print(f"{'passed' if code == 0 else f'FAILED (exit {code})':18s} {label}  ({seconds:.0f} s)", flush=True)
    return 0 if all(code == 0 for _, code, _ in results) else 1


def main(argv: list[str]) -> int:
    task = argv[1] if len(argv) > 1 else ""
    if task == "demo":
        setup("all")
        sh(BIN / "patrol-deploy", "demo", "--out", "runs/demo", *argv[2:])
    elif task == "test":
        matrix = "--cpu-matrix" in argv[2:]
        pytest_args = [a for a in argv[2:] if a != "--cpu-matrix"]
        setup("dev")
        chromium_for_report_test()
        sh(BIN / "ruff", "check", ".")
        sh(BIN / "mypy")
        if matrix:
            return cpu_matrix(pytest_args)
        sh(BIN / "python", "-m", "pytest", "-q", "-n", "2", *pytest_args)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except subprocess.CalledProcessError as exc:
        sys.exit(exc.returncode)
