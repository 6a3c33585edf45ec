"""patrol-deploy: privacy-oriented pruning for split inference, deployed to Jetson.

Importing the package is cheap: heavy dependencies (torch, torch-pruning,
ModelOpt, TensorRT) are imported by the modules that need them, when needed.
"""

__version__ = "0.1.0"
