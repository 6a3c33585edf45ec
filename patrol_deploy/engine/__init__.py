"""TensorRT engines for Jetson: build (TRT 8.x / 10.x / 11.x, DLA), run, compare with ONNX, profile latency.

Every module here imports numpy at most at import time; TensorRT, CUDA
bindings, ONNX and ONNX Runtime are imported when a function needs them, so
the on-device commands run on a Jetson without torch or ModelOpt.
"""
