#!/usr/bin/env python3
"""Write docs/config.md from the pydantic schema in patrol_deploy/config.py, so the docs cannot drift.

    python scripts/gen_config_docs.py          # regenerate docs/config.md
    python scripts/gen_config_docs.py --check  # exit 1 if docs/config.md is out of date (tests run this)
"""

from __future__ import annotations

import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from patrol_deploy.config import DEFAULT_CONFIG, Config  # noqa: E402
from patrol_deploy.runfolder import write_text  # noqa: E402

DOC = ROOT / "docs" / "config.md"

# One line per top-level section, and the rules that tie several keys together (model validators).
SECTION_INTRO = {
    "data": "Which images, at what size, and how they are split. The splits are disjoint and fixed by `seed`.",
    "model": "The architecture (or your checkpoint) whose edge part is pruned and deployed.",
    "train": "Plain training of the baseline model when `model.checkpoint` is not given.",
    "budget": "What the edge device can afford per image; the deepest split within it is the unpruned baseline.",
    "patrol": "PATROL training: soft masks, Lipschitz and adversarial terms, then structured pruning.",
    "attacks": "Model-inversion attacks that measure privacy (always trained from scratch on the auxiliary split).",
    "defenses": "Baseline defenses PATROL is compared with.",
    "export": "ONNX export of the edge partition.",
    "quantize": "INT8 / FP16 quantization of the exported edge with NVIDIA ModelOpt.",
    "gate": "The privacy gate after quantization: a run fails (exit 1) when it is exceeded.",
    "tracking": "Experiment trackers (plugins such as `plugins/mlflow`) that log the config, the report's numbers "
                "and the artifacts of `run`, `demo` and the Python API.",
}
SECTION_RULES = {
    "data": "`val_fraction + test_fraction + aux_fraction + calib_fraction` must leave at least 5% for training.",
    "budget": "Set at least one of `edge_macs`, `edge_params`, `upload_bytes`; a split fits when it is within all "
              "that are set.",
}

EXAMPLE = """\
# my-run.yaml: your own images, an RGB small ResNet, and a MAC budget for the edge device.
seed: 0
data:
  source: imagefolder
  root: images            # images/<class>/<file>; relative to this file
  image_size: 64
  channels: 3
model:
  name: small_resnet
  width: 16
train:
  epochs: 10
budget:
  edge_macs: 5.0e7
  upload_dtype: int8
attacks:
  names: [blackbox, whitebox]
"""

_BASIC = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path", type(None): "null"}
_BOUNDS = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))


def type_text(annotation: Any) -> str:
    """A reader's name for a type annotation: `integer`, `list of number or number`, `one of `a`, `b``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_text(a) for a in args)
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is typing.Annotated:  # e.g. PositiveInt inside `PositiveInt | None`
        return type_text(args[0]) + bounds_text([c for m in args[1:] for c in getattr(m, "metadata", [m])])
    if annotation in _BASIC:
        return _BASIC[annotation]
    return getattr(annotation, "__name__", str(annotation))


def bounds_text(constraints: list[Any]) -> str:
    """` (> 0, < 1, finite)` from annotated-types constraints; empty when there are none."""
    parts = [f"{sign} {getattr(m, attr)}" for m in constraints for attr, sign in _BOUNDS
             if getattr(m, attr, None) is not None]
    parts += ["finite" for m in constraints if getattr(m, "allow_inf_nan", None) is False]
    return f" ({', '.join(parts)})" if parts else ""


def value_text(value: Any) -> str:
    """A default as it would be written in YAML."""
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    if isinstance(value, list):
        return "`[" + ", ".join(str(v) for v in value) + "]`"
    return f"`{value}`"


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def section_rows(prefix: str, model: BaseModel) -> tuple[list[str], list[tuple[str, BaseModel]]]:
    """Table rows for the plain keys of one section, and its nested sections."""
    rows, nested = [], []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, BaseModel):
            nested.append((key, value))
            continue
        kind = type_text(field.annotation) + bounds_text(field.metadata)
        rows.append(f"| `{key}` | {cell(kind)} | {cell(value_text(value))} | {cell(field.description or '')} |")
    return rows, nested


def render_section(key: str, model: BaseModel, level: int) -> list[str]:
    rows, nested = section_rows(key, model)
    out = [f"{'#' * level} `{key}`", ""]
    if key in SECTION_INTRO:
        out += [SECTION_INTRO[key], ""]
    if key in SECTION_RULES:
        out += [f"Rule: {SECTION_RULES[key]}", ""]
    if rows:
        out += ["| key | type | default | description |", "| --- | --- | --- | --- |", *rows, ""]
    for sub_key, sub in nested:
        out += render_section(sub_key, sub, level + 1)
    return out


def bundled_budget() -> str:
    """The bundled default config's budget in words, read from the file so that the sentence cannot drift."""
    budget = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")).get("budget") or {}
    labels = {"edge_macs": "MACs", "edge_params": "parameters", "upload_bytes": "uploaded bytes per image"}
    return " and ".join(f"{int(float(budget[k])):,} {label}" for k, label in labels.items() if budget.get(k))


def render() -> str:
    """The whole of docs/config.md."""
    defaults = Config()
    top_rows, sections = section_rows("", defaults)
    lines = [
        "# Configuration reference",
        "",
        "<!-- Generated by scripts/gen_config_docs.py from patrol_deploy/config.py; do not edit by hand. -->",
        "",
        "A run is configured by one YAML file of sections. Every key is optional; a missing key takes the "
        "default below. The bundled default is `patrol_deploy/configs/default.yaml` (3,000 of the 5,000 real MNIST "
        f"digits, a small ResNet, an edge budget of {bundled_budget()}).",
        "",
        "- **Unknown keys are errors**, with the key path: `model.widht: unknown key`.",
        "- **Wrong values name what was expected and what was given**: "
        "`train.epochs: Input should be a valid integer, unable to parse string as an integer (got 'ten')`.",
        "- **Relative paths** (`data.root`, `model.checkpoint`) are resolved against the config file's folder.",
        "- **Overrides**: `--set section.key=value` (repeatable) sets any key; the value is read as YAML, so "
        "`--set attacks.names=[blackbox]` and `--set budget.edge_macs=2e7` work, and `--set data.limit=` "
        "sets null.",
        "- YAML anchors and aliases (`&name`, `*name`) are refused: a config never needs them.",
        "- Every problem is one line naming the file, the line or key path, and the fix; the exit code is 2.",
        "",
        "## Example",
        "",
        "```yaml",
        EXAMPLE.rstrip("\n"),
        "```",
        "",
        "## Keys",
        "",
        "| key | type | default | description |",
        "| --- | --- | --- | --- |",
        *top_rows,
        "",
    ]
    for key, section in sections:
        lines += render_section(key, section, 3)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.is_file() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC.relative_to(ROOT)} is out of date: run python scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    write_text(DOC, text)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
