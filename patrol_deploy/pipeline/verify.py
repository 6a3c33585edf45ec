"""The privacy gate: attack a deployed edge and compare it with the float model it replaces.

`verify_run` gates a run folder's quantized edge (RUN/quantize) against its float PATROL model (RUN/patrol);
`gate_edge` gates any deployed edge (an ONNX file, a TensorRT engine or a model folder) against any float model
folder, on given data, without the comparison of variants. Both measure the same way: the utility of the full
model with the deployed edge in place, and every configured attack against the deployed edge (ONNX Runtime on
the CPU, or TensorRT where an engine is given; gradient-based attacks use the float torch edge for gradients and
the deployed edge only for the target features). The gate fails closed: an attack that errors, a NaN metric or a
utility that cannot be measured is a failure with its reason.

Measurements are cached in the run folder's manifest like every other stage: the reference's (stage
`<stage>/reference`, file `<stage>/reference.json`; `verify` reuses the comparison's PATROL entry instead when
`run` wrote one with the same attack settings) and the deployed edge's (stage `<stage>`, file
`<stage>/gate.json`, which also holds the verdict). A re-run with unchanged inputs attacks nothing; changed
gate limits only re-apply the verdict.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import Config, GateConfig, validated
from patrol_deploy.deployment.export import read_sidecar, sidecar_path
from patrol_deploy.deployment.onnx_runner import EngineEdgeRunner, OnnxEdgeRunner, with_edge_runner
from patrol_deploy.errors import DataError, GateFailed, ModelError, PatrolError
from patrol_deploy.modelio import META_FILE, MODEL_FILE, ModelMeta, Subject, load_model_dir
from patrol_deploy.models import BlockNet
from patrol_deploy.pipeline.compare import attack_edge
from patrol_deploy.pipeline.render import (
    GATE_FILE,
    VERIFY_STAGE,
    comparison_of,
    gate_stage,
    judged_stage,
    record_attempts,
    recorded_attempts,
)
from patrol_deploy.progress import status
from patrol_deploy.relocate import DataLocation
from patrol_deploy.results import GateDocument, typed
from patrol_deploy.runfolder import RunFolder, config_hash, read_json, sha256, write_json
from patrol_deploy.split import cut
from patrol_deploy.stages import run_stage
from patrol_deploy.training import evaluate, utility_metric

STAGE = VERIFY_STAGE  # `verify RUN`: RUN/verify/gate.json
GATE_STAGE = "gate"  # `gate --out DIR`: DIR/gate/gate.json
REFERENCE_FILE = "reference.json"
GATE_FORMAT = "patrol-deploy-gate"


@dataclass(frozen=True)
class GateResult:
    """The gate's verdict, the two measurements behind it and the files it wrote."""

    passed: bool
    reasons: list[str]
    deployed: dict[str, Any]  # utility, utility_detail, privacy, runtime, edge
    reference: dict[str, Any]  # utility, privacy (the float model)
    limits: dict[str, Any]
    files: list[Path] = field(default_factory=list)
    reused: bool = False  # the deployed edge's measurement came from the run folder (nothing was attacked)

    def as_dict(self) -> dict[str, Any]:
        return {"format": GATE_FORMAT, "passed": self.passed, "reasons": list(self.reasons), "limits": self.limits,
                "deployed": self.deployed, "reference": self.reference, "files": [str(f) for f in self.files],
                "reused": self.reused}


