"""Lazy imports of optional heavy packages with an actionable error when absent."""

from __future__ import annotations

import importlib
from types import ModuleType

from patrol_deploy.errors import MissingDependency

# Which extra of patrol-deploy brings each optional top-level package.
EXTRA_FOR = {
    "torch": "torch",
    "torchvision": "torch",
    "torch_pruning": "torch",
    "torchmetrics": "torch",
    "sklearn": "torch",
    "skimage": "torch",
    "mlxtend": "torch",
    "PIL": "torch",
    "matplotlib": "torch",
    "onnx": "onnx",
    "onnxsim": "onnx",
    "onnxruntime": "onnx",
    "modelopt": "onnx",
    "cuda": "device",
}


def require(module: str, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependency naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        if top == "tensorrt":
            fix = "use JetPack's TensorRT on a Jetson, or `pip install tensorrt` on an x86 machine with a GPU"
        else:
            extra = EXTRA_FOR.get(top, "all")
            fix = f"pip install 'patrol-deploy[{extra}]'"
        why = f" (needed for {purpose})" if purpose else ""
        raise MissingDependency(f"Python package '{module}' is not available{why}: {exc}.", fix) from exc
