"""Argument groups shared by subcommands (config + overrides, output folder, --force, JSON output, data location)
and the placement of the global options."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])
GLOBAL_FLAGS = ("-q", "--quiet", "--debug")  # the group's own flags, accepted anywhere on the command line


def hoist_global_options(args: list[str]) -> list[str]:
    """`patrol-deploy verify RUN -q` as `patrol-deploy -q verify RUN`, and `patrol-deploy --json CMD` as
    `patrol-deploy CMD --json`: the group's flags move before the subcommand, `--json` after it (not past `--`)."""
    end = args.index("--") if "--" in args else len(args)
    head, tail = args[:end], args[end:]
    flags = [a for a in head if a in GLOBAL_FLAGS]
    rest = [a for a in head if a not in GLOBAL_FLAGS]
    command = next((i for i, a in enumerate(rest) if not a.startswith("-")), None)
    if command is not None and "--json" in rest[:command]:
        rest = [a for a in rest[:command] if a != "--json"] + [rest[command], "--json"] + rest[command + 1:]
    return flags + rest + tail


def config_args(func: F) -> F:
    """CONFIG (a YAML file) and repeatable --set section.key=value overrides.

    CONFIG is made absolute, so the paths in it (data.root, model.checkpoint) resolve against its folder to
    absolute paths, and what the run folder records does not depend on the directory the command ran in.
    """
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set budget.edge_macs=2e7 (repeatable).")(func)
    return click.argument("config", type=click.Path(dir_okay=False, path_type=Path), callback=_absolute)(func)


def _absolute(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    return Path(os.path.abspath(value)) if value is not None else None


def out_option(required: bool = True, help_text: str = "Run folder to write into.") -> Callable[[F], F]:
    return click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
                        required=required, help=help_text)


def force_option(func: F) -> F:
    return click.option("--force", is_flag=True,
                        help="Reuse a run folder written by another config or version, or whose files changed "
                             "since the manifest recorded them (the affected stages are redone).")(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")(func)


def emit(result: dict[str, Any], as_json: bool, text: Callable[[dict[str, Any]], str]) -> None:
    """Print `result` as JSON or as human text."""
    click.echo(json.dumps(result, indent=2, default=str) if as_json else text(result))


def data_location_options(func: F) -> F:
    """--set KEY=VALUE and --data-root DIR: point the config recorded in a model folder, sidecar or run folder at
    the data on this machine (see `patrol_deploy.relocate`)."""
    func = click.option("--data-root", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Where the dataset folder is on this machine (replaces the recorded data.root).")(func)
    return click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a key of the recorded config, e.g. --set data.root=/data/imgs "
                             "(repeatable).")(func)


def data_location(overrides: tuple[str, ...], data_root: Path | None) -> Any:
    """The DataLocation of --set / --data-root (imported here, so on-device commands never load the config code)."""
    from patrol_deploy.relocate import DataLocation

    return DataLocation(data_root, tuple(overrides))


def gate_limit_options(func: F) -> F:
    """--max-ssim-increase and --max-utility-drop: the gate's limits (default: the config's `gate` section)."""
    func = click.option("--max-utility-drop", type=float, default=None,
                        help="Most utility may drop, in points [default: gate.max_utility_drop, 0.5].")(func)
    return click.option("--max-ssim-increase", type=float, default=None,
                        help="Most the worst-case SSIM may rise [default: gate.max_ssim_increase, 0.02].")(func)


def gate_limits(max_ssim_increase: float | None, max_utility_drop: float | None) -> dict[str, float]:
    """The limits given on the command line, validated like the config's `gate` section."""
    from patrol_deploy.config import GateConfig, validated

    given = {k: v for k, v in (("max_ssim_increase", max_ssim_increase), ("max_utility_drop", max_utility_drop))
             if v is not None}
    validated(GateConfig, given, "gate options")
    return given
