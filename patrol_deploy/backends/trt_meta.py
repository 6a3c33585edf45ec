"""The JSON written beside every engine, and the check that an engine fits the TensorRT and GPU at hand.

A serialized TensorRT engine runs only on the TensorRT version and GPU model
(compute capability) that built it. `ENGINE.json` records both, with the
precision, DLA core, batch profile and the engine inspector's per-layer
information, so a mismatch is reported plainly instead of as a failed
deserialization.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from patrol_deploy.backends.cuda import DeviceInfo
from patrol_deploy.backends.trt import TrtVersion
from patrol_deploy.errors import DataError, HardwareError
from patrol_deploy.runfolder import read_marked_json

META_FORMAT = "patrol-deploy-engine/1"


def engine_meta_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def read_engine_meta(engine: str | Path) -> dict[str, Any] | None:
    """The metadata written by build-engine, or None for an engine built elsewhere (e.g. by trtexec)."""
    path = engine_meta_path(engine)
    if not path.is_file():
        return None
    return read_marked_json(path, META_FORMAT, DataError, "engine metadata written by patrol-deploy",
                            "delete it or rebuild the engine")


def _rebuild_fix(meta: dict[str, Any] | None) -> str:
    onnx = (meta or {}).get("onnx", {}).get("path", "EDGE.onnx")
    return f"rebuild the engine on this device: `patrol-deploy build-engine {onnx} --out ENGINE`"


def check_compatible(engine: Path, meta: dict[str, Any], version: TrtVersion, device: DeviceInfo) -> None:
    """Refuse an engine whose recorded TensorRT version or compute capability differs from this machine's."""
    built_trt = meta["tensorrt"]["version"]
    built_dev = meta["device"]
    problems = []
    if built_trt.strip() != str(version):  # plans are tied to the exact TensorRT release
        problems.append(f"TensorRT {built_trt} built it, this is TensorRT {version}")
    if built_dev["compute_capability"] != device.compute_capability:
        problems.append(f"it was built for {built_dev['name']} (compute {built_dev['compute_capability']}), "
                        f"this is {device.name} (compute {device.compute_capability})")
    if problems:
        raise HardwareError(f"engine {engine} cannot run here: {'; '.join(problems)}.", _rebuild_fix(meta))


def deserialize_failure(engine: Path, errors: list[str], meta: dict[str, Any] | None, version: TrtVersion,
                        device: DeviceInfo) -> HardwareError:
    """Explain why TensorRT refused to deserialize `engine`, from its own log messages."""
    text = " ".join(errors) or "TensorRT returned no engine and logged no error"
    if re.search(r"incompatible device|expecting compute|platform", text, re.IGNORECASE):
        why = f"it was built for another GPU (this is {device.name}, compute {device.compute_capability})"
    elif re.search(r"version|magic ?tag", text, re.IGNORECASE):
        why = f"it was built by another TensorRT version (this is TensorRT {version})"
    else:
        why = "it is corrupt or not a TensorRT engine"
    return HardwareError(f"TensorRT cannot load engine {engine}: {why}. TensorRT said: {text}", _rebuild_fix(meta))