def gate_reasons(float_entry: dict[str, Any], quantized: dict[str, Any], gate: GateConfig,
                 change: str = "after quantization") -> list[str]:
    """Why the gate fails (empty when it passes); any missing or NaN number is a failure. `change` names what
    turned the float model into the deployed one, for the messages."""
    reasons = [f"attack '{n}' failed: {e}" for n, e in quantized["privacy"].get("errors", {}).items()]
    q_ssim, f_ssim = quantized["privacy"].get("worst_ssim"), float_entry["privacy"].get("worst_ssim")
    q_util, f_util = quantized.get("utility"), float_entry.get("utility")
    if not isinstance(q_ssim, float | int) or not isinstance(f_ssim, float | int) or not _finite(q_ssim) \
            or not _finite(f_ssim):
        reasons.append(f"worst-case SSIM could not be measured (float {f_ssim}, quantized {q_ssim})")
    elif q_ssim - f_ssim > gate.max_ssim_increase:
        reasons.append(f"worst-case SSIM rose by {q_ssim - f_ssim:.3f} {change} ({f_ssim:.3f} -> "
                       f"{q_ssim:.3f}, attack {quantized['privacy'].get('worst_attack')}), more than "
                       f"--max-ssim-increase {gate.max_ssim_increase}")
    if not isinstance(q_util, float | int) or not isinstance(f_util, float | int) or not _finite(q_util) \
            or not _finite(f_util):
        reasons.append(f"utility could not be measured (float {f_util}, quantized {q_util})")
    elif f_util - q_util > gate.max_utility_drop:
        reasons.append(f"utility dropped by {f_util - q_util:.2f} points {change} ({f_util:.2f} -> "
                       f"{q_util:.2f}), more than --max-utility-drop {gate.max_utility_drop}")
    return reasons


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def measure(subject: Subject, runner: Any = None, model: BlockNet | None = None,
            meta: ModelMeta | None = None) -> dict[str, Any]:
    """Utility and every attack against an edge: `runner` (a deployed edge standing in for the subject's), or the
    torch edge of `model` (default: the subject's float model). An unmeasurable utility is recorded, not raised."""
    model, meta = model or subject.model, meta or subject.meta
    bundle, cfg = subject.bundle(), subject.cfg
    edge, cloud = cut(model, meta.split)
    entry: dict[str, Any] = {"runtime": runner.name if runner is not None else "torch"}
    full = with_edge_runner(model, meta.split, runner) if runner is not None else model
    try:
        utility = evaluate(full, bundle, meta.task, cfg.train.device)
        entry.update(utility=utility[utility_metric(meta.task)], utility_detail=utility)
    except PatrolError:
        raise
    except Exception as exc:  # fail closed: an unmeasurable utility is a failed gate, with the reason
        entry.update(utility=None, utility_detail={"error": f"{type(exc).__name__}: {exc}"})
    privacy, _ = attack_edge(edge, cloud, bundle, cfg, runner=runner)
    if runner is not None and not runner.differentiable:
        privacy.setdefault("notes", []).append(
            "gradient-based attacks used the float torch edge for gradients and the deployed edge for targets")
    entry["privacy"] = privacy
    return entry


def reference_entry(run: RunFolder | None, stage: str, subject: Subject) -> dict[str, Any]:
    """The float model's measurement, from `<stage>/reference.json` when its inputs are unchanged, else attacked
    now (and recorded there when there is a run folder)."""
    def measured() -> dict[str, Any]:
        status(f"{stage}: utility and attacks against the reference, the float edge of {subject.model_dir}")
        return {"model_dir": str(subject.model_dir), **measure(subject)}

    if run is None:
        return measured()
    path = run.path(stage, REFERENCE_FILE)

    def build(_: Checkpoints) -> tuple[dict[str, Any], list[Path]]:
        entry = measured()
        return entry, [write_json(path, entry)]

    return run_stage(run, f"{stage}/reference", subject.identity(), label=f"{stage} reference",
                     seed=subject.cfg.seed, reuse=lambda: dict(read_json(path)), build=build, shown=path)


def describe_deployed(model: Path | None, engine: Path | None) -> dict[str, Any]:
    """What identifies the deployed edge: its files' names and SHA-256 (paths aside, so a moved folder matches)."""
    if model is None and engine is None:
        raise ModelError("no deployed edge to gate.", "pass --model (an ONNX file or a model folder) or --engine")
    described: dict[str, Any] = {}
    if model is not None and model.is_dir():
        described["model_dir"] = {"name": model.name, "sha256": sha256(model / MODEL_FILE),
                                  "meta_sha256": sha256(model / META_FILE)}
    elif model is not None:
        described["onnx"] = {"name": model.name, "sha256": sha256(model)}
    if engine is not None:
        described["engine"] = {"name": engine.name, "sha256": sha256(engine)}
    return described


