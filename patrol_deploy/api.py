"""The one-call Python API: `patrol_deploy.optimize(model, data, budget, out)` inside an existing export step.

It builds one validated Config from a base config (a YAML path, a dict or a
Config) plus the call's arguments, saves an in-memory torch model's state dict
into the run folder (content-addressed, so a re-run with the same weights
reuses every stage), runs the same pipeline as `patrol-deploy run` and returns
a `PipelineResult`: the report, the artifact paths and the gate verdict. A
failed privacy gate is a result (`gate_passed=False`), not an exception.
"""

from __future__ import annotations

import copy
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import BudgetConfig, Config, DataConfig, load_config, validated
from patrol_deploy.errors import ConfigError, DataError, GateFailed, ModelError
from patrol_deploy.progress import quiet_mode
from patrol_deploy.runfolder import RunFolder, atomic_path, check_run_folder, run_identity
from patrol_deploy.runlock import holding_run_folders
from patrol_deploy.stages import run_stage

if TYPE_CHECKING:
    from patrol_deploy.pipeline.verify import GateResult

INPUT_STAGE = "input"
_DEDICATED = ("model", "data", "budget")  # sections set by optimize()'s own arguments
_HEAD_KEYS = ("fc.", "classifier.")


@dataclass(frozen=True)
class PipelineResult:
    """What `optimize` produced: the report, where the artifacts are, and the privacy gate's verdict."""

    report: dict[str, Any]
    paths: dict[str, Path]
    gate_passed: bool | None  # PATROL verdict and quantized gate; None when deploy was skipped and PATROL passed
    gate_reasons: list[str]
    split: str
    baseline_split: str
    warnings: list[str] = field(default_factory=list)


def optimize(model: Any = None, data: DataConfig | dict[str, Any] | str | Path | None = None,
             budget: BudgetConfig | dict[str, Any] | None = None, out: str | Path = "runs/patrol",
             config: Config | dict[str, Any] | str | Path | None = None, *, deploy: bool = True,
             force: bool = False, quiet: bool = False, **overrides: Any) -> PipelineResult:
    """Prune and defend `model`'s edge with PATROL under `budget`, attack it, export, quantize and gate it.

    model: a torch model of a registered architecture (torchvision resnet18 / resnet50 / mobilenet_v2, or a
    patrol-deploy BlockNet), a state-dict file, or None to train `config`'s model from scratch.
    data: a DataConfig, a dict of `data` keys, a dataset folder (VeRi-776 layout or class subfolders), or a
    bundled source name (`mnist`, `digits`, `lfw`). budget: e.g. `{"edge_macs": 15e6}`.
    config: the base config (YAML path, dict or Config); `overrides` are further sections, e.g.
    `train={"epochs": 2}`, `attacks={"eval_images": 32}`, `seed=1`. deploy=False stops after the report.
    force: reuse a run folder written by another config or version (see `patrol-deploy run --force`).
    quiet: no progress bars, narration or library warnings during the call (the CLI's `-q`).
    """
    if quiet:
        with quiet_mode():
            return optimize(model, data, budget, out, config, deploy=deploy, force=force, **overrides)
    with holding_run_folders():  # the run folder's lock is released when the call returns
        return _optimize(model, data, budget, out, config, deploy, force, overrides)


def _optimize(model: Any, data: DataConfig | dict[str, Any] | str | Path | None,
              budget: BudgetConfig | dict[str, Any] | None, out: str | Path,
              config: Config | dict[str, Any] | str | Path | None, deploy: bool, force: bool,
              overrides: dict[str, Any]) -> PipelineResult:
    tree = _base_tree(config)
    for key, value in overrides.items():
        if key in _DEDICATED or key not in Config.model_fields:
            valid = ", ".join(k for k in Config.model_fields if k not in _DEDICATED)
            raise ConfigError(f"optimize() got an unknown keyword '{key}'.",
                              f"pass model, data and budget as arguments and other sections as keywords: {valid}")
        tree[key] = _merge(tree.get(key), value.model_dump(mode="json", exclude_unset=True)
                           if hasattr(value, "model_dump") else value)
    if data is not None:
        tree["data"] = _merge(tree.get("data"), _data_section(data))
    if budget is not None:  # a budget replaces the base one: its limits are meant together
        tree["budget"] = budget.model_dump(mode="json") if isinstance(budget, BudgetConfig) else dict(budget)
    run = RunFolder(Path(out).resolve())  # absolute artifact paths: the caller may change directory
    blob = _adopt_model(model, tree, run)
    cfg = validated(Config, tree, "optimize()")
    check_run_folder(run, run_identity(cfg, hashlib.sha256(blob).hexdigest() if blob else None), force)
    conf = {"architecture": cfg.model.name, "from": type(model).__qualname__, "checkpoint": str(cfg.model.checkpoint)}
    if blob is not None and cfg.model.checkpoint is not None:
        checkpoint, written = Path(cfg.model.checkpoint), blob

        def write(_: Checkpoints) -> tuple[None, list[Path]]:
            with atomic_path(checkpoint) as tmp:
                tmp.write_bytes(written)
            return None, [checkpoint]

        run_stage(run, INPUT_STAGE, conf, label="input model", seed=cfg.seed, reuse=lambda: None, build=write,
                  shown=checkpoint)
    from patrol_deploy.preflight import preflight  # imports torch: not at module import

    # after the adopted checkpoint is on disk (preflight builds the model from it); before any training
    preflight(cfg, components=True)
    return _run(cfg, run, deploy, force)


