"""Jetson detection, power mode, clock lock and tegrastats, from recorded command outputs and fake sysfs trees."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from patrol_deploy.engine import jetson
from patrol_deploy.engine.profile import profile_model

ORIN_UNLOCKED = """SOC family:tegra234  Machine:NVIDIA Jetson AGX Orin Developer Kit
Online CPUs: 0-11
cpu0: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=1728000 IdleStates: WFI=1 c7=1
cpu1: Online=1 Governor=schedutil MinFreq=115200 MaxFreq=2201600 CurrentFreq=729600 IdleStates: WFI=1 c7=1
GPU MinFreq=306000000 MaxFreq=1300500000 CurrentFreq=306000000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=2133000000 FreqOverride=0
DLA0_CORE: Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
FAN Dynamic Speed control=active hwmon4_pwm=0
NV Power Mode: MAXN
"""
ORIN_LOCKED = """cpu0: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0
cpu1: Online=1 Governor=schedutil MinFreq=2201600 MaxFreq=2201600 CurrentFreq=2201600 IdleStates: WFI=0
GPU MinFreq=1300500000 MaxFreq=1300500000 CurrentFreq=1300500000
EMC MinFreq=204000000 MaxFreq=3199000000 CurrentFreq=3199000000 FreqOverride=1
DLA0_CORE: Online=1 MinFreq=0 MaxFreq=1600000000 CurrentFreq=1600000000
"""
TEGRASTATS_ORIN = (
    "RAM 2448/30536MB (lfb 6860x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@729,0%@729] EMC_FREQ 0%@2133 "
    "GR3D_FREQ 37%@[305,305] VIC_FREQ 729 APE 174 CV0@-256C CPU@44.656C Tboard@33C GPU@41.5C "
    "VDD_GPU_SOC 2005mW/2005mW VDD_CPU_CV 401mW/401mW VIN_SYS_5V0 3121mW/3121mW")
TEGRASTATS_NANO = (
    "RAM 1497/3964MB (lfb 125x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) CPU [5%@1479,1%@1479] "
    "EMC_FREQ 3%@1600 GR3D_FREQ 12%@921 APE 25 PLL@30C CPU@32.5C GPU@31.5C POM_5V_IN 2434/2434 POM_5V_GPU 0/0")


def answers(outputs: dict[str, str | None]):
    """A fake command runner: argv[0] -> recorded stdout (None: tool missing or not permitted)."""
    return lambda argv: outputs.get(argv[0])


def test_nvpmodel_output_is_parsed():
    assert jetson.parse_nvpmodel("NV Fan Mode:quiet\nNV Power Mode: MAXN\n0\n") == {"name": "MAXN", "id": 0}
    assert jetson.parse_nvpmodel("NV Power Mode: MODE_15W_6CORE\n2\n") == {"name": "MODE_15W_6CORE", "id": 2}
    assert jetson.parse_nvpmodel("nvpmodel: command failed") is None


def test_jetson_clocks_show_tells_locked_from_unlocked():
    unlocked = jetson.clock_state(answers({"jetson_clocks": ORIN_UNLOCKED}))
    assert unlocked["locked"] is False and unlocked["source"] == "jetson_clocks --show"
    assert [c["name"] for c in unlocked["clocks"]] == ["cpu0", "cpu1", "GPU", "EMC"]  # DLA and fan lines ignored
    locked = jetson.clock_state(answers({"jetson_clocks": ORIN_LOCKED}))
    assert locked["locked"] is True  # EMC keeps its min but is overridden to max


def fake_sysfs(root: Path, cpu_min: int, gpu_min: int) -> None:
    for cpu in ("cpu0", "cpu1"):
        d = root / "sys/devices/system/cpu" / cpu / "cpufreq"
        d.mkdir(parents=True)
        for key, value in (("min", cpu_min), ("max", 2201600), ("cur", 2201600)):
            (d / f"scaling_{key}_freq").write_text(f"{value}\n")
    gpu = root / "sys/class/devfreq/17000000.ga10b"
    gpu.mkdir(parents=True)
    for key, value in (("min", gpu_min), ("max", 1300500000), ("cur", 1300500000)):
        (gpu / f"{key}_freq").write_text(f"{value}\n")
    (root / "sys/class/devfreq/3d00000.host1x").mkdir()  # not a GPU: ignored


def test_sysfs_fallback_when_jetson_clocks_needs_root(tmp_path):
    fake_sysfs(tmp_path, cpu_min=115200, gpu_min=306000000)
    state = jetson.clock_state(answers({}), tmp_path)
    assert state["source"] == "sysfs" and state["locked"] is False
    assert [c["name"] for c in state["clocks"]] == ["cpu0", "cpu1", "GPU (17000000.ga10b)"]
    locked_root = tmp_path / "locked"
    fake_sysfs(locked_root, cpu_min=2201600, gpu_min=1300500000)
    assert jetson.clock_state(answers({}), locked_root)["locked"] is True
    assert jetson.clock_state(answers({}), tmp_path / "nothing")["locked"] is None


def test_jetson_detection_and_platform_warnings(tmp_path):
    assert jetson.jetson_model(tmp_path) is None
    assert jetson.platform_state(answers({}), tmp_path) == {"jetson": None, "warnings": []}
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    state = jetson.platform_state(answers({"nvpmodel": "NV Power Mode: MAXN\n0\n", "jetson_clocks": ORIN_UNLOCKED}),
                                  tmp_path)
    assert state["jetson"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert state["power_mode"] == {"name": "MAXN", "id": 0}
    assert state["warnings"] == ["clocks are not locked: latency will vary with DVFS; run `sudo jetson_clocks` first"]
    quiet = jetson.platform_state(answers({"jetson_clocks": ORIN_LOCKED}), tmp_path)
    assert quiet["warnings"] == ["power mode unknown (`nvpmodel -q` failed); record it with the numbers"]
    release_root = tmp_path / "l4t"
    (release_root / "etc").mkdir(parents=True)
    (release_root / "etc/nv_tegra_release").write_text("# R35 (release), REVISION: 4.1, GCID: 33958178\n")
    assert jetson.jetson_model(release_root) == "R35 (release), REVISION: 4.1, GCID: 33958178"


def test_tegrastats_lines_of_two_generations():
    orin = jetson.parse_tegrastats(TEGRASTATS_ORIN)
    assert (orin["ram_used_mb"], orin["ram_total_mb"], orin["gpu_percent"]) == (2448, 30536, 37)
    assert orin["power_mw"] == {"VDD_GPU_SOC": 2005, "VDD_CPU_CV": 401, "VIN_SYS_5V0": 3121}
    assert orin["temp_c"]["GPU"] == 41.5 and "CV0" not in orin["temp_c"]  # -256C: sensor off
    nano = jetson.parse_tegrastats(TEGRASTATS_NANO)
    assert nano["gpu_percent"] == 12 and nano["power_mw"] == {"POM_5V_IN": 2434, "POM_5V_GPU": 0}


@pytest.fixture
def fake_jetson_tools(tmp_path, monkeypatch):
    """A `tegrastats` executable on PATH that prints the recorded Orin line every 20 ms until stopped."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "tegrastats"
    script.write_text(f"#!/bin/sh\nwhile true; do echo '{TEGRASTATS_ORIN}'; sleep 0.02; done\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def test_tegrastats_runs_in_the_background_and_stops(fake_jetson_tools):
    import time

    with jetson.Tegrastats(interval_ms=20) as monitor:
        time.sleep(0.3)
    assert monitor.process is not None and monitor.process.returncode is not None  # stopped
    summary = monitor.summary()
    assert summary is not None
    assert summary["samples"] >= 2 and summary["gpu_percent_mean"] == 37
    assert summary["power_mw_mean"]["VDD_GPU_SOC"] == 2005 and summary["ram_used_mb_max"] == 2448
    assert jetson.Tegrastats(executable="no-such-tegrastats").__enter__().summary() is None


def test_profile_on_a_jetson_records_state_and_tegrastats(fake_jetson_tools, tiny_onnx):
    state = {"jetson": "NVIDIA Jetson Orin Nano", "power_mode": {"name": "15W", "id": 0},
             "clocks": {"locked": False, "source": "sysfs", "clocks": []},
             "warnings": ["clocks are not locked: latency will vary with DVFS; run `sudo jetson_clocks` first"]}
    result = profile_model(tiny_onnx, "ort", batch=1, runs=3, warmup=1, state=lambda: dict(state))
    platform = result["platform"]
    assert platform["jetson"] == "NVIDIA Jetson Orin Nano" and platform["warnings"] == state["warnings"]
    assert platform["tegrastats"]["samples"] >= 1 and platform["tegrastats"]["first_line"] == TEGRASTATS_ORIN
