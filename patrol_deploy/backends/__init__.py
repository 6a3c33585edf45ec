"""Torch-free runtimes, in Polygraphy's shape: a loader and a runner per backend.

- `onnxrt`: ONNX Runtime on the CPU (`cpu_session` loads, `run` runs named feeds).
- `trt`: TensorRT versions, the JetPack support table and the logger (`load_tensorrt`); `trt_runner`: an engine
  with its CUDA buffers (`EngineRunner`), on `cuda` (cuda-python); `calibrator`: the INT8 entropy calibrator.

Nothing here imports torch, torch-pruning or ModelOpt (the on-device import contract in setup.cfg), so the
on-device commands (engine/) run on a Jetson that has only JetPack's TensorRT, numpy and cuda-python. The torch
adapters that let the attacks query these runtimes live in deployment/onnx_runner.py.
"""
