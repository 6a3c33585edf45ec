"""Typed results that stages hand on and report.json holds (schema version 1, docs/report.md).

Pydantic models with strict types (an int is not a bool, a number is not a string) that keep any other keys
(`extra="allow"`): a stage may record more than the report needs, and a newer writer's additions do not break
an older reader. `validate_report` checks a report against `Report` and names the first problem's key path, the
expected type and what it got, in one line.
"""

from __future__ import annotations

import itertools
import json
import math
import types
import typing
from typing import Annotated, Any, Union

import numpy as np
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from patrol_deploy.errors import PatrolError

SCHEMA_VERSION = 1
R = typing.TypeVar("R", bound=BaseModel)
SCHEMA_FIX = "write the report with the evaluation stage (schema version 1, docs/report.md)"


class ReportError(PatrolError):
    """A report (or the images for it) does not follow schema version 1."""


def _notes(v: Any) -> Any:
    if not (isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v))):
        raise ValueError("should be notes (a string or a list of strings)")
    return v


def _is_series(v: Any) -> bool:
    return isinstance(v, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)


def _curve(v: Any) -> Any:
    if not (v is None or _is_series(v) or (isinstance(v, dict) and all(_is_series(s) for s in v.values()))):
        raise ValueError("should be curve (a list of numbers, or named lists of numbers)")
    return v


Notes = Annotated[Any, AfterValidator(_notes)]
Curve = Annotated[Any, AfterValidator(_curve)]


class Result(BaseModel):
    """Strict types for the keys a reader relies on; every other key is kept as it is."""

    model_config = ConfigDict(strict=True, extra="allow")


class AttackEntry(Result):
    """One attack's numbers against one edge (NaN / null when it failed, with `error`)."""

    ssim: float | None
    ssim_std: float | None
    psnr: float | None
    psnr_std: float | None
    error: str | None = None
    notes: Notes = Field(default_factory=list)
    loss_curve: Curve = None


class Privacy(Result):
    """Every attack against one edge and the worst case over them."""

    attacks: dict[str, AttackEntry]
    worst_ssim: float | None
    worst_attack: str | None


class SplitInfo(Result):
    """Where a variant is cut and what its edge costs."""

    name: str
    edge_macs: int
    edge_params: int
    upload_bytes: int
    feature_shape: list[int]


class VariantEntry(Result):
    """One variant of the comparison (report.json `variants.<name>`, RUN/variants/<name>/entry.json)."""

    split: SplitInfo
    utility: float | None
    utility_detail: dict[str, Any]
    params: dict[str, Any]
    privacy: Privacy


class Gate(Result):
    passed: bool
    reasons: list[str]


class FloatOp(Result):
    op: str
    why: str


class Attempt(Result):
    """One quantization attempt of the run (report.json `quantized.attempts`)."""

    method: str
    utility: float | None
    worst_ssim: float | None
    passed: bool
    reasons: list[Any]


class Quantized(Result):
    """The deployed (quantized) edge's measurement and the gate's verdict on it (report.json `quantized`)."""

    mode: str
    utility: float | None
    privacy: Privacy
    gate: Gate
    ops_quantized: int | None = None
    ops_total: int | None = None
    float_ops: list[FloatOp] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)


class Measurement(Result):
    """Utility and every attack against one edge, as the gate measures it (deployed or reference)."""

    utility: float | None
    utility_detail: dict[str, Any]
    privacy: Privacy


class GateDocument(Result):
    """A gate's verdict as written to <stage>/gate.json: the two measurements behind it and the limits."""

    format: str
    passed: bool
    reasons: list[str]
    limits: dict[str, Any]
    deployed: Measurement
    reference: Measurement


class Candidate(Result):
    """One candidate PATROL's search trained (split, strength) and how it did."""

    split: str
    strength: float
    fits: bool
    edge_macs: int
    seconds: float
    val_utility: float | None
    drop: float | None
    proxy_ssim: float | None
    within_drop: bool
    chosen: bool


class Search(Result):
    """PATROL's utility-guarded search: every candidate it trained and why the winner won."""

    enabled: bool
    max_utility_drop: float
    baseline_val_utility: float | None  # like each candidate's val_utility: on the selection images
    guard_images: int | None = None  # how many (validation + auxiliary); None in folders written before it
    coarse_guard: str | None = None  # why the guard cannot resolve max_utility_drop on them, if it cannot
    candidates: list[Candidate]
    passed: bool
    why: str