def deployed_measurement(subject: Subject, model: Path | None, engine: Path | None,
                         stage: str = GATE_STAGE) -> dict[str, Any]:
    """Attack the deployed edge: a TensorRT engine, an ONNX file (both finished by the reference's cloud), or a
    model folder's own torch edge and cloud."""
    edge, _ = cut(subject.model, subject.meta.split)
    if engine is not None:
        runner: Any = EngineEdgeRunner(engine, edge)
    elif model is not None and not model.is_dir():
        _check_source(model, subject)
        runner = OnnxEdgeRunner(model, edge, name=model.name)
    else:
        assert model is not None  # describe_deployed refused neither
        deployed, meta = load_model_dir(model)
        if list(meta.input_shape) != list(subject.meta.input_shape) or meta.task != subject.meta.task:
            raise ModelError(f"the model folder {model} ({meta.task}, input {meta.input_shape}) is not comparable "
                             f"with the reference {subject.model_dir} ({subject.meta.task}, input "
                             f"{subject.meta.input_shape}).", "gate a model against the model it replaces")
        status(f"{stage}: utility and attacks against the deployed edge (torch, {model} at split {meta.split})")
        return {"edge": str(model), **measure(subject, None, deployed, meta)}
    status(f"{stage}: utility and attacks against the deployed edge ({runner.name})")
    return {"edge": str(engine or model), **measure(subject, runner)}


def _check_source(onnx_path: Path, subject: Subject) -> None:
    """An ONNX edge with a sidecar must come from the reference model at the same split (its cloud finishes it)."""
    if not sidecar_path(onnx_path).is_file():
        status(f"note: {onnx_path} has no sidecar JSON; assuming it is the edge of {subject.model_dir} at split "
               f"{subject.meta.split}")
        return
    info = read_sidecar(onnx_path)
    source = info["source"] if isinstance(info.get("source"), dict) else {}
    if info.get("partition", "edge") != "edge" or info.get("split", subject.meta.split) != subject.meta.split:
        raise ModelError(f"'{onnx_path}' is the {info.get('partition')} partition at split {info.get('split')}, not "
                         f"the edge at the reference's split {subject.meta.split}.",
                         "pass the edge ONNX exported (or quantized) from the reference model folder")
    if source.get("model_sha256") not in (None, sha256(subject.model_dir / MODEL_FILE)):
        raise ModelError(f"'{onnx_path}' was exported from another model than the reference {subject.model_dir} "
                         "(its sidecar records another model.pt), so the reference's cloud cannot finish it.",
                         "pass the model folder the ONNX edge was exported from as the reference")


def decide(run: RunFolder | None, stage: str, conf: dict[str, Any], subject: Subject, measure_deployed: Any,
           reference_for: Any, gate: GateConfig, change: str = "after quantization") -> GateResult:
    """Measure the deployed edge with `measure_deployed()` unless `<stage>/gate.json` holds its measurement for
    `conf`, take the reference from `reference_for()` (which attacks only when its own cache is stale), apply the
    gate's limits, and write the verdict into `<stage>/gate.json` when it changed."""
    path = run.path(stage, GATE_FILE) if run is not None else None
    current = run is not None and path is not None and run.is_current(stage, conf)
    previous = typed(GateDocument, read_json(path)) if current and path is not None else None
    started = time.time()
    if previous is not None:
        status(f"{stage}: reusing the measurement in {path} (nothing it depends on changed)")
        deployed = previous.deployed.model_dump()
    else:
        deployed = measure_deployed()
    reference = reference_for()
    reasons = gate_reasons(reference, deployed, gate, change)
    result = GateResult(not reasons, reasons, deployed, reference, gate.model_dump(mode="json"),
                        [path] if path is not None else [], previous is not None)
    if run is not None and path is not None:
        document = {k: v for k, v in result.as_dict().items() if k not in ("files", "reused")}
        checked = typed(GateDocument, document)  # what gate.json holds is what the report stage reads back
        changed = previous is None or config_hash(previous.model_dump()) != config_hash(checked.model_dump())
        if changed:
            run.record(stage, [write_json(path, document)], conf, seed=subject.cfg.seed, started=started)
    return result


def quantized_onnx(run: RunFolder, stage: str = "quantize") -> tuple[Path, dict[str, Any]]:
    entry = run.stage(stage)
    if entry is None:
        raise PatrolError(f"'{run.root}' has no quantized edge.",
                          f"run `patrol-deploy quantize {run.path('export', 'edge.onnx')} --out {run.root}` first")
    onnx = [f for f in entry["files"] if f.endswith(".onnx")]
    if not onnx or not run.path(onnx[0]).is_file():
        raise PatrolError(f"the quantized edge recorded in {run.manifest_path} is missing.",
                          "re-run `patrol-deploy quantize`")
    return run.path(onnx[0]), entry.get("config", {})


