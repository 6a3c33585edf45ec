"""Jetson platform state around a latency measurement: model, power mode, clock lock, tegrastats samples.

Latency on a Jetson depends on the power mode (`nvpmodel -q`) and on whether
`jetson_clocks` pinned the clocks at their maximum; unpinned clocks scale
with load and make numbers irreproducible. `jetson_clocks --show` needs root,
so the clock check falls back to comparing min/max frequencies in sysfs.
Commands and the filesystem root are parameters, so the parsing is tested
with recorded outputs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

Run = Callable[[list[str]], str | None]
_GPU_DEVFREQ = ("gpu", "gv11b", "ga10b", "gp10b", "gb10b")


def run_command(argv: list[str]) -> str | None:
    """stdout of `argv`, or None if the tool is missing, not permitted, fails or hangs."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def jetson_model(root: Path = Path("/")) -> str | None:
    """'NVIDIA Jetson AGX Orin Developer Kit' (or the L4T release line) on a Jetson, None elsewhere."""
    model_file = root / "proc/device-tree/model"
    if model_file.is_file():
        model = model_file.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
        if "jetson" in model.lower() or "tegra" in model.lower():
            return model
    release = root / "etc/nv_tegra_release"
    if release.is_file():
        return release.read_text(errors="replace").splitlines()[0].lstrip("# ").strip() or "NVIDIA Jetson"
    return None


def parse_nvpmodel(text: str) -> dict[str, Any] | None:
    """`nvpmodel -q` prints 'NV Power Mode: MAXN' and, on the next line, the mode id."""
    match = re.search(r"NV Power Mode:\s*(\S.*?)\s*$", text, re.MULTILINE)
    if not match:
        return None
    mode_id = re.search(r"^\s*(\d+)\s*$", text[match.end():], re.MULTILINE)
    return {"name": match.group(1), "id": int(mode_id.group(1)) if mode_id else None}


def parse_jetson_clocks(text: str) -> list[dict[str, Any]]:
    """The per-clock lines of `jetson_clocks --show`: name, min/max/current Hz (or kHz for CPUs), override."""
    clocks = []
    for line in text.splitlines():
        match = re.search(r"MinFreq=(\d+)\s+MaxFreq=(\d+)\s+CurrentFreq=(\d+)", line)
        if match:
            name = line.split()[0].rstrip(":")
            low, high, cur = (int(g) for g in match.groups())
            clocks.append({"name": name, "min": low, "max": high, "cur": cur,
                           "override": "FreqOverride=1" in line})
    return clocks


