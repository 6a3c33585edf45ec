"""`patrol-deploy run`, `demo` and `verify`: the whole comparison, then export, quantize and the privacy gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patrol_deploy.cli.options import (
    config_args,
    data_location,
    data_location_options,
    emit,
    force_option,
    gate_limit_options,
    gate_limits,
    json_option,
    out_option,
)
from patrol_deploy.config import DEFAULT_CONFIG, load_config


def summary_table(report: dict[str, Any]) -> str:
    metric = report["utility_metric"]
    def num(v: float | None, fmt: str) -> str:
        return format(v if v is not None else float("nan"), fmt)

    rows = [f"{'variant':<17} {'split':<10} {'edge MACs':>12} {metric:>9} {'worst SSIM':>11}  worst attack"]
    for name, v in report["variants"].items():
        p = v["privacy"]
        rows.append(f"{name:<17} {v['split']['name']:<10} {v['split']['edge_macs']:>12,} {num(v['utility'], '>9.2f')} "
                    f"{num(p.get('worst_ssim'), '>11.3f')}  {p.get('worst_attack')}"
                    f"{'  (reference, over budget)' if not v['split'].get('fits_budget', True) else ''}")
    verdict = report.get("patrol_verdict")
    if verdict:
        rows.append(f"PATROL verdict: {'PASSED' if verdict['passed'] else 'FAILED: ' + '; '.join(verdict['reasons'])}")
    q = report.get("quantized")
    if q:
        g = q["gate"]
        rows.append(f"{q['mode']} edge: {metric} {num(q.get('utility'), '.2f')}, worst SSIM "
                    f"{num(q['privacy'].get('worst_ssim'), '.3f')}; "
                    f"gate {'PASSED' if g['passed'] else 'FAILED: ' + '; '.join(g['reasons'])}")
    return "\n".join(rows)


@click.command()
@config_args
@out_option()
@click.option("--skip-deploy", is_flag=True, help="Stop after the report (no export, quantization or gate).")
@force_option
@json_option
def run(config: Path, overrides: tuple[str, ...], out: Path, skip_deploy: bool, force: bool, as_json: bool) -> None:
    """The full comparison: baseline, PATROL, defenses, attacks, report, export, INT8 and the privacy gate."""
    from patrol_deploy.errors import GateFailed
    from patrol_deploy.pipeline.compare import report_of
    from patrol_deploy.pipeline.run import run_all
    from patrol_deploy.runfolder import RunFolder

    cfg = load_config(config, overrides)
    try:
        report = run_all(cfg, out, not skip_deploy, force)
    except GateFailed:
        click.echo(summary_table(report_of(RunFolder(out))), err=True)  # the numbers behind the failed gate
        raise
    emit(report, as_json, summary_table)


@click.command()
@out_option(required=False, help_text="Run folder (default: runs/demo).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")
@force_option
@json_option
def demo(out: Path | None, overrides: tuple[str, ...], force: bool, as_json: bool) -> None:
    """`run` on the bundled default: real MNIST digits, a small ResNet, CPU only, no download.

    The demo shows the privacy gate's verdict and exits 0 either way; `run` exits 1 when the gate fails.
    """
    from patrol_deploy.errors import GateFailed
    from patrol_deploy.pipeline.compare import report_of
    from patrol_deploy.pipeline.run import run_all
    from patrol_deploy.runfolder import RunFolder

    cfg = load_config(DEFAULT_CONFIG, overrides)
    target = out or Path("runs/demo")
    try:
        report = run_all(cfg, target, True, force)
    except GateFailed:
        report = report_of(RunFolder(target))  # the verdict is part of what the demo shows
    emit(report, as_json, lambda r: summary_table(r) + f"\nreport: {target / 'report.html'}")


def gate_text(result: dict[str, Any]) -> str:
    """The gate's verdict and the two measurements behind it, for the CLI."""
    def line(label: str, entry: dict[str, Any], where: str) -> str:
        p = entry["privacy"]
        utility, ssim = entry.get("utility"), p.get("worst_ssim")
        return (f"{label:<10} utility {format(utility if utility is not None else float('nan'), '.2f')}, worst SSIM "
                f"{format(ssim if ssim is not None else float('nan'), '.3f')} ({p.get('worst_attack')})  {where}")

    limits = result["limits"]
    rows = [line("deployed", result["deployed"], f"{result['deployed'].get('edge')} "
                 f"[{result['deployed'].get('runtime')}]"),
            line("reference", result["reference"], str(result["reference"].get("model_dir", "float PATROL edge"))),
            f"gate {'PASSED' if result['passed'] else 'FAILED: ' + '; '.join(result['reasons'])} (max SSIM increase "
            f"{limits['max_ssim_increase']}, max utility drop {limits['max_utility_drop']})"
            + ("; measurement reused" if result.get("reused") else "")]
    return "\n".join(rows)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@gate_limit_options
