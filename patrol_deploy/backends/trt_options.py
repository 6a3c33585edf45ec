"""Engine build options and the per-version decisions derived from them (shared by build-engine and trtexec-cmd).

`plan_precision` is the one place that knows which precision each TensorRT
generation can give a model: 8.x sets FP16/INT8 builder flags and calibrates
float models implicitly; 10.x sets the flags, honours Q/DQ with the INT8 flag
and calibrates only for DLA (calibrators are deprecated); 11.x is strongly
typed, so the precision is whatever the ONNX model carries (ModelOpt AutoCast
FP16 or Q/DQ INT8) and no precision flag exists. `auto` (the default) reads the
model as trtexec users would choose: a Q/DQ model builds INT8 with FP16 for its
float layers (8.x/10.x) or strongly typed (11.x); a float model builds FP16.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patrol_deploy.backends.inputs import with_input_shapes
from patrol_deploy.backends.onnxinfo import TensorInfo
from patrol_deploy.errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "int8", "best")
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

    precision: str = "auto"
    dla_core: int | None = None
    workspace_mib: int | None = None
    batch: BatchProfile | None = None
    calib: Path | None = None  # .npz with key 'input' (N,C,H,W) float32, normalized like training
    calib_cache: Path | None = None
    timing_cache: Path | None = None
    detailed: bool = True  # ProfilingVerbosity.DETAILED: per-layer info in the inspector JSON and profiles
    skip_opset_check: bool = False
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()  # --input-shape NAME:DIMS, for dynamic axes

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
    if wanted == "auto":
        return _plan_auto(options, model_precision)
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


def _plan_auto(options: BuildOptions, model_precision: str) -> PrecisionPlan:
    """`--precision auto` on TensorRT 8.x/10.x: what the model carries, with FP16 for whatever is left in float."""
    if options.calib is not None:
        raise ConfigError("--calib asks for implicit INT8 calibration, which --precision auto never does.",
                          "pass --precision int8 (or best) with --calib, or drop --calib")
    if model_precision == "int8":
        return PrecisionPlan(True, True, False, False, "int8",
                             ("Q/DQ model: INT8 where it has Q/DQ nodes, FP16 for its float layers (trtexec "
                              "--int8 --fp16)",))
    note = "float32 model: built in FP16" if model_precision == "fp32" else "FP16 model"
    return PrecisionPlan(True, False, False, False, "fp16", (f"{note} (--precision auto)",))


def _plan_strongly_typed(options: BuildOptions, model_precision: str) -> PrecisionPlan:
    wanted = options.precision
    if options.calib is not None or options.calib_cache is not None:
        raise ConfigError("TensorRT 11 has no INT8 calibrators (--calib / --calib-cache).", QUANTIZE_FIX)
    if options.dla_core is not None and model_precision == "fp32":
        raise ConfigError("DLA runs FP16 and INT8 only, and TensorRT 11 takes the precision from the model, "
                          "which is float32.", f"{AUTOCAST_FIX}, or {QUANTIZE_FIX}")
    if wanted not in ("auto", "best", model_precision):
        if model_precision == "int8":  # a Q/DQ model is never converted again: it already is what ships
            fix = ("the Q/DQ model builds in INT8 as it is (its float layers in their own types); pass "
                   "--precision auto or int8" + (", or build from the float32 ONNX" if wanted == "fp32" else ""))
        else:
            fix = {"int8": QUANTIZE_FIX, "fp16": AUTOCAST_FIX}.get(wanted, "build from the float32 ONNX")
            fix += f", or pass --precision {model_precision} (or auto)"
        raise ConfigError(
            f"TensorRT 11 builds strongly typed networks: the precision comes from the model, which is "
            f"{model_precision}, not from --precision {wanted}.", fix)
    notes: tuple[str, ...] = ()
    if wanted == "auto" and model_precision == "fp32":
        notes = (f"TensorRT 11 is strongly typed, so this float32 model runs in FP32; for FP16, {AUTOCAST_FIX}",)
    return PrecisionPlan(False, False, False, True, model_precision, notes)


def shape_profile(inputs: Sequence[TensorInfo], batch: BatchProfile | None,
                  input_shapes: Sequence[tuple[str, tuple[int, ...]]] = ()
                  ) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shapes for each input with dynamic axes: the batch axis from `batch`, the others from
    `--input-shape` (which also fixes the batch when `batch` is not given); other dynamic axes are refused."""
    given = dict(input_shapes)
    profile = {}
    for tensor in with_input_shapes(inputs, given):
        original = next(t for t in inputs if t.name == tensor.name)
        other = [a for a in tensor.dynamic_axes if a != 0]
        if other:
            example = "x".join(str(d) if d > 0 else "N" for d in original.shape)
            raise ConfigError(f"input '{tensor.name}' has dynamic axes {other} besides the batch axis "
                              f"(shape {list(tensor.shape)}).",
                              f"pass --input-shape {tensor.name}:{example} with each N set, or export the ONNX with "
                              "fixed height, width and channels")
        fixed_batch = bool(original.shape) and 0 not in original.dynamic_axes
        if fixed_batch and batch is not None and {batch.min, batch.opt, batch.max} != {tensor.shape[0]}:
            raise ConfigError(f"input '{tensor.name}' has a fixed batch of {tensor.shape[0]}, so --batch "
                              f"{batch.min},{batch.opt},{batch.max} cannot apply.",
                              "re-export the ONNX with a dynamic batch axis, or drop --batch")
        if not original.dynamic_axes:
            continue
        if not fixed_batch and (batch is not None or 0 in tensor.dynamic_axes):
            b = batch or BatchProfile(1, 1, 1)
            rest = tensor.shape[1:]
            profile[tensor.name] = ((b.min, *rest), (b.opt, *rest), (b.max, *rest))
        else:  # every axis chosen by --input-shape
            profile[tensor.name] = (tensor.shape, tensor.shape, tensor.shape)
    return profile
