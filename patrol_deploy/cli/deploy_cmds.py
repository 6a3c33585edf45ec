"""`patrol-deploy export` and `patrol-deploy quantize`: the edge to ONNX, then INT8 / FP16 with ModelOpt."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from patrol_deploy.cli.options import (
    data_location,
    data_location_options,
    emit,
    force_option,
    json_option,
    out_option,
)
from patrol_deploy.config import ExportConfig, QuantizeConfig
from patrol_deploy.errors import ConfigError

if TYPE_CHECKING:
    from patrol_deploy.runfolder import RunFolder

_QUANTIZE_DEFAULTS = QuantizeConfig()


def _export_config(opset: int | None, dynamic_batch: bool, simplify: bool) -> ExportConfig:
    """ExportConfig from the flags; an out-of-range value is a ConfigError, like in the YAML config."""
    values: dict[str, Any] = {"dynamic_batch": dynamic_batch, "simplify": simplify}
    if opset is not None:
        values["opset"] = opset
    try:
        return ExportConfig.model_validate(values)
    except ValidationError as exc:
        problem = "; ".join(f"--{'-'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{problem}.", "use --opset 17 (TensorRT 8.x) or 19 (ModelOpt PTQ, TensorRT 10/11)") from exc


def _export_options(func: Any) -> Any:
    """--opset, --dynamic-batch and --no-simplify, shared by export and quantize."""
    func = click.option("--no-simplify", is_flag=True, help="Skip onnxsim (it falls back by itself on failure).")(func)
    func = click.option("--dynamic-batch", is_flag=True, help="Export with a dynamic batch dimension.")(func)
    return click.option("--opset", type=int, default=None,
                        help="ONNX opset (default 19; 17 for TensorRT 8.x).")(func)


def _claim(out: Path, source: Path, force: bool) -> RunFolder:
    """The run folder OUT, checked against the identity (seed, data, model) of what `source` was made from.

    `source` is a model folder (its model.json) or an ONNX file with its sidecar; an ONNX file without one is
    not checked here, since quantizing it fails anyway before anything is written. The identity is the recorded
    one (`--data-root` / `--set` change where the data is read, not what the model was made from); a checkpoint
    the model was fine-tuned from that is not on this machine is taken as recorded.
    """
    from patrol_deploy.deployment.export import read_sidecar, sidecar_path
    from patrol_deploy.modelio import read_meta
    from patrol_deploy.runfolder import RunFolder, check_run_folder

    run = RunFolder(out)
    if source.is_dir():
        meta = read_meta(source)
        check_run_folder(run, _identity(run, meta.extra.get("seed"), meta.extra.get("data"), meta.model), force)
    elif sidecar_path(source).is_file():
        info = read_sidecar(source)
        origin = info.get("source")
        origin = origin if isinstance(origin, dict) else {}
        check_run_folder(run, _identity(run, origin.get("seed"), origin.get("data"), info.get("model")), force)
    return run


def _identity(run: RunFolder, seed: Any, data: Any, model: Any) -> dict[str, Any]:
    """`model_identity`, with the recorded checkpoint hash where the checkpoint file is not here to hash."""
    import contextlib

    from patrol_deploy.errors import PatrolError
    from patrol_deploy.runfolder import model_identity

    identity = model_identity(seed, data, model)
    if identity["checkpoint_sha256"] is None and isinstance(model, dict) and model.get("checkpoint"):
        with contextlib.suppress(PatrolError):  # an unreadable manifest is check_run_folder's to report
            recorded = run.manifest().get("run", {}).get("identity", {})
            if isinstance(recorded, dict) and recorded.get("model") == model:
                identity["checkpoint_sha256"] = recorded.get("checkpoint_sha256")
    return identity


def _io(spec: dict[str, Any]) -> str:
    return f"{spec['name']} {spec['shape']}"


def _export_text(result: dict[str, Any]) -> str:
    lines = []
    for part in ("edge", "cloud"):
        info = result[f"{part}_info"]
        note = "" if info["simplified"] else " (not simplified)"
        lines.append(f"{part}: {_io(info['inputs'][0])} -> {_io(info['outputs'][0])}, opset {info['opset']}{note}, "
                     f"max abs error vs torch {info['check']['max_abs_error']:.2g} -> {result[part]}")
    return "\n".join(lines)


def _quantize_text(result: dict[str, Any]) -> str:
    info = result["info"]
    q = info["quantization"]
    graph = q["graph"]
    what = (f"{graph['quantize_linear']} Q/DQ pairs, {graph['ops_quantized']}/{graph['ops_total']} compute "
            f"ops in INT8" if q["mode"] == "int8" else f"{graph['float16_initializers']} FP16 weights")
    lines = [f"edge.{q['mode']} ({q.get('method', 'ptq')}, {q['route']} route, opset {info['opset']}): {what}, max "
             f"rel error vs float {q['vs_float']['max_rel_error']:.2g} on {q['vs_float']['images']} calibration "
             f"images -> {result['path']}"]
    for a in result.get("attempts", []):
        lines.append(f"  {a['method']}: utility {a.get('utility')}, worst SSIM {a.get('worst_ssim')}, gate "
                     + ("passed" if a["passed"] else "FAILED: " + "; ".join(a["reasons"])))
    return "\n".join(lines)


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=Path))
@out_option(help_text="Run folder; edge.onnx, cloud.onnx and their sidecar JSON go to OUT/export/.")
@_export_options
@data_location_options
@force_option
@json_option
def export(model_dir: Path, out: Path, opset: int | None, dynamic_batch: bool, no_simplify: bool,
           overrides: tuple[str, ...], data_root: Path | None, force: bool, as_json: bool) -> None:
    """Export MODEL_DIR's edge and cloud partitions to ONNX, checked against torch in ONNX Runtime."""
    cfg = _export_config(opset, dynamic_batch, not no_simplify)
    from patrol_deploy.deployment.export import export_model_dir

    location = data_location(overrides, data_root)
    result = export_model_dir(model_dir, _claim(out, model_dir, force), cfg, location=location)
    emit(result.as_dict(), as_json, _export_text)


