"""patrol-deploy: privacy-oriented pruning for split inference, deployed to Jetson.

Importing the package is cheap: heavy dependencies (torch, torch-pruning,
ModelOpt, TensorRT) are imported by the modules that need them, when needed.
`patrol_deploy.optimize` (the one-call Python API) and `patrol_deploy.gate` (the privacy gate on its own) are
imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["GateResult", "PipelineResult", "__version__", "gate", "optimize"]

if TYPE_CHECKING:
    from patrol_deploy.api import PipelineResult, gate, optimize
    from patrol_deploy.pipeline.verify import GateResult

_LAZY = {"optimize": "patrol_deploy.api", "PipelineResult": "patrol_deploy.api", "gate": "patrol_deploy.api",
         "GateResult": "patrol_deploy.pipeline.verify"}


def __getattr__(name: str) -> Any:
    """Import the Python API on first access, so `import patrol_deploy` stays torch-free."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'patrol_deploy' has no attribute '{name}'")
