"""Run a set of model-inversion attacks against one edge and score them with the same metrics.

Each attack is a function `AttackContext -> Reconstruction`, registered in
`ATTACKS`; the suite scores every reconstruction with SSIM / PSNR on
de-normalized images and names the worst case (highest mean SSIM). An attack
that fails is recorded as an error with SSIM NaN, and the worst case becomes
NaN too, so a privacy gate reading it fails closed instead of passing on the
attacks that happened to work.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from patrol_deploy.attacks.metrics import ImageScores, score_images
from patrol_deploy.attacks.registry import ATTACKS
from patrol_deploy.attacks.runner import EdgeRunner
from patrol_deploy.checkpoint import Checkpoints
from patrol_deploy.config import AttackConfig
from patrol_deploy.data.bundle import DataBundle
from patrol_deploy.errors import ConfigError, DataError, ModelError
from patrol_deploy.progress import status

QUERY_BATCH = 256
INPUT_ERRORS = (ConfigError, DataError, ModelError)  # the user must fix these: raised, never recorded


@dataclass
class Reconstruction:
    """What an attack returns: normalized reconstructions of the evaluation images, notes, a loss curve."""

    images: torch.Tensor
    notes: list[str] = field(default_factory=list)
    loss_curve: dict[str, list[float]] | None = None
    details: dict[str, Any] | None = None  # JSON-able, e.g. the black-box attackers tried and their sizes


Attack = Callable[["AttackContext"], Reconstruction]


@dataclass
class AttackContext:
    """Everything an attack may use: the edge (as a runner), the frozen cloud, data and settings.

    `images` / `labels` are the normalized evaluation images (from the test
    split); the attacker's training data is only ever `bundle.aux`.
    """

    runner: EdgeRunner
    cloud: nn.Module
    bundle: DataBundle
    images: torch.Tensor
    labels: torch.Tensor
    config: AttackConfig
    seed: int = 0
    device: str = "cpu"
    input_shape: tuple[int, int, int] | None = None  # what the edge expects; defaults to the bundle's images

    @classmethod
    def from_test_split(cls, runner: EdgeRunner, cloud: nn.Module, bundle: DataBundle, config: AttackConfig,
                        seed: int = 0, device: str = "cpu",
                        input_shape: tuple[int, int, int] | None = None) -> AttackContext:
        """A context attacking the first `config.eval_images` test images (DataError if there are fewer)."""
        n = config.eval_images
        if n > len(bundle.test):
            raise DataError(f"attacks.eval_images is {n} but the test split has only {len(bundle.test)} images.",
                            f"set attacks.eval_images <= {len(bundle.test)}, or raise data.test_fraction or use "
                            "more images")
        images, labels = bundle.test.tensors(np.arange(n))
        return cls(runner, cloud, bundle, images, labels, config, seed, device, input_shape)

    @property
    def expected_shape(self) -> tuple[int, int, int]:
        if self.input_shape is not None:
            c, h, w = self.input_shape
            return (int(c), int(h), int(w))
        return (self.bundle.channels, self.bundle.image_size, self.bundle.image_size)

    @cached_property
    def targets(self) -> torch.Tensor:
        """The uploaded features of the evaluation images, queried once: every attack inverts the same upload.

        A randomized edge (the noise and dropout defenses) draws them under `seed` without moving the global
        RNG, so no attack's result depends on which attack queried them first (or was reused from a checkpoint).
        """
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            return query_features(self.runner, self.images)

    def aux(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The attacker's auxiliary images and labels (normalized) at the configured budget `attacks.aux_images`.

        DataError when the auxiliary split is empty or smaller than the budget asks for.
        """
        have, want = len(self.bundle.aux), self.config.aux_images
        if have == 0:
            raise DataError("the auxiliary split (the attacker's data) is empty, so the black-box and query-free "
                            "attacks have nothing to train on.", "raise data.aux_fraction or use more images")
        if want is not None and want > have:
            raise DataError(f"attacks.aux_images is {want} but the auxiliary split has only {have} images.",
                            f"set attacks.aux_images <= {have} (or leave it unset for the whole split), or raise "
                            "data.aux_fraction")
        return self.bundle.aux.tensors(None if want is None else np.arange(want))

    def non_evaluation_images(self) -> torch.Tensor:
        """Every image that is not in the test split (train, validation, auxiliary, calibration), normalized.

        The larger attacker data budget: an honest-but-curious cloud can collect many images of the domain.
        """
        return torch.cat([getattr(self.bundle, k).tensors()[0] for k in ("train", "val", "aux", "calib")
                          if len(getattr(self.bundle, k))])

    def image_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized values of pixel 0 and pixel 1 per channel, shaped (1,C,1,1), to clamp images into range."""
        mean = torch.tensor(self.bundle.mean).view(1, -1, 1, 1)
        std = torch.tensor(self.bundle.std).view(1, -1, 1, 1)
        return ((0.0 - mean) / std).to(self.device), ((1.0 - mean) / std).to(self.device)


@dataclass
class AttackResult:
    """One attack's outcome: reconstructions and per-image SSIM / PSNR, or the error that stopped it (NaN scores)."""

    name: str
    reconstructions: torch.Tensor | None
    scores: ImageScores
    notes: list[str] = field(default_factory=list)
    loss_curve: dict[str, list[float]] | None = None
    details: dict[str, Any] | None = None
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AttackResult:
        """The inverse of `dataclasses.asdict` (how a finished result is checkpointed)."""
        return cls(**{**state, "scores": ImageScores(**state["scores"])})

    def as_dict(self) -> dict[str, Any]:
        """The entry of report.json's privacy.attacks for this attack."""
        out: dict[str, Any] = {**self.scores.summary(), "notes": list(self.notes), "loss_curve": self.loss_curve,
                               "seconds": round(self.seconds, 2)}
        if self.details is not None:
            out.update(self.details)
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass
class SuiteResult:
    """All attacks against one edge, and the worst case over them (highest mean SSIM; NaN if any failed)."""

    results: dict[str, AttackResult]
    originals: torch.Tensor  # the evaluation images, normalized

    @property
    def errors(self) -> dict[str, str]:
        return {n: r.error for n, r in self.results.items() if r.error is not None}

    @property
    def worst_attack(self) -> str | None:
        if self.errors:
            return next(iter(self.errors))
        if not self.results:
            return None
        return max(self.results, key=lambda n: self.results[n].scores.ssim_mean)

    @property
    def worst_ssim(self) -> float:
        worst = self.worst_attack
        return math.nan if worst is None else self.results[worst].scores.ssim_mean

    def privacy_dict(self) -> dict[str, Any]:
        """report.json's `privacy` entry: every attack's numbers, the worst SSIM and which attack reached it."""
        out: dict[str, Any] = {"attacks": {n: r.as_dict() for n, r in self.results.items()},
                               "worst_ssim": self.worst_ssim, "worst_attack": self.worst_attack}
        if self.errors:
            out["errors"] = self.errors
        return out


