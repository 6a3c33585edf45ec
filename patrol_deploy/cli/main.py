"""`patrol-deploy`: the entry point, the lazy command group and the error-to-exit-code policy.

Subcommands are imported only when invoked, so on-device commands (engine
build, run, profile) never import torch or ModelOpt. User errors print one
line and exit with the documented code; tracebacks appear only with --debug.
SIGTERM is turned into an exception, so a terminated command cleans up its
temporary files like an interrupted one and exits 143 with one line.
Every run ends with a one-line PASSED / FAILED verdict on stderr.
"""

from __future__ import annotations

import importlib
import signal
import sys
import threading
import traceback
from typing import Any

import click

from patrol_deploy import __version__
from patrol_deploy.cli.crash import internal_error_line, known_problem
from patrol_deploy.cli.options import hoist_global_options
from patrol_deploy.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    PatrolError,
)
from patrol_deploy.progress import one_line_warnings, set_quiet
from patrol_deploy.runlock import held_run_folders, release_run_folders

# name -> "module:function"; the order is the order of `--help`.
COMMANDS = {
    "demo": "patrol_deploy.cli.pipeline_cmds:demo",
    "run": "patrol_deploy.cli.pipeline_cmds:run",
    "splits": "patrol_deploy.cli.splits:splits",
    "train": "patrol_deploy.cli.train:train",
    "patrol": "patrol_deploy.cli.patrol_cmd:patrol",
    "verify": "patrol_deploy.cli.pipeline_cmds:verify",
    "gate": "patrol_deploy.cli.pipeline_cmds:gate",
    "attack": "patrol_deploy.cli.attack_cmd:attack",
    "export": "patrol_deploy.cli.deploy_cmds:export",
    "quantize": "patrol_deploy.cli.deploy_cmds:quantize",
    "build-engine": "patrol_deploy.cli.engine_cmds:build_engine_cmd",
    "trtexec-cmd": "patrol_deploy.cli.engine_cmds:trtexec_cmd",
    "compare": "patrol_deploy.cli.engine_cmds:compare",
    "profile": "patrol_deploy.cli.engine_cmds:profile",
    "plugins": "patrol_deploy.cli.plugins_cmd:plugins",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="patrol-deploy")
@click.option("--quiet", "-q", is_flag=True,
              help="No progress bars, narration or library warnings (for pipelines); also after the subcommand.")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors; also after the subcommand.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, debug: bool) -> None:
    """Privacy-oriented pruning (PATROL) for split inference, exported to ONNX, quantized and built for Jetson."""
    set_quiet(quiet)
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


class Terminated(BaseException):
    """SIGTERM, raised where the command is (a BaseException, so no `except Exception` records it as a failure)."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def _verdict(passed: bool, argv: list[str]) -> None:
    name = next((a for a in argv if not a.startswith("-")), "")
    click.echo(f"{'PASSED' if passed else 'FAILED'} | patrol-deploy {name}".rstrip(), err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and exit with the documented code (0 ok, 1 gate failed, 2 bad input or resources, 3 missing
    dependency, 4 internal error, 130 interrupted, 143 terminated)."""
    args = hoist_global_options(list(sys.argv[1:] if argv is None else argv))
    debug = "--debug" in args
    code = EXIT_OK
    # Signal handlers can only be set from the main thread (an app may call main() from another one).
    in_main = threading.current_thread() is threading.main_thread()
    previous = (signal.signal(signal.SIGTERM, _terminate) or signal.SIG_DFL) if in_main else None
    held_before = tuple(held_run_folders())
    one_line_warnings()
    try:
        result: Any = cli.main(args=args, prog_name="patrol-deploy", standalone_mode=False)
        code = result if isinstance(result, int) else EXIT_OK
    except PatrolError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"patrol-deploy: error: {exc}", err=True)
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("patrol-deploy: aborted", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = EXIT_BAD_INPUT
    except click.exceptions.Exit as exc:  # --help, --version
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("patrol-deploy: interrupted", err=True)
        code = EXIT_INTERRUPTED
    except Terminated:
        click.echo("patrol-deploy: terminated (SIGTERM)", err=True)
        code = EXIT_TERMINATED
    except Exception as exc:  # not a PatrolError: a resource problem (exit 2) or a bug (exit 4), never "gate failed"
        if debug:
            traceback.print_exc()
        known = known_problem(exc)
        click.echo(f"patrol-deploy: error: {known}" if known is not None else internal_error_line(exc, args), err=True)
        code = known.exit_code if known is not None else EXIT_INTERNAL
    finally:
        release_run_folders(keep=held_before)  # the run-folder locks this command took (runlock.py)
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if args and not any(a in ("-h", "--help", "--version") for a in args):
        _verdict(code == EXIT_OK, [a for a in args if a not in ("--quiet", "-q", "--debug")])
    sys.exit(code)
