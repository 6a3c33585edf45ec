"""On-device latency of the edge model: ONNX Runtime on CPU, a TensorRT engine, or the torch edge.

Every backend reports end-to-end latency (mean, p50, p90, p99, throughput)
and per-layer times: ONNX Runtime's own profiler (per node), TensorRT's
IProfiler (per layer, separate run) or forward hooks (per torch block).
TensorRT also reports host-to-device, compute and device-to-host apart.
On a Jetson the power mode, clock lock and tegrastats samples taken during
the run are attached, with a warning when clocks are not locked.
Backends live in a registry, so plugins can add more: a backend is called as
`fn(path, batch, runs, warmup)`, plus `threads=` / `input_shapes=` keywords only
when the user asked for them (so a plugin without them still works).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patrol_deploy.backends.inputs import random_inputs, with_input_shapes
from patrol_deploy.backends.onnxinfo import read_onnx
from patrol_deploy.backends.onnxrt import PROVIDER, cpu_session
from patrol_deploy.engine.jetson import Tegrastats, platform_state
from patrol_deploy.errors import ConfigError
from patrol_deploy.lazy import require
from patrol_deploy.progress import status
from patrol_deploy.registry import Registry

ProfileFn = Callable[..., dict[str, Any]]  # (path, batch, runs, warmup, [threads=, input_shapes=])
PROFILE_BACKENDS: Registry[ProfileFn] = Registry("profile backend", "patrol_deploy.backends")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def latency_summary(times_ms: Sequence[float], batch: int) -> dict[str, Any]:
    """Mean, percentiles and throughput (images per second) of per-run latencies in milliseconds."""
    t = np.asarray(times_ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(t, [50, 90, 99])
    return {"runs": int(t.size), "batch": batch, "mean_ms": float(t.mean()), "p50_ms": float(p50),
            "p90_ms": float(p90), "p99_ms": float(p99), "min_ms": float(t.min()), "max_ms": float(t.max()),
            "throughput_per_s": float(batch * 1000.0 / t.mean())}


def _with_percent(means: dict[str, float], extra: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    total = sum(means.values()) or 1.0
    return [{"name": name, **(extra or {}).get(name, {}), "mean_ms": ms, "percent": 100.0 * ms / total}
            for name, ms in means.items()]


def ort_node_times(events: list[dict[str, Any]], warmup: int) -> list[dict[str, Any]]:
    """Mean per-node milliseconds from an ONNX Runtime profile (Chrome trace), skipping the first `warmup` runs."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[warmup:]
    windows = [(e["ts"], e["ts"] + e["dur"]) for e in runs]
    totals: dict[str, float] = defaultdict(float)
    ops: dict[str, dict[str, Any]] = {}
    for event in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        if not any(start <= event["ts"] <= end for start, end in windows):
            continue
        name = event["name"].removesuffix("_kernel_time")
        totals[name] += event["dur"] / 1000.0  # microseconds -> ms
        ops[name] = {"op": event.get("args", {}).get("op_name", "")}
    return _with_percent({name: total / max(len(runs), 1) for name, total in totals.items()}, ops)


@PROFILE_BACKENDS.register("ort")
def profile_ort(path: Path, batch: int, runs: int, warmup: int, threads: int | None = None,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """ONNX Runtime on the CPU: wall-clock latency, then a separate profiled session for per-node times;
    `threads` sets ONNX Runtime's intra-op threads (default: its own choice, one per physical core)."""
    ort = require("onnxruntime", "profiling with ONNX Runtime")
    feeds = random_inputs(with_input_shapes(read_onnx(path).inputs, input_shapes or {}), batch)
    session = cpu_session(path, threads)
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - start) * 1000.0)
    with tempfile.TemporaryDirectory() as tmp:
        profiled = cpu_session(path, threads, profile_prefix=Path(tmp) / "ort")
        for _ in range(warmup + runs):
            profiled.run(None, feeds)
        events = json.loads(Path(profiled.end_profiling()).read_text())
    return {"backend": "ort", "provider": PROVIDER, "onnxruntime": ort.__version__, "threads": threads,
            "latency": latency_summary(times, batch), "layers": ort_node_times(events, warmup)}