def quantized_coverage(onnx_path: Path) -> dict[str, Any]:
    """From the quantized edge's sidecar: how many compute ops (convolutions, GEMMs) INT8 covers, which stay float
    and why, the weight scales and the calibration method ({} for FP16 or a sidecar without them)."""
    q = read_sidecar(onnx_path).get("quantization", {})
    graph = q.get("graph", {})
    if "ops_total" not in graph:
        return {}
    return {"ops_quantized": graph["ops_quantized"], "ops_total": graph["ops_total"], "float_ops": graph["float_ops"],
            "weight_scales": graph.get("weight_scales", []), "calibration_method": q.get("calibration_method"),
            "method": q.get("method", "ptq")}


def verify_run(run_dir: str | Path, gate: GateConfig | None = None, engine: Path | None = None, *,
               location: DataLocation = DataLocation(), limits: dict[str, Any] | None = None,
               config: Path | None = None, attempts: list[dict[str, Any]] | None = None,
               quantized: str | None = None) -> GateResult:
    """Gate RUN's quantized edge (or `engine`, built from it) against RUN's float PATROL model.

    Works after `run` (the reference is the comparison's PATROL entry, RUN/comparison.json) and after the
    separate steps train / patrol / export / quantize (the reference is the float PATROL edge, attacked here
    once and cached). The config is the comparison's, else the one the PATROL stage recorded; `config` (a YAML
    file) replaces its sections other than seed, data and model (attacks, gate, train.device). Limits: `gate`
    (default: the config's `gate`), updated by `limits`. `location` points the recorded config at this machine's
    data. `attempts`: earlier quantization attempts of this run (RUN/verify/attempts.json gets them plus this
    one; None: the recorded ones, this method's replaced). `quantized`: the stage whose edge is gated,
    `quantize` (PTQ) or `quantize/qat`; None: the last recorded attempt's, else PTQ's. Writes only under
    RUN/verify/ (the verdict in `verify/gate.json` or `verify/qat/gate.json`); the report stage
    (pipeline/render.py) shows it in report.json. Raises GateFailed (exit 1) with the
    reasons when the gate does not pass.
    """
    run = RunFolder(run_dir)
    report = comparison_of(run)
    if quantized is None:
        quantized = judged_stage(run)
    onnx_path, qconf = quantized_onnx(run, quantized)
    stage = gate_stage(quantized)
    cfg = _run_config(run, report, location, config)
    gate = validated(GateConfig, {**(gate or cfg.gate).model_dump(), **(limits or {})}, "gate limits")
    subject = Subject.load(run.path("patrol"), cfg)
    conf = {"deployed": describe_deployed(onnx_path, engine), **subject.identity()}
    float_entry = None
    if report is not None and _same_settings(report["config"], cfg):
        float_entry = report["variants"]["patrol"]

    def measure_deployed() -> dict[str, Any]:
        measured = deployed_measurement(subject, onnx_path, engine, STAGE)
        attacked = Path(engine or onnx_path).resolve()  # shown relative to the run folder, which may move
        shown = attacked.relative_to(run.root.resolve()) if attacked.is_relative_to(run.root.resolve()) else attacked
        return {"mode": qconf.get("mode", "int8"), "route": qconf.get("route"), **measured, "edge": str(shown)}

    def reference_for() -> dict[str, Any]:
        return float_entry if float_entry is not None else reference_entry(run, STAGE, subject)

    result = decide(run, stage, conf, subject, measure_deployed, reference_for, gate)
    result.deployed.update(quantized_coverage(onnx_path))  # from the sidecar, also for a reused measurement
    if report is not None:  # after `run`: the attempts of its deployment, for the report (pipeline/render.py)
        this = attempt_of(result)
        if attempts is None:  # a later `verify`: this method's recorded attempt is measured again here
            recorded = recorded_attempts(run)
            same = [a.get("method") == this["method"] for a in recorded]
            attempts = [a for a, s in zip(recorded, same, strict=True) if not s] if any(same) else recorded
        record_attempts(run, [*attempts, this], subject.cfg.seed)
    if not result.passed:
        raise GateFailed("privacy gate FAILED: " + "; ".join(result.reasons) + ".",
                         "keep the float edge, calibrate with more images, or quantize fewer layers")
    return result