def _run(cfg: Config, run: RunFolder, deploy: bool, force: bool) -> PipelineResult:
    from patrol_deploy.pipeline.compare import report_of
    from patrol_deploy.pipeline.run import run_all

    try:
        report = run_all(cfg, run.root, deploy, force)
    except GateFailed:
        report = report_of(run)
    gate = report.get("quantized", {}).get("gate")
    verdict = report.get("patrol_verdict") or {"passed": False, "reasons": ["the report has no PATROL verdict"]}
    reasons = list(verdict["reasons"]) + (list(gate["reasons"]) if gate else [])
    passed = verdict["passed"] and (gate["passed"] if gate else True)
    tracking = run.stage("tracking") or {}
    return PipelineResult(
        report=report, paths=result_paths(run), gate_passed=passed if gate or not verdict["passed"] else None,
        gate_reasons=reasons, split=report["variants"]["patrol"]["split"]["name"],
        baseline_split=report["baseline_split"],
        warnings=list(tracking.get("warnings", [])) if cfg.tracking.trackers else [])


def result_paths(run: RunFolder) -> dict[str, Path]:
    """The artifacts of a finished run that exist: report, model folders, ONNX files, checkpoint, manifest."""
    candidates = {"report_json": run.path("report.json"), "report_html": run.path("report.html"),
                  "baseline_model": run.path("train"), "patrol_model": run.path("patrol"),
                  "manifest": run.manifest_path}
    from patrol_deploy.pipeline.render import judged_stage

    quantized = judged_stage(run)
    recorded = {stage: list((run.stage(stage) or {}).get("files", {})) for stage in (INPUT_STAGE, "export", quantized)}
    picks = {"checkpoint": [f for f in recorded[INPUT_STAGE] if f.endswith(".pt")],
             "edge_onnx": [f for f in recorded["export"] if Path(f).name == "edge.onnx"],
             "quantized_onnx": [f for f in recorded[quantized] if f.endswith(".onnx")]}
    candidates.update({key: run.path(files[0]) for key, files in picks.items() if files})
    return {key: path for key, path in candidates.items() if path.exists()}


def _merge(base: Any, update: Any) -> Any:
    """`update` deep-merged over `base` (mappings merge key by key; anything else replaces)."""
    if isinstance(base, dict) and isinstance(update, dict):
        merged = dict(base)
        for key, value in update.items():
            merged[key] = _merge(base.get(key), value)
        return merged
    return copy.deepcopy(update)


def _base_tree(config: Config | dict[str, Any] | str | Path | None) -> dict[str, Any]:
    """The base config as a tree of the keys it sets (YAML paths resolved against the file, as the CLI does)."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return copy.deepcopy(config)
    if isinstance(config, str | Path):
        config = load_config(Path(config).resolve())  # paths in it resolve to absolute ones, whatever the cwd
    if isinstance(config, Config):
        return config.model_dump(mode="json", exclude_unset=True)
    raise ConfigError(f"config must be a YAML path, a dict or a Config, not {type(config).__name__}.",
                      "pass config='my-run.yaml', a dict of sections, or a patrol_deploy.config.Config")


def _data_section(data: DataConfig | dict[str, Any] | str | Path) -> dict[str, Any]:
    """`data` keys from a DataConfig, a dict, a dataset folder or a bundled source name."""
    if isinstance(data, DataConfig):
        return data.model_dump(mode="json", exclude_unset=True)
    if isinstance(data, dict):
        return copy.deepcopy(data)
    folder = Path(data)
    if folder.is_dir():
        source = "veri" if (folder / "image_train").is_dir() else "imagefolder"
        return {"source": source, "root": str(folder.resolve())}
    from patrol_deploy.data.sources import SOURCES

    if isinstance(data, str) and data in SOURCES:
        return {"source": data}
    raise DataError(f"data '{data}' is neither a folder nor a dataset source.",
                    f"pass a dataset folder, a dict of data keys, or one of: {', '.join(SOURCES.names())}")


def _adopt_model(model: Any, tree: dict[str, Any], run: RunFolder) -> bytes | None:
    """Point `model.checkpoint` at the user's model; returns the serialized state dict to save, if in memory."""
    if model is None:
        return None
    section = tree.setdefault("model", {})
    if isinstance(model, str | Path):
        if not Path(model).is_file():
            raise ModelError(f"checkpoint '{model}' does not exist.",
                             "pass a torch model, or a state dict saved with torch.save(model.state_dict(), path)")
        section["checkpoint"] = str(Path(model).resolve())
        return None
    from patrol_deploy.lazy import require

    torch = require("torch", "optimize() with an in-memory model")
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model must be a torch.nn.Module or a checkpoint path, not {type(model).__name__}.",
                         "pass your trained torch model, or the path of its state dict")
    state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
    data = tree.setdefault("data", {})
    if "channels" not in data:  # the model says what its images look like
        first_conv = next((v for v in state.values() if v.ndim == 4), None)
        if first_conv is not None and first_conv.shape[1] in (1, 3):
            data["channels"] = int(first_conv.shape[1])
    section["name"] = architecture_of(state, type(model).__name__, validated(Config, tree, "optimize()"),
                                      explicit=section.get("name"))
    buf = io.BytesIO()
    torch.save(state, buf)
    blob = buf.getvalue()
    section["checkpoint"] = str(run.path(INPUT_STAGE, f"checkpoint-{hashlib.sha256(blob).hexdigest()[:16]}.pt")
                                .resolve())
    return blob