@click.command()
@click.argument("source", metavar="ONNX_OR_MODEL_DIR", type=click.Path(path_type=Path))
@click.option("--mode", type=click.Choice(["int8", "fp16"]), default=_QUANTIZE_DEFAULTS.mode, show_default=True,
              help="INT8 Q/DQ or FP16 (ModelOpt AutoCast).")
@click.option("--route", type=click.Choice(["onnx", "torch"]), default=_QUANTIZE_DEFAULTS.route, show_default=True,
              help="onnx: ModelOpt ONNX PTQ, opset >= 19 (TensorRT 10/11); torch: mtq, opset 17 (TensorRT 8.x).")
@click.option("--calibration-images", type=click.IntRange(min=1), show_default=True,
              default=_QUANTIZE_DEFAULTS.calibration_images, help="Images from the calibration split.")
@click.option("--calibration-method", default=None,
              help="INT8 calibration: entropy or max (onnx route, default entropy); max (torch route).")
@click.option("--method", type=click.Choice(["ptq", "qat", "auto"]), default="ptq", show_default=True,
              help="INT8: post-training quantization; quantization-aware fine-tuning (needs the model folder and its "
              "training data); or auto: PTQ, the privacy gate against the model folder, QAT when it fails.")
@click.option("--qat-epochs", type=click.IntRange(min=1), default=None,
              help="Epochs of quantization-aware fine-tuning [default: quantize.qat.epochs, 2].")
@out_option(help_text="Run folder; the quantized edge goes to OUT/quantize/ (and the export to OUT/export/).")
@_export_options
@data_location_options
@force_option
@json_option
def quantize(source: Path, mode: str, route: str, calibration_images: int, calibration_method: str | None,
             method: str, qat_epochs: int | None, out: Path, opset: int | None, dynamic_batch: bool,
             no_simplify: bool, overrides: tuple[str, ...], data_root: Path | None, force: bool,
             as_json: bool) -> None:
    """Quantize an FP32 edge.onnx, or a model folder (exported first, with the export flags), with ModelOpt."""
    if not source.is_dir() and method == "ptq" and (opset is not None or dynamic_batch or no_simplify):
        raise ConfigError(f"--opset, --dynamic-batch and --no-simplify apply when quantizing a model folder (or to "
                          f"QAT's export); '{source}' is an ONNX file, already exported.",
                          "drop those flags, or re-export with `patrol-deploy export` using them")
    if opset is None and route == "torch":  # the torch route's edges are for TensorRT 8.x: QAT's too
        opset = 17
    cfg = _export_config(opset, dynamic_batch, not no_simplify)
    location = data_location(overrides, data_root)
    run = _claim(out, source, force)
    if method == "ptq":
        from patrol_deploy.deployment.quantize import quantize_edge

        result = quantize_edge(source, run, mode, route, calibration_images, cfg, location=location,
                               calibration_method=calibration_method)
        emit(result.as_dict(), as_json, _quantize_text)
        return
    from patrol_deploy.deployment.quantize import model_dir_for
    from patrol_deploy.pipeline.deploy import quantize_gated
    from patrol_deploy.pipeline.verify import gate_config

    model_dir = model_dir_for(source)
    full = gate_config(None, model_dir, location)  # the data, seed and model the folder was trained with
    qat = {"epochs": qat_epochs} if qat_epochs is not None else {}
    full = full.model_copy(update={"export": cfg, "quantize": full.quantize.model_copy(update={
        "mode": mode, "route": route, "method": method, "calibration_images": calibration_images,
        "calibration_method": calibration_method, "qat": full.quantize.qat.model_copy(update=qat)})})
    result, attempts, failed = quantize_gated(source, run, full, model_dir, location)
    emit({**result.as_dict(), "attempts": attempts}, as_json, _quantize_text)
    if failed is not None:
        raise failed