@click.option("--engine", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Attack a TensorRT engine instead of the quantized ONNX (needs TensorRT and a GPU).")
@click.option("--config", "config", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="A YAML config whose attacks, gate and train settings to use (its seed, data and model are "
                   "ignored: the run's are kept) [default: report.json's config, else the defaults].")
@data_location_options
@json_option
def verify(run_dir: Path, max_ssim_increase: float | None, max_utility_drop: float | None, engine: Path | None,
           config: Path | None, overrides: tuple[str, ...], data_root: Path | None, as_json: bool) -> None:
    """Attack the quantized edge and gate on privacy and utility against the float PATROL model: exit 0 when it
    passes, 1 when it fails. Works after `run` and after the separate steps; re-runs reuse the measurement."""
    from patrol_deploy.errors import GateFailed
    from patrol_deploy.pipeline.render import render_report
    from patrol_deploy.pipeline.verify import verify_run
    from patrol_deploy.runfolder import RunFolder

    limits = gate_limits(max_ssim_increase, max_utility_drop)
    try:
        result = verify_run(run_dir, None, engine, location=data_location(overrides, data_root), limits=limits,
                            config=config)
    except GateFailed:  # after `run`, report.json shows the new verdict, passed or failed
        render_report(RunFolder(run_dir))
        raise
    report = render_report(RunFolder(run_dir))  # None after the separate steps: there is no comparison
    if report is not None:
        emit(report, as_json, summary_table)
    else:
        emit(result.as_dict(), as_json, gate_text)


@click.command()
@click.option("--model", "model", type=click.Path(exists=True, path_type=Path), default=None,
              help="The deployed edge: an ONNX file (e.g. edge.int8.onnx) or a model folder.")
@click.option("--reference", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="The float model folder it replaces (model.pt + model.json, as patrol-deploy writes them).")
@click.option("--data", "data", default=None, metavar="CONFIG_OR_FOLDER",
              help="A YAML config (its data, seed and attacks), a dataset folder, or a bundled source name "
                   "[default: the data the reference was trained on].")
@click.option("--engine", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Attack this TensorRT engine as the deployed edge (needs TensorRT and a GPU).")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for OUT/gate/gate.json and the cached measurements [default: write nothing].")
@gate_limit_options
@data_location_options
@json_option
def gate(model: Path | None, reference: Path, data: str | None, engine: Path | None, out: Path | None,
         max_ssim_increase: float | None, max_utility_drop: float | None, overrides: tuple[str, ...],
         data_root: Path | None, as_json: bool) -> None:
    """Gate a deployed edge against the float model it replaces, without the comparison of variants: the
    same attacks and utility as `verify`; exit 0 when it passes, 1 when it fails."""
    from patrol_deploy.api import gate as gate_api
    from patrol_deploy.errors import GateFailed

    limits: dict[str, Any] = gate_limits(max_ssim_increase, max_utility_drop)
    result = gate_api(model=model, reference=reference, data=data, engine=engine, out=out, data_root=data_root,
                      overrides=overrides, **limits)
    emit(result.as_dict(), as_json, gate_text)
    if not result.passed:
        raise GateFailed("privacy gate FAILED: " + "; ".join(result.reasons) + ".",
                         "keep the reference model, or re-make the deployed edge (more calibration images, "
                         "fewer quantized layers)")
