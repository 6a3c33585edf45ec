"""Every command's `--help` runs, offers `--json` (every command prints a result), and is documented in docs/cli.md
with each of its options, so the reference cannot drift from the CLI."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from patrol_deploy.cli.main import COMMANDS, cli, main

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC = DOCS / "cli.md"


def doc_sections() -> dict[str, str]:
    """docs/cli.md's text per command heading (### `patrol-deploy NAME ...`)."""
    parts = re.split(r"^### `patrol-deploy ([a-z-]+)[^`]*`$", DOC.read_text(encoding="utf-8"), flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def long_options(name: str) -> set[str]:
    command = cli.get_command(click.Context(cli), name)
    assert command is not None
    return {opt for param in command.params if isinstance(param, click.Option)
            for opt in param.opts if opt.startswith("--") and opt != "--help"}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_runs_and_offers_json(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: patrol-deploy {name} ")
    assert "--json" in out and "Print the result as JSON on stdout." in out


def test_every_command_and_option_is_documented() -> None:
    sections = doc_sections()
    assert set(sections) == set(COMMANDS)
    for name, text in sections.items():
        missing = sorted(opt for opt in long_options(name) if f"`{opt}" not in text)
        assert not missing, f"docs/cli.md, patrol-deploy {name}: undocumented {missing}"


def test_exit_codes_are_documented_as_implemented() -> None:
    from patrol_deploy import errors

    text = DOC.read_text(encoding="utf-8")
    table = dict(re.findall(r"^\| `(\d+)` \| (.+?) \|", text, flags=re.M))
    assert {int(code) for code in table} == {errors.EXIT_OK, errors.EXIT_GATE_FAILED, errors.EXIT_BAD_INPUT,
                                             errors.EXIT_MISSING, errors.EXIT_INTERNAL, errors.EXIT_INTERRUPTED,
                                             errors.EXIT_TERMINATED}
    assert errors.GateFailed.exit_code == 1 and errors.ConfigError.exit_code == errors.DataError.exit_code == 2
    assert errors.ResourceError.exit_code == 2 and errors.EXIT_INTERNAL == 4
    assert errors.MissingDependency.exit_code == errors.HardwareError.exit_code == 3


def documented_command_lines() -> list[tuple[str, list[str]]]:
    """(doc, argv) of every `patrol-deploy ...` line in the docs' bash blocks (continuation lines joined)."""
    found = []
    for doc in sorted(DOCS.glob("*.md")):
        for block in re.findall(r"```bash\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split("#")[0].strip()
                if line.startswith("patrol-deploy "):
                    found.append((doc.name, shlex.split(line)[1:]))
    return found


def test_documented_command_lines_use_real_commands_and_flags() -> None:
    lines = documented_command_lines()
    assert {"walkthrough.md", "cli.md", "engine.md"} <= {doc for doc, _ in lines}
    for doc, argv in lines:
        args = [a for a in argv if a not in ("--quiet", "-q", "--debug")]
        assert args[0] in COMMANDS, f"{doc}: unknown command in patrol-deploy {' '.join(argv)}"
        unknown = {a.split("=")[0] for a in args[1:] if a.startswith("--")} - long_options(args[0])
        assert not unknown, f"{doc}: patrol-deploy {args[0]} has no {sorted(unknown)}"


def test_walkthrough_config_is_valid(tmp_path: Path) -> None:
    from patrol_deploy.config import load_config

    text = (DOCS / "walkthrough.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "source: veri" in b]
    (tmp_path / "veri.yaml").write_text(block, encoding="utf-8")
    cfg = load_config(tmp_path / "veri.yaml")
    assert (cfg.data.source, cfg.model.task, cfg.model.name) == ("veri", "reid", "resnet50")
    assert cfg.model.checkpoint == tmp_path / "checkpoints" / "veri_resnet50.pt"  # relative to the file
    assert cfg.tracking.trackers == ["mlflow"]