@PROFILE_BACKENDS.register("trt")
def profile_trt(path: Path, batch: int, runs: int, warmup: int,
                input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """A TensorRT engine: end-to-end latency, H2D / compute / D2H from CUDA events, IProfiler per-layer times."""
    from patrol_deploy.backends.trt_runner import EngineRunner

    with EngineRunner(path) as runner:
        feeds = random_inputs(with_input_shapes(runner.input_specs(), input_shapes or {}), batch)
        for _ in range(warmup):
            runner.run(feeds)
        total, h2d, compute, d2h = [], [], [], []
        for _ in range(runs):
            start = time.perf_counter()
            _, stages = runner.run(feeds)
            total.append((time.perf_counter() - start) * 1000.0)
            h2d.append(stages.h2d_ms)
            compute.append(stages.compute_ms)
            d2h.append(stages.d2h_ms)
        layers = runner.layer_times(feeds, runs)
        meta = runner.meta or {}
        return {"backend": "trt", "tensorrt": str(runner.version), "device": runner.device.as_dict(),
                "cuda_binding": runner.cuda.name, "precision": meta.get("precision"), "dla_core": meta.get("dla_core"),
                "latency": latency_summary(total, batch),
                "transfers": {"h2d": latency_summary(h2d, batch), "compute": latency_summary(compute, batch),
                              "d2h": latency_summary(d2h, batch)},
                "layers": layers}


@PROFILE_BACKENDS.register("torch")
def profile_torch(path: Path, batch: int, runs: int, warmup: int, threads: int | None = None) -> dict[str, Any]:
    """The float torch edge of a model folder (model.pt + model.json), on CUDA if present, with per-block times;
    `threads` sets torch's CPU threads."""
    torch = require("torch", "profiling the torch model")
    if threads:
        torch.set_num_threads(threads)
    from patrol_deploy.modelio import load_model_dir
    from patrol_deploy.split import cut

    model, meta = load_model_dir(path)
    edge, _ = cut(model, meta.split)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    edge = edge.to(device).eval()
    x = torch.randn(batch, *meta.input_shape, device=device)

    def sync() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    block_times: dict[str, list[float]] = defaultdict(list)
    starts: dict[str, float] = {}
    hooks = []
    for name, block in edge.named_children():
        hooks.append(block.register_forward_pre_hook(lambda _m, _i, n=name: starts.__setitem__(n, sync())))
        hooks.append(block.register_forward_hook(
            lambda _m, _i, _o, n=name: block_times[n].append((sync() - starts[n]) * 1000.0)))
    with torch.inference_mode():
        for _ in range(warmup):
            edge(x)
        block_times.clear()
        times = []
        for _ in range(runs):
            start = sync()
            edge(x)
            times.append((sync() - start) * 1000.0)
    for hook in hooks:
        hook.remove()
    return {"backend": "torch", "torch": torch.__version__, "device": str(device), "split": meta.split,
            "latency": latency_summary(times, batch),
            "layers": _with_percent({n: float(np.mean(t)) for n, t in block_times.items()})}


def guess_backend(path: Path) -> str:
    """'ort' for .onnx, 'trt' for .engine/.plan/.trt, 'torch' for a model folder."""
    if path.is_dir():
        return "torch"
    if path.suffix == ".onnx":
        return "ort"
    if path.suffix in ENGINE_SUFFIXES:
        return "trt"
    raise ConfigError(f"cannot tell how to profile '{path}'.",
                      "pass --backend ort (ONNX), trt (engine) or torch (model folder)")


def profile_model(path: str | Path, backend: str | None, batch: int | None, runs: int, warmup: int,
                  state: Callable[[], dict[str, Any]] = platform_state, threads: int | None = None,
                  input_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, Any]:
    """Profile `path` with `backend` (guessed from the path if None), recording the Jetson state around it.

    `batch` None takes the batch of the first `input_shapes` entry, else 1; `threads` and `input_shapes` go to
    the backends that take them (a backend that does not is a ConfigError).
    """
    path = Path(path)
    if batch is None:
        batch = next((shape[0] for shape in (input_shapes or {}).values()), 1)
    if runs < 1 or warmup < 0 or batch < 1 or (threads is not None and threads < 1):
        raise ConfigError(f"--runs {runs}, --warmup {warmup}, --batch {batch}, --threads {threads} are not valid.",
                          "use --runs >= 1, --warmup >= 0, --batch >= 1, --threads >= 1")
    name = backend or guess_backend(path)
    profile_fn = PROFILE_BACKENDS.get(name)
    extra: dict[str, Any] = {k: v for k, v in (("threads", threads), ("input_shapes", input_shapes)) if v}
    refused = sorted(k for k in extra if k not in inspect.signature(profile_fn).parameters)
    if refused:
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in refused)
        raise ConfigError(f"the {name} backend does not take {flags}.",
                          f"drop {flags}, or profile with a backend that takes it (--threads: ort, torch; "
                          "--input-shape: ort, trt)")
    platform = state()
    for warning in platform["warnings"]:
        status(f"warning: {warning}")
    status(f"profiling {path} with {name}: batch {batch}, {warmup} warm-up + {runs} runs")
    monitor = Tegrastats() if platform["jetson"] else None
    with monitor or contextlib.nullcontext():
        result = profile_fn(path, batch, runs, warmup, **extra)
    if monitor is not None:
        platform["tegrastats"] = monitor.summary()
    return {"model": str(path), **result, "platform": platform}