class MaskScales(Result):
    """A histogram of PATROL's normalized soft-mask scales over the edge channels before pruning."""

    bins: list[float]
    counts: list[int]
    channels: int
    near_zero_share: float | None

    @field_validator("bins")
    @classmethod
    def _increasing(cls, bins: list[float]) -> list[float]:
        if len(bins) < 2 or any(b <= a for a, b in itertools.pairwise(bins)):
            raise ValueError("should be an increasing list of at least 2 numbers")
        return bins

    @field_validator("counts")
    @classmethod
    def _one_per_bin(cls, counts: list[int], info: ValidationInfo) -> list[int]:
        bins = info.data.get("bins")
        if bins is not None and len(counts) != len(bins) - 1:
            raise ValueError(f"has {len(counts)} entries for {len(bins)} bin edges (should be {len(bins) - 1})")
        return counts


class PatrolSummary(Result):
    """What the PATROL stage hands on (RUN/patrol/summary.json; RUN/pruned/ for the `pruned` ablation)."""

    split: str
    baseline_split: dict[str, Any]
    budget: dict[str, Any]
    utility_metric: str
    utility_before: float
    utility_after: float
    utility_detail: dict[str, Any]
    ablation: dict[str, bool]
    pruning: dict[str, Any] | None
    edge_before: dict[str, Any]
    edge_after: dict[str, Any]
    loss_history: dict[str, Any]
    search: Search | None = None
    mask_scales: MaskScales | None = None
    surrogate_parameters: int | None = None


class Report(Result):
    """report.json: every variant's utility and privacy, the deployed edge's gate, PATROL's search."""

    schema_version: int
    utility_metric: str
    budget: dict[str, Any]
    data: dict[str, Any]
    variants: dict[str, VariantEntry]
    quantized: Quantized | None = None
    patrol_search: Search | None = None
    mask_scales: MaskScales | None = None

    @field_validator("variants")
    @classmethod
    def _not_empty(cls, variants: dict[str, VariantEntry]) -> dict[str, VariantEntry]:
        if not variants:
            raise ValueError("is empty (evaluate at least the undefended model)")
        return variants


def typed(model: type[R], data: Any) -> R:
    """`data` (what a stage built, or read back from its JSON file) as `model`, through the JSON a stage writes,
    so a fresh result and a reused one are the same object (numpy scalars and tuples become JSON values)."""
    return model.model_validate(json.loads(json.dumps(data, default=str)))


def plain(obj: Any, finite_only: bool = False) -> Any:
    """JSON data from what stages hand over: numpy scalars and arrays, tuples; NaN / inf to null if `finite_only`."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, dict):
        return {str(k): plain(v, finite_only) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v, finite_only) for v in obj]
    if finite_only and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- one-line errors -------------------------------------------------------------------------------------------------

KINDS = {"int_type": "int", "float_type": "number", "string_type": "str", "bool_type": "bool", "dict_type": "dict",
         "model_type": "dict", "model_attributes_type": "dict", "list_type": "list"}


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _annotation_at(model: type[BaseModel], loc: tuple[int | str, ...]) -> Any:
    """The type annotation at `loc` inside `model` (None when it cannot be followed)."""
    hint: Any = model
    for key in loc:
        hint = _strip_optional(hint)
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            field = hint.model_fields.get(str(key))
            if field is None:
                return None
            hint = field.annotation
            continue
        args = typing.get_args(hint)
        origin = typing.get_origin(hint)
        if origin is dict and len(args) == 2:
            hint = args[1]
        elif origin is list and args:
            hint = args[0]
        else:
            return None
    return hint


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (Union, types.UnionType):
        rest = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return hint


def _nullable(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint)


def one_line(exc: ValidationError, model: type[BaseModel], what: str) -> str:
    """The first problem of `exc` as "<what>: 'a.b.c' is missing / should be int, got str / <custom text>."."""
    err = exc.errors(include_url=False)[0]
    loc = tuple(err["loc"])
    path = ".".join(str(k) for k in loc)
    if err["type"] == "missing":
        return f"{what}: '{path}' is missing."
    if err["type"] == "value_error":
        return f"{what}: '{path}' {str(err['msg']).removeprefix('Value error, ')}."
    kind = KINDS.get(err["type"], err["type"])
    null = " or null" if _nullable(_annotation_at(model, loc)) else ""
    return f"{what}: '{path}' should be {kind}{null}, got {_kind(err.get('input'))}."


def validate_report(d: Any) -> Report:
    """`d` as a Report; ReportError names the first problem's key path (exit code 2)."""
    if not isinstance(d, dict):
        raise ReportError(f"report: should be a JSON object, got {_kind(d)}.", "pass the parsed report.json")
    version = d.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SCHEMA_VERSION:
        raise ReportError(f"report: schema_version {version} is not supported (this is version {SCHEMA_VERSION}).",
                          "render it with the patrol-deploy version that wrote it")
    try:
        return Report.model_validate(d)
    except ValidationError as exc:
        raise ReportError(one_line(exc, Report, "report"), SCHEMA_FIX) from None
