"""`patrol-deploy run`, `demo` and `verify`: the whole comparison, then export, quantize and the privacy gate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from patrol_deploy.cli.options import config_args, emit, force_option, json_option, out_option
from patrol_deploy.config import DEFAULT_CONFIG, Config, load_config


def summary_table(report: dict[str, Any]) -> str:
    metric = report["utility_metric"]
    def num(v: float | None, fmt: str) -> str:
        return format(v if v is not None else float("nan"), fmt)

    rows = [f"{'variant':<17} {'split':<10} {'edge MACs':>12} {metric:>9} {'worst SSIM':>11}  worst attack"]
    for name, v in report["variants"].items():
        p = v["privacy"]
        rows.append(f"{name:<17} {v['split']['name']:<10} {v['split']['edge_macs']:>12,} {num(v['utility'], '>9.2f')} "
                    f"{num(p.get('worst_ssim'), '>11.3f')}  {p.get('worst_attack')}")
    q = report.get("quantized")
    if q:
        g = q["gate"]
        rows.append(f"{q['mode']} edge: {metric} {num(q.get('utility'), '.2f')}, worst SSIM "
                    f"{num(q['privacy'].get('worst_ssim'), '.3f')}; "
                    f"gate {'PASSED' if g['passed'] else 'FAILED: ' + '; '.join(g['reasons'])}")
    return "\n".join(rows)


def run_all(cfg: Config, out: Path, deploy: bool, force: bool = False) -> dict[str, Any]:
    """compare -> export -> quantize -> verify; returns the final report (GateFailed propagates).

    A run folder from another config or version, or with changed files, is refused unless `force`; every
    tracker in `tracking.trackers` logs the run.
    """
    from patrol_deploy.export import export_model_dir
    from patrol_deploy.pipeline import compare, report_of
    from patrol_deploy.quantize import quantize_edge
    from patrol_deploy.runfolder import RunFolder, check_run_folder, run_identity
    from patrol_deploy.tracking import tracked_run
    from patrol_deploy.verify import verify_run

    run = RunFolder(out)
    check_run_folder(run, run_identity(cfg), force)
    with tracked_run(cfg, run):
        compare(cfg, run)
        if deploy:
            source = run.path("patrol")  # the torch route exports at opset 17 itself (TensorRT 8.x)
            if cfg.quantize.route == "onnx":
                source = export_model_dir(source, run, cfg.export).edge
            quantize_edge(source, run, cfg.quantize.mode, cfg.quantize.route,
                          cfg.quantize.calibration_images, cfg.export)
            verify_run(run.root, cfg.gate)
    return report_of(run)


@click.command()
@config_args
@out_option()
@click.option("--skip-deploy", is_flag=True, help="Stop after the report (no export, quantization or gate).")
@force_option
@json_option
def run(config: Path, overrides: tuple[str, ...], out: Path, skip_deploy: bool, force: bool, as_json: bool) -> None:
    """The full comparison: baseline, PATROL, defenses, attacks, report, export, INT8 and the privacy gate."""
    from patrol_deploy.errors import GateFailed
    from patrol_deploy.pipeline import report_of
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
    from patrol_deploy.pipeline import report_of
    from patrol_deploy.runfolder import RunFolder

    cfg = load_config(DEFAULT_CONFIG, overrides)
    target = out or Path("runs/demo")
    try:
        report = run_all(cfg, target, True, force)
    except GateFailed:
        report = report_of(RunFolder(target))  # the verdict is part of what the demo shows
    emit(report, as_json, lambda r: summary_table(r) + f"\nreport: {target / 'report.html'}")


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--max-ssim-increase", type=float, default=None, help="Most the worst-case SSIM may rise (default 0.02).")
@click.option("--max-utility-drop", type=float, default=None, help="Most utility may drop, in points (default 0.5).")
@click.option("--engine", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Attack a TensorRT engine instead of the quantized ONNX (needs TensorRT and a GPU).")
@json_option
def verify(run_dir: Path, max_ssim_increase: float | None, max_utility_drop: float | None, engine: Path | None,
           as_json: bool) -> None:
    """Attack the quantized edge and gate on privacy and utility: exit 0 when it passes, 1 when it fails."""
    from patrol_deploy.config import GateConfig, validated
    from patrol_deploy.pipeline import report_of
    from patrol_deploy.runfolder import RunFolder
    from patrol_deploy.verify import verify_run

    given = {"max_ssim_increase": max_ssim_increase, "max_utility_drop": max_utility_drop}
    gate = validated(GateConfig, {k: v for k, v in given.items() if v is not None}, "verify options")
    verify_run(run_dir, gate, engine)
    emit(report_of(RunFolder(run_dir)), as_json, summary_table)
