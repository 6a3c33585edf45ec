"""Argument groups shared by subcommands (config + overrides, output folder, --force, JSON output)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def config_args(func: F) -> F:
    """CONFIG (a YAML file) and repeatable --set section.key=value overrides."""
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key, e.g. --set budget.edge_macs=2e7 (repeatable).")(func)
    return click.argument("config", type=click.Path(dir_okay=False, path_type=Path))(func)


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