def architecture_of(state: dict[str, Any], class_name: str, cfg: Config, explicit: str | None = None) -> str:
    """The registered model whose weights have exactly the keys and shapes of `state` (the head aside)."""
    from patrol_deploy.models import MODELS

    names = [explicit] if explicit else MODELS.names()
    for name in names:
        blocks, _, native = MODELS.get(name)(cfg.model.model_copy(update={"name": name}), cfg.data.channels)
        if any(k.startswith("blocks.") for k in state):
            expected = {f"blocks.{b}.{k}": v.shape for b, m in blocks.items() for k, v in m.state_dict().items()}
        elif native is not None:
            expected = {k: v.shape for k, v in native.state_dict().items() if not k.startswith(_HEAD_KEYS)}
        else:
            continue
        given = {k: v.shape for k, v in state.items() if k in expected or not k.startswith(("head.", *_HEAD_KEYS))}
        if given == expected:
            return name
    tried = f"model '{explicit}'" if explicit else f"any registered architecture ({', '.join(names)})"
    raise ModelError(
        f"the {class_name} passed as model does not match {tried} for {cfg.data.channels}-channel images.",
        f"pass a model of one of the registered architectures ({', '.join(MODELS.names())}), set model.name, "
        "model.width and data.channels to match it, or register its architecture through the "
        "patrol_deploy.models entry-point group",
    )


def gate(model: str | Path | None = None, reference: str | Path | None = None,
         data: DataConfig | dict[str, Any] | str | Path | None = None, engine: str | Path | None = None,
         out: str | Path | None = None, *, data_root: str | Path | None = None, overrides: Sequence[str] = (),
         quiet: bool = False, **gate_limits: float) -> GateResult:
    """The privacy gate on its own: attack a deployed edge and compare it with the float model it replaces.

    model: the deployed edge, an ONNX file (e.g. RUN/quantize/edge.int8.onnx) or a model folder; engine: a
    TensorRT engine to attack instead (needs TensorRT and a GPU). reference: the float model folder (model.pt +
    model.json, as patrol-deploy writes them). data: a YAML config (its data, seed and attacks), a dataset
    folder, a DataConfig or dict of `data` keys, or a bundled source name; None: the data the reference was
    trained on. out: a folder for OUT/gate/gate.json and the cached measurements (a re-run with the same inputs
    attacks nothing); None writes nothing. data_root / overrides: as the CLI's --data-root / --set.
    gate_limits: `gate` keys, e.g. max_ssim_increase=0.02, max_utility_drop=0.5 (default: the config's).
    Returns a GateResult (`passed`, `reasons`, both measurements); a failed gate is a result, not an exception.
    """
    from patrol_deploy.config import GateConfig
    from patrol_deploy.pipeline.verify import gate_config, gate_edge
    from patrol_deploy.relocate import DataLocation

    if reference is None:
        raise ConfigError("gate() needs the reference: the float model folder the deployed edge replaces.",
                          "pass reference='RUN/patrol' (a folder with model.pt and model.json)")
    with quiet_mode(quiet):
        location = DataLocation(Path(data_root) if data_root is not None else None, tuple(overrides))
        cfg = gate_config(_gate_tree(data), Path(reference), location)
        limits = validated(GateConfig, {**cfg.gate.model_dump(), **gate_limits}, "gate()")
        return gate_edge(Path(reference), cfg, Path(model) if model is not None else None,
                         Path(engine) if engine is not None else None, Path(out) if out is not None else None, limits)


def _gate_tree(data: DataConfig | dict[str, Any] | str | Path | None) -> dict[str, Any] | None:
    """Config sections from the gate's `data`: a YAML file's (paths resolved against it), or a `data` section."""
    if data is None:
        return None
    if isinstance(data, str | Path) and Path(data).is_file():
        return load_config(Path(data).resolve()).model_dump(mode="json", exclude_unset=True)
    return {"data": _data_section(data)}