def query_features(runner: EdgeRunner, x: torch.Tensor, batch_size: int = QUERY_BATCH) -> torch.Tensor:
    """The runner's features for normalized images x, queried in batches (float CPU, no grad)."""
    return torch.cat([runner.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """`module` in eval mode with gradients to its parameters off (gradients flow only to the input)."""
    was_training = module.training
    flags = [(p, p.requires_grad) for p in module.parameters()]
    module.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        module.train(was_training)


def check_context(ctx: AttackContext) -> None:
    """Refuse evaluation images or auxiliary data that do not fit the edge, naming the fix."""
    want = ctx.expected_shape
    if ctx.images.dim() != 4 or len(ctx.images) == 0:
        raise DataError(f"there are no evaluation images to attack (got shape {tuple(ctx.images.shape)}).",
                        "raise attacks.eval_images or data.test_fraction")
    have = tuple(ctx.images.shape[1:])
    bundle_shape = (ctx.bundle.channels, ctx.bundle.image_size, ctx.bundle.image_size)
    for what, shape in (("evaluation images", have), ("dataset images", bundle_shape)):
        if shape[0] != want[0]:
            raise DataError(f"the {what} have {shape[0]} channel(s) but the model expects {want[0]}.",
                            f"set data.channels: {want[0]}")
        if shape[1:] != want[1:]:
            raise DataError(f"the {what} are {shape[1]}x{shape[2]} but the model expects {want[1]}x{want[2]}.",
                            f"set data.image_size: {want[1]}")


def run_attacks(names: list[str] | tuple[str, ...], ctx: AttackContext,
                checkpoints: Checkpoints | None = None) -> SuiteResult:
    """Run the named attacks against `ctx` and score each on de-normalized images.

    Bad input (unknown attack, images that do not fit, no auxiliary data) is
    raised; any other failure of an attack is recorded in its result. With
    `checkpoints`, each finished result is saved there and a re-run reuses it
    (an attack interrupted midway starts again from its beginning).
    """
    attacks = {name: ATTACKS.get(name) for name in names}  # unknown names fail before any work
    if not attacks:
        raise ConfigError("no attacks to run.", f"set attacks.names to some of: {', '.join(ATTACKS.names())}")
    check_context(ctx)
    originals = ctx.bundle.denormalize(ctx.images)
    results: dict[str, AttackResult] = {}
    for name, attack in attacks.items():
        checkpoint = checkpoints.file(f"attack-{name}") if checkpoints is not None else None
        saved = checkpoint.load() if checkpoint is not None else None
        if checkpoint is not None and saved is not None:
            status(f"attack {name}: reusing its finished result")
            with checkpoint.restoring():
                results[name] = AttackResult.from_state(saved["result"])
            continue
        status(f"attack {name} against {ctx.runner.name} edge on {len(ctx.images)} images")
        torch.manual_seed(ctx.seed)
        started = time.perf_counter()
        try:
            rec = attack(ctx)
            if rec.images.shape != ctx.images.shape:
                raise ModelError(f"attack '{name}' returned images of shape {tuple(rec.images.shape)}, "
                                 f"expected {tuple(ctx.images.shape)}.", "fix the attack plugin")
            scores = score_images(ctx.bundle.denormalize(rec.images.detach().cpu()), originals)
            results[name] = AttackResult(name, rec.images.detach().cpu(), scores, rec.notes, rec.loss_curve,
                                         rec.details, seconds=time.perf_counter() - started)
        except INPUT_ERRORS:
            raise
        except Exception as exc:  # anything else: recorded, so the gate fails closed on it
            nan = torch.full((len(ctx.images),), math.nan)
            results[name] = AttackResult(name, None, ImageScores(nan, nan), error=f"{type(exc).__name__}: {exc}",
                                         traceback=traceback.format_exc(), seconds=time.perf_counter() - started)
            status(f"attack {name} failed: {type(exc).__name__}: {exc}")
        if checkpoint is not None:
            checkpoint.save(result=asdict(results[name]))
    return SuiteResult(results, ctx.images)
