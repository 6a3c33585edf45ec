"""On-device commands: `build-engine`, `trtexec-cmd`, `compare`, `profile`.

These run on a Jetson that has TensorRT but neither torch nor ModelOpt, so
this module imports only click and the lazy engine modules; TensorRT, CUDA,
ONNX and ONNX Runtime are imported inside the commands that need them.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from patrol_deploy.backends.inputs import parse_input_shapes
from patrol_deploy.backends.trt_options import PRECISIONS, BatchProfile, BuildOptions
from patrol_deploy.cli.options import emit, json_option
from patrol_deploy.errors import GateFailed
from patrol_deploy.progress import status
from patrol_deploy.runfolder import write_json

F = TypeVar("F", bound=Callable[..., Any])
FILE = click.Path(dir_okay=False, path_type=Path)
EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


input_shape_option = click.option(
    "--input-shape", "input_shape", multiple=True, metavar="NAME:DIMS",
    help="Shape of a dynamic input, e.g. input:1x3x64x64 (repeatable, or comma-separated as trtexec's --shapes).")


def build_options(func: F) -> F:
    """The engine build options shared by build-engine and trtexec-cmd."""
    decorators = [
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="auto reads the model: Q/DQ -> INT8 with FP16 for float layers, float -> FP16 (TensorRT "
                          "8.x/10.x), the model's own types on 11.x. fp16/int8 set builder flags on 8.x/10.x; best = "
                          "FP16 plus INT8 where the model or calibration allows. TensorRT 11 takes the precision "
                          "from the model and only checks it."),
        click.option("--dla-core", type=int, default=None, help="Build for this DLA core (Orin), with GPU fallback."),
        click.option("--workspace", "workspace_mib", type=int, default=None, help="Builder workspace limit in MiB."),
        click.option("--batch", default=None, metavar="MIN,OPT,MAX",
                     help="Optimization profile for a dynamic batch axis (default 1,1,1)."),
        click.option("--calib", type=EXISTING, default=None,
                     help="Calibration .npz (key 'input') for implicit INT8 (TensorRT 8.x, DLA on 10.x)."),
        click.option("--calib-cache", type=FILE, default=None, help="INT8 calibration cache [default: ENGINE.calib]."),
        click.option("--timing-cache", type=FILE, default=None, help="Timing cache to reuse and update."),
        click.option("--profiling-verbosity", type=click.Choice(["detailed", "layer-names"]), default="detailed",
                     show_default=True, help="Layer detail in the engine inspector JSON and per-layer profiles."),
        click.option("--skip-opset-check", is_flag=True,
                     help="Parse even if the ONNX opset is newer than the parser documents."),
        input_shape_option,
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def _build_options(precision: str, dla_core: int | None, workspace_mib: int | None, batch: str | None,
                   calib: Path | None, calib_cache: Path | None, timing_cache: Path | None,
                   profiling_verbosity: str, skip_opset_check: bool, input_shape: tuple[str, ...]) -> BuildOptions:
    return BuildOptions(precision=precision, dla_core=dla_core, workspace_mib=workspace_mib,
                        batch=BatchProfile.parse(batch) if batch else None, calib=calib, calib_cache=calib_cache,
                        timing_cache=timing_cache, detailed=profiling_verbosity == "detailed",
                        skip_opset_check=skip_opset_check,
                        input_shapes=tuple(parse_input_shapes(input_shape).items()))


def report_option(func: F) -> F:
    return click.option("--report", type=FILE, default=None,
                        help="Also write the result as JSON to this file (atomically).")(func)


def _finish(result: dict[str, Any], report: Path | None, as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    if report is not None:
        write_json(report, result)
    emit(result, as_json, text)


@click.command("build-engine")
@click.argument("onnx", type=EXISTING)
@click.option("--out", "out", type=FILE, required=True, help="Engine file to write; metadata goes to OUT.json.")
@build_options
@json_option
def build_engine_cmd(onnx: Path, out: Path, as_json: bool, **build: Any) -> None:
    """Build a TensorRT engine from ONNX with the installed TensorRT (8.5/8.6, 10.x or 11.x), on this device."""
    from patrol_deploy.backends.trt_builder import build_engine, describe

    meta = build_engine(onnx, out, _build_options(**build))
    emit(meta, as_json, describe)


@click.command("trtexec-cmd")
@click.argument("onnx", type=EXISTING)
@click.option("--trt-version", default=None, metavar="VERSION",
              help="TensorRT version to target, e.g. 8.6, 10.3, 11 [default: the installed one, else 10.3].")
@click.option("--out", "out", type=FILE, default=None, help="Engine path in the command [default: ONNX.engine].")
@click.option("--trtexec", default=None, help="trtexec executable [default: /usr/src/tensorrt/bin/trtexec].")
@build_options
@json_option
def trtexec_cmd(onnx: Path, trt_version: str | None, out: Path | None, trtexec: str | None, as_json: bool,
                **build: Any) -> None:
    """Print the trtexec command equivalent to build-engine for a TensorRT version (flags differ by version)."""
    from patrol_deploy.backends.onnxinfo import read_onnx
    from patrol_deploy.backends.trt import TrtVersion, installed_version
    from patrol_deploy.engine.trtexec import TRTEXEC, trtexec_command

    version = TrtVersion.parse(trt_version) if trt_version else installed_version()
    if version is None:
        version = TrtVersion.parse("10.3")
        status("no TensorRT installed here: writing the command for TensorRT 10.3 (JetPack 6); "
               "pass --trt-version to choose")
    result = trtexec_command(read_onnx(onnx), out or onnx.with_suffix(".engine"), _build_options(**build),
                             version, trtexec or TRTEXEC)
    result["command"] = shlex.join(result["argv"])
    for note in result["notes"]:
        status(f"note: {note}")
    emit(result, as_json, lambda r: r["command"])


def _compare_text(result: dict[str, Any]) -> str:
    rows = [f"{result['engine']} [{result['runtime']}] vs {result['onnx']} ({result['precision']}, batch "
            f"{result['batch']}, "
            f"atol {result['atol']:g}, rtol {result['rtol']:g}, inputs: {result['inputs']})",
            f"{'output':<24} {'max abs':>12} {'max rel':>12} {'mean abs':>12} {'mismatch':>9}  result"]
    for o in result["outputs"]:
        if o["max_abs"] is None:
            rows.append(f"{o['name']:<24} shape {o['actual_shape']} != {o['shape']}  FAIL")
            continue
        rows.append(f"{o['name']:<24} {o['max_abs']:>12.4g} {o['max_rel']:>12.4g} {o['mean_abs']:>12.4g} "
                    f"{100 * o['mismatch_fraction']:>8.2f}%  {'ok' if o['passed'] else 'FAIL'}")
    return "\n".join(rows)


@click.command()
@click.argument("onnx", type=EXISTING)
@click.argument("engine", metavar="ENGINE_OR_ONNX", type=EXISTING)
@click.option("--batch", type=click.IntRange(min=1), default=None,
              help="Batch size of the compared inputs [default: from --input-shape, else 1].")
@click.option("--inputs", type=EXISTING, default=None,
              help="Inputs .npz (key per input name, or 'input'); default: seeded random normal data.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs.")
@click.option("--atol", type=float, default=None, help="Absolute tolerance [default: by the candidate's precision].")
@click.option("--rtol", type=float, default=None, help="Relative tolerance [default: by the candidate's precision].")
@input_shape_option
@report_option
@json_option
def compare(onnx: Path, engine: Path, batch: int | None, inputs: Path | None, seed: int, atol: float | None,
            rtol: float | None, input_shape: tuple[str, ...], report: Path | None, as_json: bool) -> None:
    """Run ONNX Runtime on ONNX and, on the same inputs, a TensorRT engine or a second ONNX model (in ONNX Runtime,
    no TensorRT needed); per-output max abs / relative error against tolerances."""
    from patrol_deploy.engine.compare import compare_engine, is_onnx

    result = compare_engine(onnx, engine, batch=batch, seed=seed, atol=atol, rtol=rtol, inputs=inputs,
                            input_shapes=parse_input_shapes(input_shape))
    _finish(result, report, as_json, _compare_text)
    if not result["passed"]:
        failed = [o["name"] for o in result["outputs"] if not o["passed"]]
        what = "ONNX model" if is_onnx(engine) else "engine"
        raise GateFailed(f"{what} outputs {failed} differ from ONNX beyond atol {result['atol']:g} / "
                         f"rtol {result['rtol']:g} (reference: {onnx}).",
                         "check the precision (try --precision fp16 or fp32) or the calibration data; "
                         "loosen --atol/--rtol only if the difference is expected")


def _profile_text(result: dict[str, Any]) -> str:
    lat = result["latency"]
    rows = [f"{result['model']} [{result['backend']}] batch {lat['batch']}, {lat['runs']} runs: "
            f"mean {lat['mean_ms']:.3f} ms, p50 {lat['p50_ms']:.3f}, p90 {lat['p90_ms']:.3f}, "
            f"p99 {lat['p99_ms']:.3f} ms, {lat['throughput_per_s']:.1f} images/s"]
    for stage, stats in result.get("transfers", {}).items():
        rows.append(f"  {stage:<8} mean {stats['mean_ms']:.3f} ms  p99 {stats['p99_ms']:.3f} ms")
    layers = sorted(result["layers"], key=lambda layer: -layer["mean_ms"])
    rows += [f"  {layer['mean_ms']:9.4f} ms {layer['percent']:5.1f}%  {layer['name']}" for layer in layers[:15]]
    if len(layers) > 15:
        rows.append(f"  ... {len(layers) - 15} more layers (see --json)")
    platform = result["platform"]
    if platform["jetson"]:
        mode = (platform.get("power_mode") or {}).get("name", "unknown")
        rows.append(f"{platform['jetson']}: power mode {mode}, clocks locked: {platform['clocks']['locked']}")
    rows += [f"warning: {w}" for w in platform["warnings"]]
    return "\n".join(rows)


@click.command()
@click.argument("model", type=click.Path(exists=True, path_type=Path))
@click.option("--backend", default=None, metavar="ort|trt|torch",
              help="ort (ONNX on CPU), trt (engine), torch (model folder) [default: from MODEL].")
@click.option("--batch", type=int, default=None, help="Batch size [default: from --input-shape, else 1].")
@click.option("--runs", type=int, default=100, show_default=True, help="Timed runs.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed runs first.")
@click.option("--threads", type=int, default=None,
              help="CPU threads: ONNX Runtime's intra-op threads (ort), torch's threads (torch) [default: theirs].")
@input_shape_option
@report_option
@json_option
def profile(model: Path, backend: str | None, batch: int | None, runs: int, warmup: int, threads: int | None,
            input_shape: tuple[str, ...], report: Path | None, as_json: bool) -> None:
    """Latency (mean/p50/p90/p99, throughput) and per-layer times of an ONNX file, engine or torch model folder."""
    from patrol_deploy.engine.profile import profile_model

    result = profile_model(model, backend, batch, runs, warmup, threads=threads,
                           input_shapes=parse_input_shapes(input_shape))
    _finish(result, report, as_json, _profile_text)
