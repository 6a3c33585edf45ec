"""Engine build options and the per-version decisions derived from them (shared by build-engine and trtexec-cmd).

`plan_precision` is the one place that knows which precision each TensorRT
generation can give a model: 8.x sets FP16/INT8 builder flags and calibrates
float models implicitly; 10.x sets the flags, honours Q/DQ with the INT8 flag
and calibrates only for DLA (calibrators are deprecated); 11.x is strongly
typed, so the precision is whatever the ONNX model carries (ModelOpt AutoCast
FP16 or Q/DQ INT8) and no precision flag exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patrol_deploy.engine.onnxinfo import TensorInfo
from patrol_deploy.errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8", "best")
QUANTIZE_FIX = "quantize the ONNX to Q/DQ INT8 with `patrol-deploy quantize`"
AUTOCAST_FIX = "convert it to FP16 with ModelOpt AutoCast: `python -m modelopt.onnx.autocast --onnx_path MODEL.onnx`"


@dataclass(frozen=True)
class BatchProfile:
    """Optimization profile for a dynamic batch axis: smallest, tuned-for and largest batch."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """'1,4,8' (min,opt,max) or '4' (fixed)."""
        try:
            values = [int(v) for v in text.split(",")]
        except ValueError as exc:
            raise ConfigError(f"--batch '{text}' is not MIN,OPT,MAX.", "write e.g. --batch 1,4,8") from exc
        if len(values) == 1:
            values *= 3
        if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
            raise ConfigError(f"--batch '{text}' must be three batch sizes with 1 <= MIN <= OPT <= MAX.",
                              "write e.g. --batch 1,4,8")
        return cls(*values)


@dataclass(frozen=True)
class BuildOptions:
    """Everything `build-engine` (and the equivalent trtexec command) is asked for."""

    precision: str = "fp16"
    dla_core: int | None = None
    workspace_mib: int | None = None
    batch: BatchProfile | None = None
    calib: Path | None = None  # .npz with key 'input' (N,C,H,W) float32, normalized like training
    calib_cache: Path | None = None
    timing_cache: Path | None = None
    detailed: bool = True  # ProfilingVerbosity.DETAILED: per-layer info in the inspector JSON and profiles
    skip_opset_check: bool = False

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"unknown precision '{self.precision}'.", f"use one of: {', '.join(PRECISIONS)}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ConfigError(f"--dla-core {self.dla_core} is negative.", "DLA cores are numbered 0 and 1 on Orin")
        if self.workspace_mib is not None and self.workspace_mib < 1:
            raise ConfigError(f"--workspace {self.workspace_mib} MiB is too small.", "pass a size in MiB, e.g. 1024")

    def calib_cache_for(self, engine: Path) -> Path:
        """Where the INT8 calibration cache is read from and written to (default: beside the engine)."""
        return self.calib_cache or engine.with_name(engine.name + ".calib")

    def calibration_available(self, engine: Path) -> bool:
        return self.calib is not None or self.calib_cache_for(engine).is_file()


@dataclass(frozen=True)
class PrecisionPlan:
    """What the builder does about precision on one TensorRT generation."""

    fp16_flag: bool
    int8_flag: bool
    calibrate: bool  # implicit INT8: attach the entropy calibrator (data or cache)
    strongly_typed: bool
    effective: str  # the precision the engine runs in
    notes: tuple[str, ...] = ()


def plan_precision(generation: int, options: BuildOptions, model_precision: str,
                   calibration_available: bool) -> PrecisionPlan:
    """Decide flags, calibration and resulting precision, or refuse a combination the version cannot build."""
    wanted, dla = options.precision, options.dla_core is not None
    if generation == 11:
        return _plan_strongly_typed(options, model_precision)
    if dla and wanted == "fp32":
        raise ConfigError("DLA runs FP16 and INT8 only; --precision fp32 cannot target a DLA core.",
                          "pass --precision fp16 (or int8 with calibration data), or drop --dla-core")
    if model_precision == "int8":
        if wanted not in ("int8", "best"):
            raise ConfigError(f"the ONNX model carries Q/DQ (INT8) nodes but --precision is {wanted}.",
                              "pass --precision int8 (or best), or build from the float ONNX")
        notes = ("--calib ignored: the Q/DQ model carries its own scales",) if options.calib else ()
        return PrecisionPlan(wanted == "best", True, False, False, wanted, notes)
    can_calibrate = calibration_available and (generation == 8 or dla)
    if wanted == "int8" and not can_calibrate:
        if generation == 10 and not dla:
            raise ConfigError(
                "TensorRT 10 deprecates implicit INT8 calibration; on the GPU it builds INT8 from Q/DQ models only.",
                f"{QUANTIZE_FIX}, or target DLA (--dla-core N with --calib), or use --precision fp16")
        raise ConfigError("INT8 from a float model needs calibration data (implicit quantization).",
                          "pass --calib CALIB.npz (written by the calibration recipe) or an existing --calib-cache, "
                          f"or {QUANTIZE_FIX}")
    if wanted == "int8":
        return PrecisionPlan(False, True, True, False, "int8")
    if wanted == "best":
        if can_calibrate:
            return PrecisionPlan(True, True, True, False, "best")
        return PrecisionPlan(True, False, False, False, "fp16",
                             ("INT8 not enabled: no Q/DQ nodes and no usable calibration for this version/device",))
    return PrecisionPlan(wanted == "fp16", False, False, False, wanted)


def _plan_strongly_typed(options: BuildOptions, model_precision: str) -> PrecisionPlan:
    wanted = options.precision
    if options.calib is not None or options.calib_cache is not None:
        raise ConfigError("TensorRT 11 has no INT8 calibrators (--calib / --calib-cache).", QUANTIZE_FIX)
    if options.dla_core is not None and model_precision == "fp32":
        raise ConfigError("DLA runs FP16 and INT8 only, and TensorRT 11 takes the precision from the model, "
                          "which is float32.", f"{AUTOCAST_FIX}, or {QUANTIZE_FIX}")
    if wanted not in ("best", model_precision):
        fix = {"int8": QUANTIZE_FIX, "fp16": AUTOCAST_FIX}.get(wanted, "build from the float32 ONNX")
        raise ConfigError(
            f"TensorRT 11 builds strongly typed networks: the precision comes from the model, which is "
            f"{model_precision}, not from --precision {wanted}.", f"{fix}, or pass --precision {model_precision}")
    return PrecisionPlan(False, False, False, True, model_precision)


def shape_profile(inputs: Sequence[TensorInfo], batch: BatchProfile | None
                  ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes for each input with a dynamic batch axis; refuses other dynamic axes."""
    profile = {}
    for tensor in inputs:
        other = [a for a in tensor.dynamic_axes if a != 0]
        if other:
            raise ConfigError(f"input '{tensor.name}' has dynamic axes {other} besides the batch axis "
                              f"(shape {list(tensor.shape)}).", "export the ONNX with fixed height, width and channels")
        if 0 in tensor.dynamic_axes:
            b = batch or BatchProfile(1, 1, 1)
            rest = tensor.shape[1:]
            profile[tensor.name] = ((b.min, *rest), (b.opt, *rest), (b.max, *rest))
        elif batch is not None and tensor.shape and {batch.min, batch.opt, batch.max} != {tensor.shape[0]}:
            raise ConfigError(f"input '{tensor.name}' has a fixed batch of {tensor.shape[0]}, so --batch "
                              f"{batch.min},{batch.opt},{batch.max} cannot apply.",
                              "re-export the ONNX with a dynamic batch axis, or drop --batch")
    return profile