def sysfs_clocks(root: Path = Path("/")) -> list[dict[str, Any]]:
    """CPU (cpufreq) and GPU (devfreq) min/max/current frequencies from sysfs, readable without root."""
    def read(path: Path) -> int | None:
        try:
            return int(path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    clocks = []
    for cpu in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq")):
        values = [read(cpu / f"scaling_{k}_freq") for k in ("min", "max", "cur")]
        if None not in values:
            clocks.append({"name": cpu.parent.name, "min": values[0], "max": values[1], "cur": values[2],
                           "override": False})
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if any(tag in dev.name.lower() for tag in _GPU_DEVFREQ):
            values = [read(dev / f"{k}_freq") for k in ("min", "max", "cur")]
            if None not in values:
                clocks.append({"name": f"GPU ({dev.name})", "min": values[0], "max": values[1], "cur": values[2],
                               "override": False})
    return clocks


def clock_state(run: Run = run_command, root: Path = Path("/")) -> dict[str, Any]:
    """Whether CPU, GPU and EMC clocks are pinned at maximum (as `jetson_clocks` leaves them); None if unknown."""
    shown = run(["jetson_clocks", "--show"])
    clocks, source = (parse_jetson_clocks(shown), "jetson_clocks --show") if shown else ([], "")
    if not clocks:
        clocks, source = sysfs_clocks(root), "sysfs"
    relevant = [c for c in clocks if re.match(r"(cpu\d+|GPU|EMC)", c["name"])]
    locked = all(c["min"] == c["max"] or c["override"] for c in relevant) if relevant else None
    return {"locked": locked, "source": source or None, "clocks": relevant}


def parse_tegrastats(line: str) -> dict[str, Any]:
    """One tegrastats line: RAM MB, GPU (GR3D) load %, rail powers mW (current) and temperatures C."""
    sample: dict[str, Any] = {}
    if ram := re.search(r"RAM (\d+)/(\d+)MB", line):
        sample["ram_used_mb"], sample["ram_total_mb"] = int(ram.group(1)), int(ram.group(2))
    if gpu := re.search(r"GR3D_FREQ (\d+)%", line):
        sample["gpu_percent"] = int(gpu.group(1))
    # "VDD_GPU_SOC 2005mW/2005mW" (JetPack 5/6) or "POM_5V_GPU 0/0" (JetPack 4): current/average
    sample["power_mw"] = {name: int(now) for name, now in re.findall(r"(\w+) (\d+)(?:mW)?/\d+(?:mW)?(?=\s|$)", line)}
    sample["temp_c"] = {name: float(t) for name, t in re.findall(r"(\w+)@(-?[\d.]+)C", line)
                        if float(t) > -200}  # -256C marks a sensor that is off
    return sample


class Tegrastats:
    """Runs `tegrastats --interval MS` in the background; `.samples` holds the parsed lines once stopped."""

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats") -> None:
        self.interval_ms = interval_ms
        self.argv = [executable, "--interval", str(interval_ms)]
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.reader: threading.Thread | None = None

    def __enter__(self) -> Tegrastats:
        if shutil.which(self.argv[0]) is not None:
            self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
            self.reader.start()
        return self

    def _read(self, stdout: Any) -> None:
        for line in stdout:
            if line.strip():
                self.lines.append(line.strip())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.process is not None:
            deadline = time.monotonic() + 2 * self.interval_ms / 1000 + 1.0
            while not self.lines and self.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)  # a run shorter than the interval still gets one sample
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.reader is not None:
            self.reader.join(timeout=5)

    @property
    def samples(self) -> list[dict[str, Any]]:
        return [parse_tegrastats(line) for line in self.lines]

    def summary(self) -> dict[str, Any] | None:
        """Mean GPU load and rail powers, peak RAM, over the samples taken (None if tegrastats did not run)."""
        samples = self.samples
        if not samples:
            return None
        gpu = [s["gpu_percent"] for s in samples if "gpu_percent" in s]
        rails = sorted({r for s in samples for r in s["power_mw"]})
        return {
            "samples": len(samples),
            "gpu_percent_mean": sum(gpu) / len(gpu) if gpu else None,
            "ram_used_mb_max": max((s.get("ram_used_mb", 0) for s in samples), default=None),
            "power_mw_mean": {r: sum(s["power_mw"].get(r, 0) for s in samples) / len(samples) for r in rails},
            "first_line": self.lines[0],
        }


def platform_state(run: Run = run_command, root: Path = Path("/")) -> dict[str, Any]:
    """Jetson model, power mode and clock lock, with the warnings a latency report should carry."""
    model = jetson_model(root)
    if model is None:
        return {"jetson": None, "warnings": []}
    query = run(["nvpmodel", "-q"])
    power_mode, clocks = parse_nvpmodel(query) if query else None, clock_state(run, root)
    warnings = []
    if clocks["locked"] is False:
        warnings.append("clocks are not locked: latency will vary with DVFS; run `sudo jetson_clocks` first")
    elif clocks["locked"] is None:
        warnings.append("could not tell whether clocks are locked (check `sudo jetson_clocks --show`)")
    if power_mode is None:
        warnings.append("power mode unknown (`nvpmodel -q` failed); record it with the numbers")
    return {"jetson": model, "power_mode": power_mode, "clocks": clocks, "warnings": warnings}
