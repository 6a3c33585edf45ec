"""The trtexec command equivalent to `build-engine`, for a given TensorRT version (its flags differ by version).

8.5/8.6 and 10.x take --fp16 / --int8 / --calib=CACHE (trtexec calibrates
only from a cache, not from images); 11.x removed every precision flag and
--calib because networks are strongly typed. Workspace uses --memPoolSize
(MiB) everywhere (--workspace is gone since 10.0). The command also exports
the per-layer information and a separate per-layer profiling run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patrol_deploy.backends.onnxinfo import OnnxInfo
from patrol_deploy.backends.trt import TrtVersion, check_opset
from patrol_deploy.backends.trt_options import BuildOptions, plan_precision, shape_profile

TRTEXEC = "/usr/src/tensorrt/bin/trtexec"  # where JetPack installs it


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def trtexec_command(info: OnnxInfo, engine: Path, options: BuildOptions, version: TrtVersion,
                    trtexec: str = TRTEXEC) -> dict[str, Any]:
    """argv (and notes) of the trtexec build+profile run matching `options` on TensorRT `version`."""
    generation = version.generation
    if not options.skip_opset_check:
        check_opset(version, info.opset, str(info.path))
    plan = plan_precision(generation, options, info.precision, options.calibration_available(engine))
    argv = [trtexec, f"--onnx={info.path}", f"--saveEngine={engine}"]
    notes = list(plan.notes)
    shapes = shape_profile(info.inputs, options.batch, options.input_shapes)
    if shapes:
        for flag, index in (("--minShapes", 0), ("--optShapes", 1), ("--maxShapes", 2)):
            argv.append(f"{flag}=" + ",".join(f"{name}:{_dims(s[index])}" for name, s in shapes.items()))
    if options.workspace_mib is not None:
        argv.append(f"--memPoolSize=workspace:{options.workspace_mib}")
    if plan.fp16_flag:
        argv.append("--fp16")
    if plan.int8_flag:
        argv.append("--int8")
    if plan.calibrate:
        cache = options.calib_cache_for(engine)
        argv.append(f"--calib={cache}")
        if not cache.is_file():
            notes.append(f"trtexec calibrates only from a cache: create {cache} once with "
                         f"`patrol-deploy build-engine {info.path} --out {engine} --calib CALIB.npz`")
    if options.dla_core is not None:
        argv += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    if options.timing_cache is not None:
        argv.append(f"--timingCacheFile={options.timing_cache}")
    argv += [f"--profilingVerbosity={'detailed' if options.detailed else 'layer_names_only'}",
             f"--exportLayerInfo={engine}.layers.json", "--separateProfileRun", "--dumpProfile",
             f"--exportProfile={engine}.profile.json"]
    if generation == 11:
        notes.append(f"TensorRT 11 is strongly typed: the engine runs in the model's own precision ({plan.effective})")
    return {"trt_version": str(version), "api_generation": generation, "precision": plan.effective,
            "argv": argv, "notes": notes}
