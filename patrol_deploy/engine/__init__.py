"""The on-device commands for Jetson: build TensorRT engines (TRT 8.x / 10.x / 11.x, DLA), compare them with ONNX,
profile latency, read tegrastats. The runtimes they drive (ONNX Runtime, TensorRT, CUDA) are in backends/.

Every module here imports numpy at most at import time; TensorRT, CUDA
bindings, ONNX and ONNX Runtime are imported when a function needs them, so
the on-device commands run on a Jetson without torch or ModelOpt.
"""
