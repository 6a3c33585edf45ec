#!/usr/bin/env python3
"""Wall-clock overheads that the tests check as facts, not as times (a time bound flips with the machine).

1. Re-running a finished toy pipeline (digits 16x16, the config of tests/test_pipeline.py): every stage is reused
   (target < 60 s; the test checks that no stage was redone).
2. Refusing a dataset folder whose images are all broken, one of them a PNG header that declares 100,000 x 100,000
   pixels (target < 10 s; tests/hostile/test_data_hostile.py checks that its pixels are never decoded).

    python scripts/bench_overheads.py [--only rerun|broken] [--threads 1] [--json]

Prints the measured seconds, the target and the CPU settings it ran under (threads, ATEN_CPU_CAPABILITY).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

TOY: dict[str, Any] = {  # a copy of tests/test_pipeline.py's TOY (keep them alike)
    "data": {"source": "digits", "image_size": 16, "limit": 700},
    "model": {"width": 16, "stages": 3},
    "train": {"epochs": 3},
    "budget": {"edge_macs": 3.7e6},
    "patrol": {"mask_epochs": 1, "finetune_epochs": 1, "adversarial": {"surrogate_width": 32},
               "prune": {"round_to": 8}},
    "attacks": {"names": ["whitebox", "blackbox"], "eval_images": 8, "whitebox": {"iterations": 10},
                "blackbox": {"epochs": 2, "widths": [32], "large_budget": False}},
    "gate": {"max_patrol_utility_drop": 100.0},
    "defenses": {"names": ["noise"], "epochs": 1, "grids": {"noise": [1.0]}},
    "quantize": {"calibration_images": 16, "method": "ptq"},  # auto's QAT fallback: tests/deploy, test_qat_through
}
TARGETS_S = {"rerun": 60.0, "broken": 10.0}


def time_rerun(folder: Path) -> dict[str, Any]:
    """Seconds of a first toy run (into `folder`) and of the re-run that reuses it."""
    from patrol_deploy.config import Config
    from patrol_deploy.pipeline.run import run_all

    cfg = Config.model_validate(TOY)
    started = time.perf_counter()
    run_all(cfg, folder, deploy=False)
    first = time.perf_counter() - started
    started = time.perf_counter()
    run_all(cfg, folder, deploy=False)
    return {"first_run_s": first, "seconds": time.perf_counter() - started}


def _huge_png_header(width: int, height: int) -> bytes:
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))


def time_broken(folder: Path) -> dict[str, Any]:
    """Seconds to refuse an image folder of two classes of broken files (a huge PNG header among them)."""
    from patrol_deploy.config import DataConfig
    from patrol_deploy.data.sources import imagefolder
    from patrol_deploy.errors import DataError

    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        (folder / cls / "huge.png").write_bytes(_huge_png_header(100_000, 100_000))
        (folder / cls / "empty.png").write_bytes(b"")
        (folder / cls / "random.jpg").write_bytes(os.urandom(3000))
    started = time.perf_counter()
    try:
        imagefolder(DataConfig(source="imagefolder", root=folder, image_size=16))
        refused = False
    except DataError:
        refused = True
    return {"seconds": time.perf_counter() - started, "refused": refused}


def run(only: str | None = None) -> dict[str, Any]:
    """The measurements (all, or `only` one), each with its target."""
    import torch

    results: dict[str, Any] = {"threads": torch.get_num_threads(),
                               "aten_cpu_capability": torch.backends.cpu.get_cpu_capability()}
    with tempfile.TemporaryDirectory(prefix="bench-overheads-") as tmp:
        for name, measure in (("rerun", time_rerun), ("broken", time_broken)):
            if only in (None, name):
                result = measure(Path(tmp) / name)
                results[name] = {**result, "target_s": TARGETS_S[name],
                                 "target_met": result["seconds"] < TARGETS_S[name]}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", choices=sorted(TARGETS_S), help="run one measurement")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)
    import torch

    from patrol_deploy.progress import set_quiet

    torch.set_num_threads(args.threads)
    set_quiet(True)
    result = run(args.only)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['threads']} torch threads, ATEN_CPU_CAPABILITY {result['aten_cpu_capability']}")
    for name in TARGETS_S:
        if name in result:
            r = result[name]
            print(f"{name:7s} {r['seconds']:7.2f} s (target < {r['target_s']:.0f} s: "
                  f"{'met' if r['target_met'] else 'NOT met'})"
                  + (f"; first run {r['first_run_s']:.1f} s" if "first_run_s" in r else "")
                  + ("" if r.get("refused", True) else "; NOT refused"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
