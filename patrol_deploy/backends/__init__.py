"""Torch-free runtimes, in Polygraphy's shape: a loader and a runner per backend.

- `onnxrt`: ONNX Runtime on the CPU (`cpu_session` loads, `run` runs named feeds).
- TensorRT: `trt_builder` (the loader: ONNX -> engine, options in `trt_options`, engine sidecar in `trt_meta`),
  `trt_runner` (an engine with its CUDA buffers, `EngineRunner`, on `cuda`: cuda-python), `trt` (versions, the
  JetPack support table, `load_tensorrt`), `calibrator` (the INT8 entropy calibrator); `inputs` makes feeds.

Nothing here imports torch, torch-pruning or ModelOpt (the on-device import contract in setup.cfg), so the
on-device commands (engine/) run on a Jetson that has only JetPack's TensorRT, numpy and cuda-python. The torch
adapters that let the attacks query these runtimes live in deployment/onnx_runner.py.
"""