def gate_edge(reference: Path, cfg: Config, model: Path | None = None, engine: Path | None = None,
              out: Path | None = None, gate: GateConfig | None = None) -> GateResult:
    """Gate a deployed edge (`model`: an ONNX file or a model folder; or `engine`) against the float model folder
    `reference`, measured with `cfg` (its data, seed and attacks; see `gate_config`). With `out`, both
    measurements are cached in OUT/gate/ and the verdict written to OUT/gate/gate.json. Returns the result; a
    failed gate is a result, not an exception."""
    subject = Subject.load(Path(reference), cfg)
    run = RunFolder(out) if out is not None else None
    conf = {"deployed": describe_deployed(model, engine), **subject.identity()}
    return decide(run, GATE_STAGE, conf, subject, lambda: deployed_measurement(subject, model, engine),
                  lambda: reference_entry(run, GATE_STAGE, subject), gate or cfg.gate,
                  "in the deployed edge")


def gate_config(tree: dict[str, Any] | None, reference: Path, location: DataLocation = DataLocation()) -> Config:
    """The config a gate measures with: `tree` (config sections, e.g. from a YAML file or a dataset folder; None:
    the data and seed the reference model was trained on), with the image size and channels of the reference
    model where `tree` does not set them, the reference's model section, then `location`'s overrides."""
    from patrol_deploy.modelio import read_meta

    meta = read_meta(reference)
    if tree is None:
        data, seed = meta.extra.get("data"), meta.extra.get("seed", 0)
        if not isinstance(data, dict):
            raise DataError(f"{Path(reference) / META_FILE} does not record the data the model was trained on.",
                            "pass the data with --data CONFIG_OR_FOLDER")
        tree = {"seed": seed, "data": data}
    tree = {**tree, "data": dict(tree.get("data") or {})}
    tree["data"].setdefault("image_size", meta.input_shape[1])
    tree["data"].setdefault("channels", meta.input_shape[0])
    tree["model"] = {**meta.model, "checkpoint": None}
    return validated(Config, location.apply(tree), "gate config")


def _run_config(run: RunFolder, report: dict[str, Any] | None, location: DataLocation,
                config: Path | None = None) -> Config:
    """The config the run was made with: the comparison's, else the PATROL stage's (seed, data, model, train) from the
    manifest, else RUN/patrol/model.json's data and seed; then `config`'s other sections (attacks, gate, ...),
    then `location`. Attacks and gate are at their defaults when neither the comparison nor `config` sets them."""
    if report is not None:
        tree: dict[str, Any] = report["config"]
    else:
        entry = run.stage("patrol") or {}
        recorded: dict[str, Any] = entry["config"] if isinstance(entry.get("config"), dict) else {}
        tree = {k: recorded[k] for k in ("seed", "data", "model", "train") if k in recorded}
        if "data" not in tree:
            tree = gate_config(None, run.path("patrol")).model_dump(mode="json", include={"seed", "data", "model"})
    if config is not None:
        from patrol_deploy.config import load_config

        given = load_config(Path(config).resolve()).dump()
        tree = {**given, **{k: v for k, v in tree.items() if k in ("seed", "data", "model")}}
    return validated(Config, location.apply(tree), f"the config recorded in {run.root}")


def _same_settings(recorded: dict[str, Any], cfg: Config) -> bool:
    """Whether the comparison's numbers were measured like `cfg` measures (seed, data apart from its location,
    attacks), so its PATROL entry can be the reference."""
    def key(tree: dict[str, Any]) -> Any:
        data = {k: v for k, v in (tree.get("data") or {}).items() if k != "root"}
        return [tree.get("seed"), data, tree.get("attacks")]

    try:
        old = Config.model_validate(recorded).model_dump(mode="json")
    except ValueError:  # pydantic's ValidationError: a report of another version
        return False
    return config_hash(key(old)) == config_hash(key(cfg.model_dump(mode="json")))


def attempt_of(result: GateResult) -> dict[str, Any]:
    """One quantization attempt's line in RUN/verify/attempts.json (report.json's `quantized.attempts`)."""
    d = result.deployed
    return {"method": d.get("method", "ptq"), "calibration_method": d.get("calibration_method"),
            "utility": d.get("utility"), "worst_ssim": d["privacy"].get("worst_ssim"),
            "ops_quantized": d.get("ops_quantized"), "ops_total": d.get("ops_total"), "passed": result.passed,
            "reasons": list(result.reasons)}
